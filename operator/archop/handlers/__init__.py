"""What kopf's decorators in main.py delegate to: reconcile.py (create/update/resume/delete) and
monitor.py (the per-Architecture health daemon and failover loop)."""
