"""The trace-driven load generator: replay Azure 2023 / JSONL traces or synthetic patterns
against any OpenAI-compatible endpoint, record client-side TTFT/TPOT per request.

Library API (used by the demo in-process):
- `sim.load.records`: `TraceRequest` (a trace row) and `RequestResult` (what became of one
  request), the records every kind of run shares.
- `sim.load.trace`: `read_azure_csv`, `read_jsonl`, `read_trace`.
- `sim.load.patterns`: `pattern(name, rate=..., duration=...)`, `arrivals(rate_fn, ...)`,
  shapes `constant`, `step`, `ramp`, `sine`, `flash_crowd`; `Sizes`.
- `sim.load.runner`: `async run_load(requests, target_url=..., model=..., time_scale=...,
  concurrency=..., duration=...) -> LoadReport`.
- `sim.load.summary`: `CsvRecorder`, `summarize`, `render`.
Command line: `surgescale sim load` (`sim.load.cli`).
"""
