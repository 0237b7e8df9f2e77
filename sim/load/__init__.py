"""The trace-driven load generator: replay Azure 2023 / JSONL traces or synthetic patterns
against any OpenAI-compatible endpoint, record client-side TTFT/TPOT per request.

Library API (used by the demo in-process):
- `sim.load.trace`: `LoadRequest`, `read_azure_csv`, `read_jsonl`, `read_trace`.
- `sim.load.patterns`: `pattern(name, rate=..., duration=...)`, `arrivals(rate_fn, ...)`,
  shapes `constant`, `step`, `ramp`, `sine`, `flash_crowd`; `Sizes`.
- `sim.load.runner`: `async run_load(requests, target_url=..., model=..., time_scale=...,
  concurrency=..., duration=...) -> LoadReport`.
- `sim.load.summary`: `RequestResult`, `CsvRecorder`, `summarize`, `render`.
Command line: `surgescale sim load` (`sim.load.cli`).
"""
