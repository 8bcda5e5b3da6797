"""Real servers for the integration tests: Postgres, Redis and nginx from Debian packages, on loopback."""
