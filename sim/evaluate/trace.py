"""Request traces for the evaluator: read them, rescale them, make synthetic ones.

Two formats, read by the load generator's own readers (`sim.load.trace`), so both replay the
same requests at the same times:

- the Azure LLM inference trace 2023 CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`), times
  relative to the first row;
- JSON lines `{"timestamp": <ms from start>, "input_length": N, "output_length": M}`.

`rate_scale(trace, x)` plays the same requests `x` times faster (timestamps divided by `x`), as the
load generator's time-scale factor does: the demand pattern is kept, its intensity multiplied.
Synthetic patterns (`poisson`, `step`) are seeded and exist for tests and short scenarios. A
trace's rows are `sim.load.records.TraceRequest`, the one trace-row type of the simulator.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import orjson

from sim.load import trace as load_trace
from sim.load.records import TraceRequest

__all__ = [
    "Trace",
    "TraceError",
    "TraceRequest",
    "poisson",
    "rate_scale",
    "read_trace",
    "step",
    "write_jsonl",
]


class TraceError(ValueError):
    """A trace file is missing, empty or malformed; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class Trace:
    """A named, time-ordered list of requests."""

    name: str
    requests: tuple[TraceRequest, ...]

    @property
    def duration_s(self) -> float:
        """Time of the last arrival (the trace starts at 0)."""
        return self.requests[-1].arrival_s if self.requests else 0.0


def read_trace(path: str | Path, *, max_duration_s: float | None = None) -> Trace:
    """Read an Azure CSV or a JSONL trace with the load generator's readers (`sim.load.trace`),
    sorted by arrival, optionally cut at a duration."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file")
    try:
        loaded = load_trace.read_trace(path)
    except load_trace.TraceError as exc:
        raise TraceError(str(exc)) from exc
    requests = sorted(loaded, key=lambda r: r.arrival_s)
    if not requests:
        raise TraceError(f"{path}: the trace has no requests")
    if max_duration_s is not None:
        requests = [r for r in requests if r.arrival_s <= max_duration_s]
    name = path.stem.replace("AzureLLMInferenceTrace_", "azure-")
    return Trace(name=name, requests=tuple(requests))


def write_jsonl(trace: Trace, path: str | Path) -> Path:
    """Write the trace in the load generator's JSONL format (so `surgescale sim load --trace` and
    `surgescale demo --trace` can replay exactly what the evaluator ran)."""
    path = Path(path)
    with path.open("wb") as handle:
        for r in trace.requests:
            handle.write(
                orjson.dumps(
                    {
                        "timestamp": round(r.arrival_s * 1000.0, 3),
                        "input_length": r.prompt_tokens,
                        "output_length": r.output_tokens,
                    }
                )
                + b"\n"
            )
    return path


def rate_scale(trace: Trace, factor: float) -> Trace:
    """The same requests arriving `factor` times faster (1 = unchanged)."""
    if factor <= 0 or not math.isfinite(factor):
        raise TraceError(f"rate scale must be a positive number, got {factor}")
    if factor == 1:
        return trace
    scaled = tuple(
        TraceRequest(r.arrival_s / factor, r.prompt_tokens, r.output_tokens) for r in trace.requests
    )
    return Trace(name=f"{trace.name}@{factor:g}x", requests=scaled)


def poisson(
    *,
    rate: float,
    duration_s: float,
    prompt_tokens: int = 512,
    output_tokens: int = 128,
    seed: int = 0,
    start_s: float = 0.0,
    name: str = "poisson",
) -> Trace:
    """Poisson arrivals at `rate` per second with fixed token counts."""
    rng = random.Random(seed)
    out: list[TraceRequest] = []
    t = start_s
    while rate > 0:
        t += rng.expovariate(rate)
        if t >= start_s + duration_s:
            break
        out.append(TraceRequest(t, prompt_tokens, output_tokens))
    return Trace(name=name, requests=tuple(out))


def step(
    *,
    low_rate: float,
    high_rate: float,
    step_at_s: float,
    duration_s: float,
    prompt_tokens: int = 512,
    output_tokens: int = 128,
    seed: int = 0,
    end_high_s: float | None = None,
) -> Trace:
    """`low_rate` until `step_at_s`, then `high_rate` (until `end_high_s`, then low again)."""
    end_high = duration_s if end_high_s is None else end_high_s
    parts = [
        poisson(
            rate=low_rate,
            duration_s=step_at_s,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            seed=seed,
        ),
        poisson(
            rate=high_rate,
            duration_s=end_high - step_at_s,
            start_s=step_at_s,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            seed=seed + 1,
        ),
        poisson(
            rate=low_rate,
            duration_s=max(duration_s - end_high, 0.0),
            start_s=end_high,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            seed=seed + 2,
        ),
    ]
    merged = sorted((r for p in parts for r in p.requests), key=lambda r: r.arrival_s)
    return Trace(name=f"step-{low_rate:g}-{high_rate:g}", requests=tuple(merged))
