"""kopf handler bodies; archop/main.py registers them."""
