"""The pure engine model of a vLLM pod (placeholder until the simulated-pod issue lands)."""
