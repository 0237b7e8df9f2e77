"""`surgescale bench faults`: real faults against real processes, judged from the outside.

Each fault group is one module (`redis_outage`, `duplicates`, `rediscovery`, `failover`,
`retry_after`, `fuzz`, `flood`, `scale_down`, `redis_flood`) with an async `run(ctx)` that brings
up its own stack (`stack.Stack`: a private redis-server, the simulated cluster and pods, the
gateway, controller leader and standby, a steady streaming load), injects the fault, measures,
and tears everything down in `finally` blocks. What is measured is read from outside the judged
code: the API server's record of writes (`apiproxy`: a recording proxy in front of each
controller), controller and gateway `/metrics`, Redis `INFO memory`, `/proc/<pid>/fd`, and the
load generator's own record of every request. `cli` runs the groups and prints the table and
the JSON line; `report` holds the figures and their targets. See docs/faults.md.
"""
