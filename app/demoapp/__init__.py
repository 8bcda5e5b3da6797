"""demoapp: the social-graph demo web app that archop deploys behind its CDN sidecar and Ingress."""

__version__ = "0.1.0"
