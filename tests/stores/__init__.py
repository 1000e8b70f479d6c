"""Each store kind: its lease, its writes, the near cache, Sentinel, Cluster, outages."""
