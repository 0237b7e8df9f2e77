"""Request traces for the evaluator: read them, rescale them, make synthetic ones.

Two formats, the same the load generator (`sim.load`) replays:

- the Azure LLM inference trace 2023 CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps
  like `2023-11-16 18:17:03.9799600`), times taken relative to the first row;
- JSON lines `{"timestamp": <ms from start>, "input_length": N, "output_length": M}`.

`rate_scale(trace, x)` plays the same requests `x` times faster (timestamps divided by `x`), as the
load generator's time-scale factor does: the demand pattern is kept, its intensity multiplied.
Synthetic patterns (`poisson`, `step`) are seeded and exist for tests and short scenarios.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson


class TraceError(ValueError):
    """A trace file is missing, empty or malformed; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request of a trace: arrival time in seconds from the start, and its token counts."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Trace:
    """A named, time-ordered list of requests."""

    name: str
    requests: tuple[TraceRequest, ...]

    @property
    def duration_s(self) -> float:
        """Time of the last arrival (the trace starts at 0)."""
        return self.requests[-1].arrival_s if self.requests else 0.0


def _parse_azure_time(text: str) -> tuple[int, float]:
    """(whole seconds since the epoch, fraction) of an Azure timestamp (7-digit fractions);
    kept apart so that differences keep sub-microsecond precision."""
    text = text.strip()
    whole, _, frac = text.partition(".")
    base = int(datetime.fromisoformat(whole).timestamp())
    return base, (float("0." + frac) if frac else 0.0)


def _read_azure_csv(path: Path) -> list[TraceRequest]:
    out: list[TraceRequest] = []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        needed = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise TraceError(f"{path}: expected CSV columns {sorted(needed)}")
        start: tuple[int, float] | None = None
        for line, row in enumerate(reader, start=2):
            try:
                stamp = _parse_azure_time(row["TIMESTAMP"])
                prompt = int(row["ContextTokens"])
                output = int(row["GeneratedTokens"])
            except (ValueError, TypeError) as exc:
                raise TraceError(f"{path}:{line}: {exc}") from exc
            if start is None:
                start = stamp
            offset = (stamp[0] - start[0]) + (stamp[1] - start[1])
            out.append(TraceRequest(offset, max(prompt, 1), max(output, 1)))
    return out


def _read_jsonl(path: Path) -> list[TraceRequest]:
    out: list[TraceRequest] = []
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
                ts = float(obj["timestamp"]) / 1000.0
                prompt = int(obj["input_length"])
                output = int(obj["output_length"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise TraceError(f"{path}:{line}: {exc!r}") from exc
            out.append(TraceRequest(ts, max(prompt, 1), max(output, 1)))
    return out


def read_trace(path: str | Path, *, max_duration_s: float | None = None) -> Trace:
    """Read an Azure CSV or a JSONL trace, sorted by arrival, optionally cut at a duration."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file")
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        requests = _read_jsonl(path)
    else:
        requests = _read_azure_csv(path)
    if not requests:
        raise TraceError(f"{path}: the trace has no requests")
    requests.sort(key=lambda r: r.arrival_s)
    first = requests[0].arrival_s
    requests = [
        TraceRequest(r.arrival_s - first, r.prompt_tokens, r.output_tokens) for r in requests
    ]
    if max_duration_s is not None:
        requests = [r for r in requests if r.arrival_s <= max_duration_s]
    name = path.stem.replace("AzureLLMInferenceTrace_", "azure-")
    return Trace(name=name, requests=tuple(requests))


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
