"""Everything needed to run and judge surgescale with no cluster and no GPU.

Simulated vLLM pods and their engine model, a simulated Kubernetes API server with pod, node and
Karpenter lifecycles, a trace-driven load generator, the virtual-time evaluator and the demo.
"""
