"""Observing the database tier: SQL probes of every instance, pod and node state (no decisions here)."""
