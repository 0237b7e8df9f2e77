"""`python -m sim NAME ...` runs `surgescale sim NAME ...` (pod, cluster, load, evaluate)."""

import importlib
import sys

if len(sys.argv) < 2:
    print("usage: python -m sim {pod,cluster,load,evaluate} [ARGS...]", file=sys.stderr)
    sys.exit(2)
sys.exit(importlib.import_module(f"sim.{sys.argv[1]}.cli").main(sys.argv[2:]))
