"""The demo's load scenario (pure): quiet -> a step burst -> decay -> quiet, as a request schedule.

Arrivals are a Poisson process whose rate follows the four phases (thinning, seeded), and each
request's prompt and output sizes are drawn from the Azure 2023 conversation trace (read at run
time from `default_sizes_path()`, clipped so a demo on a laptop stays light). The schedule is
a list of `sim.load.records.TraceRequest` (the one trace-row type), written as JSONL in the load
generator's format (`{"timestamp": ms, "input_length": N,
"output_length": M}`), so the same replay code runs the demo and `--trace` files.

Only lifecycle delays are compressed by the speed factor (see `sim.demo.stack`); requests are
served in real time, so the phases below are wall-clock seconds.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from sim.load.records import TraceRequest
from sim.load.trace import default_traces_dir

FALLBACK_SIZES: tuple[tuple[int, int], ...] = ((512, 128),)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """Phases (wall seconds) and rates (requests/s) of the default demo burst."""

    quiet_s: float = 15.0
    burst_s: float = 35.0
    decay_s: float = 20.0
    tail_s: float = 45.0
    base_rps: float = 1.0
    burst_rps: float = 12.0
    max_prompt_tokens: int = 2048
    max_output_tokens: int = 192
    seed: int = 0

    @property
    def load_step_at(self) -> float:
        return self.quiet_s

    @property
    def burst_end_at(self) -> float:
        return self.quiet_s + self.burst_s

    @property
    def duration_s(self) -> float:
        return self.quiet_s + self.burst_s + self.decay_s + self.tail_s

    def rate(self, t: float) -> float:
        """Arrival rate (requests/s) at wall time t since the start."""
        if t < 0 or t >= self.duration_s:
            return 0.0
        if t < self.quiet_s:
            return self.base_rps
        if t < self.burst_end_at:
            return self.burst_rps
        if t < self.burst_end_at + self.decay_s:
            frac = (t - self.burst_end_at) / self.decay_s
            # exponential decay from burst to base over the decay phase
            ratio: float = (self.burst_rps / self.base_rps) ** (1.0 - frac)
            return self.base_rps * ratio
        return self.base_rps

    def scaled_duration(self, factor: float) -> Scenario:
        """The same shape stretched or shrunk in time by `factor` (for short test runs)."""
        return Scenario(
            quiet_s=self.quiet_s * factor,
            burst_s=self.burst_s * factor,
            decay_s=self.decay_s * factor,
            tail_s=self.tail_s * factor,
            base_rps=self.base_rps,
            burst_rps=self.burst_rps,
            max_prompt_tokens=self.max_prompt_tokens,
            max_output_tokens=self.max_output_tokens,
            seed=self.seed,
        )


def default_sizes_path() -> Path:
    """The Azure 2023 conversation trace, wherever `sim.load.trace` finds the traces
    (`$SURGESCALE_TRACES_DIR`, else the copy in the package)."""
    return default_traces_dir() / "AzureLLMInferenceTrace_conv.csv"


def load_sizes(path: Path) -> list[tuple[int, int]]:
    """(ContextTokens, GeneratedTokens) pairs of an Azure 2023 trace CSV."""
    sizes: list[tuple[int, int]] = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                sizes.append((int(row["ContextTokens"]), int(row["GeneratedTokens"])))
            except (KeyError, ValueError):
                continue
    return sizes


def arrivals(
    scenario: Scenario, sizes: Sequence[tuple[int, int]] = FALLBACK_SIZES
) -> list[TraceRequest]:
    """The request schedule: Poisson arrivals at `scenario.rate(t)` by thinning, sizes sampled."""
    rng = random.Random(scenario.seed)
    pool = list(sizes) or list(FALLBACK_SIZES)
    peak = max(scenario.base_rps, scenario.burst_rps)
    out: list[TraceRequest] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= scenario.duration_s:
            return out
        if rng.random() * peak > scenario.rate(t):
            continue
        prompt, output = rng.choice(pool)
        out.append(
            TraceRequest(
                arrival_s=t,
                prompt_tokens=max(1, min(prompt, scenario.max_prompt_tokens)),
                output_tokens=max(1, min(output, scenario.max_output_tokens)),
            )
        )


def write_jsonl(schedule: Sequence[TraceRequest], path: Path) -> Path:
    """Write the schedule in the load generator's JSONL trace format."""
    with path.open("wb") as f:
        for a in schedule:
            f.write(
                orjson.dumps(
                    {
                        "timestamp": math.floor(a.arrival_s * 1000.0),
                        "input_length": a.prompt_tokens,
                        "output_length": a.output_tokens,
                    }
                )
            )
            f.write(b"\n")
    return path


def from_trace(
    requests: Sequence[TraceRequest],
    *,
    duration_s: float,
    max_prompt_tokens: int = 8192,
    max_output_tokens: int = 512,
) -> list[TraceRequest]:
    """A trace's rows -> the schedule of its first `duration_s` (times from its first request)."""
    if not requests:
        return []
    start = min(r.arrival_s for r in requests)
    out = [
        TraceRequest(
            arrival_s=r.arrival_s - start,
            prompt_tokens=max(1, min(r.prompt_tokens, max_prompt_tokens)),
            output_tokens=max(1, min(r.output_tokens, max_output_tokens)),
        )
        for r in sorted(requests, key=lambda r: (r.arrival_s, r.prompt_tokens, r.output_tokens))
    ]
    return [a for a in out if a.arrival_s < duration_s]
