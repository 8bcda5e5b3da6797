"""App throughput benchmark through the Ingress: CDN + cache on vs both off (python -m bench.app)."""
