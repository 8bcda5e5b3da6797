"""archop: a kopf operator that turns one Architecture into a self-healing web stack."""

__version__ = "0.1.0"
