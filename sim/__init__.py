"""Everything needed to run and judge surgescale with no cluster and no GPU.

Simulated vLLM pods and their engine model, a simulated Kubernetes API server with pod, node and
Karpenter lifecycles, a trace-driven load generator, the baselines, the virtual-time evaluator and
the demo. Its layers, top to bottom (each imports only from below it; an import-linter contract in
pyproject.toml keeps them):

- `benches`, `crosscheck`: benchmarks and the live-against-virtual cross-check;
- `demo` | `evaluate`: the live closed-loop demo and the virtual-time evaluator, independent;
- `baselines` | `cluster` | `load`: HPA/KEDA/Prometheus/KPA, the simulated API server, the load
  generator with the records every run shares (`sim.load.records`: one trace row, one request
  result);
- `pod`: the simulated vLLM pod; `engine`: its engine model;
- `datafiles`, `promtext`, `localredis`: packaged data, Prometheus text parsing, and the local
  Redis (or Redis Cluster) the tests, the demo and the benchmarks start.

The product packages import nothing from here (an import-linter contract).
"""
