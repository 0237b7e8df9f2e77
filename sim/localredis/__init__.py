"""A Redis to run against, for the tests, the demo and the benchmarks (not part of the product).

- `server`: find a Redis that answers (`REDIS_URL`, else 127.0.0.1:6379) or start a private
  `redis-server` on a free loopback port (`ensure_redis`, `start_private_redis`, `free_port`);
- `cluster`: start a local Redis Cluster of such processes, move a slot, stop and start a node
  (`start_local_cluster`, `ensure_redis_cluster`, `LocalCluster`).

The product talks to Redis only through `surgescale.events`; these modules start and administer
the server processes that it talks to.
"""
