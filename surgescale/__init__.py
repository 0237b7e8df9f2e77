"""surgescale: a low-latency, event-driven autoscaler for LLM inference on Kubernetes.

The package holds the small shared core: the command line (`surgescale.cli`), the event contract
and its Redis Streams transport (`surgescale.events`) and the one retry policy (`surgescale.retry`).
The parts live in the sibling top-level packages `gateway`, `controller` and `sim`.
"""

__version__ = "0.1.0"
