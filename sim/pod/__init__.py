"""The simulated vLLM pod: OpenAI HTTP API, `/health`, `/metrics`, faults, over `sim.engine`.

In-process: `sim.pod.runtime.start_pod(PodOptions(...)) -> RunningPod`. Command line:
`surgescale sim pod` (`sim.pod.cli`); benchmark: `surgescale bench pod` (`sim.pod.bench`).
"""
