"""Failover benchmark on the kind cluster: RTO, lost acknowledged writes, rejoin time, split brain."""
