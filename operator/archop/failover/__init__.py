"""Failover: decide.py (pure decisions), act.py (effects), report.py (status rendering, pure)."""
