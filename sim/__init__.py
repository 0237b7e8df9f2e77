"""Everything needed to run and judge surgescale with no cluster and no GPU.

Simulated vLLM pods and their engine model, a simulated Kubernetes API server with pod, node and
Karpenter lifecycles, a trace-driven load generator, the virtual-time evaluator, the demo, the
benchmarks (`sim.benches`) and the local Redis the tests, the demo and the benchmarks start
(`sim.localredis`). The product packages import nothing from here (an import-linter contract).
"""
