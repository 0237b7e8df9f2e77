"""The pure engine model of a vLLM pod: scheduling, KV cache and step time, driven by time passed in.

No I/O library and no clock in here (import-linter checks it): the live pod (`sim.pod`) and the
virtual-time evaluator (`sim.evaluate`) drive the same model.

- `get_profile(name)` -> `Profile`: `llama3-8b-h200`, `llama3-8b-h100`, `llama3-70b-tp4-h200`
  (assumptions in `sim.engine.profiles`), with step time from the measured H200 tables via a
  roofline model (`sim.engine.steptime`).
- `Engine(profile, max_num_seqs=None, max_num_batched_tokens=None, num_kv_blocks=None)`:
  continuous batching with a FIFO waiting queue, chunked prefill, KV cache in 16-token blocks,
  preemption (recompute) of the newest request (`sim.engine.core`).
  - `add(request_id, prompt_tokens, max_tokens, now)` (raises `RequestRejected` for requests that
    can never run), `abort(request_id)`.
  - live driver: `step(now) -> StepResult | None`; its `outputs` (one token per listed request,
    `first`/`finished` flags) happen at `result.end`; then call `step(result.end)`. `None` means
    nothing can run at `now` (idle, or the next arrival is later).
  - virtual-time driver: `advance(until) -> list[EngineEvent]` with exact times of first tokens,
    finishes and preemptions; call `advance(t)` before `add(..., now=t)`. Runs of pure-decode
    steps where the batch cannot change are skipped with scalar arithmetic.
    `next_change_time()` says when to call it next (None when idle).
  - gauges: `running`, `waiting`, `kv_usage` (0..1), counters `preemptions`,
    `generation_tokens`, `prompt_tokens`, `steps`; `slowdown` multiplies step times (faults).
"""

from sim.engine.calibration import CalibrationError, CalibrationTable, load_table
from sim.engine.core import Engine
from sim.engine.profiles import PROFILE_NAMES, Profile, UnknownProfileError, get_profile
from sim.engine.steptime import StepTimeModel, TensorParallel
from sim.engine.types import EngineEvent, EventKind, RequestRejected, StepResult, TokenOutput

__all__ = [
    "PROFILE_NAMES",
    "CalibrationError",
    "CalibrationTable",
    "Engine",
    "EngineEvent",
    "EventKind",
    "Profile",
    "RequestRejected",
    "StepResult",
    "StepTimeModel",
    "TensorParallel",
    "TokenOutput",
    "UnknownProfileError",
    "get_profile",
    "load_table",
]
