"""Synthetic arrival patterns: Poisson arrivals whose rate follows a shape over time.

Each pattern is a rate function `rate(t)` (requests/s); `arrivals(...)` draws an inhomogeneous
Poisson process from it by thinning (Lewis & Shedler), seeded, and sizes each request with a
`Sizes` sampler: fixed sizes, or sizes drawn from a real trace's requests. Shapes: constant,
step, ramp, sine (diurnal), flash crowd (fast rise, hold, exponential decay).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sim.load.records import TraceRequest

RateFn = Callable[[float], float]


@dataclass(frozen=True, slots=True, kw_only=True)
class Sizes:
    """Request sizes: fixed, or drawn (with replacement) from `pool` of (input, output) pairs."""

    input_tokens: int = 512
    output_tokens: int = 128
    pool: Sequence[tuple[int, int]] = ()

    @classmethod
    def from_trace(cls, requests: Sequence[TraceRequest]) -> Sizes:
        return cls(pool=tuple((r.prompt_tokens, r.output_tokens) for r in requests))

    def draw(self, rng: random.Random) -> tuple[int, int]:
        if self.pool:
            return self.pool[rng.randrange(len(self.pool))]
        return self.input_tokens, self.output_tokens


def constant(rate: float) -> RateFn:
    return lambda t: rate


def step(before: float, after: float, at: float) -> RateFn:
    return lambda t: before if t < at else after


def ramp(start: float, end: float, duration: float) -> RateFn:
    return lambda t: start + (end - start) * min(max(t / duration, 0.0), 1.0)


def sine(mean: float, amplitude: float, period: float, phase: float = 0.0) -> RateFn:
    """Diurnal-style load: `mean + amplitude * sin(2 pi (t / period) + phase)`, floored at 0."""
    return lambda t: max(0.0, mean + amplitude * math.sin(2 * math.pi * t / period + phase))


def flash_crowd(
    base: float,
    peak: float,
    at: float,
    *,
    rise: float = 5.0,
    hold: float = 30.0,
    decay: float = 30.0,
) -> RateFn:
    """`base`, then a linear rise to `peak` over `rise` s, `hold` s at peak, exponential decay."""

    def rate(t: float) -> float:
        if t < at:
            return base
        if t < at + rise:
            return base + (peak - base) * (t - at) / rise
        if t < at + rise + hold:
            return peak
        return base + (peak - base) * math.exp(-(t - at - rise - hold) / decay)

    return rate


def arrivals(
    rate: RateFn,
    *,
    duration: float,
    max_rate: float,
    sizes: Sizes | None = None,
    seed: int = 0,
    prefix: str = "syn",
) -> list[TraceRequest]:
    """Poisson arrivals with intensity `rate(t)` <= `max_rate` over [0, duration)."""
    if max_rate <= 0:
        return []
    rng = random.Random(seed)
    sizes = sizes or Sizes()
    out: list[TraceRequest] = []
    t = 0.0
    while True:
        t += rng.expovariate(max_rate)
        if t >= duration:
            return out
        r = rate(t)
        if r > max_rate * (1 + 1e-9):
            raise ValueError(f"rate {r} at t={t:.3f} exceeds max_rate {max_rate}")
        if rng.random() * max_rate < r:
            inp, outp = sizes.draw(rng)
            out.append(
                TraceRequest(
                    arrival_s=t,
                    prompt_tokens=inp,
                    output_tokens=outp,
                    request_id=f"{prefix}-{len(out)}",
                )
            )


PATTERNS = ("poisson", "step", "ramp", "sine", "flash")


def pattern(
    name: str,
    *,
    rate: float,
    duration: float,
    peak: float | None = None,
    at: float | None = None,
    period: float | None = None,
    sizes: Sizes | None = None,
    seed: int = 0,
) -> list[TraceRequest]:
    """A named pattern with simple defaults: `rate` is the base, `peak` the high rate
    (default 4 x rate), `at` when a step or flash starts (default duration/3), `period` of the
    sine (default the duration)."""
    peak = 4 * rate if peak is None else peak
    at = duration / 3 if at is None else at
    fn: RateFn
    if name == "poisson":
        fn, top = constant(rate), rate
    elif name == "step":
        fn, top = step(rate, peak, at), max(rate, peak)
    elif name == "ramp":
        fn, top = ramp(rate, peak, duration), max(rate, peak)
    elif name == "sine":
        amplitude = (peak - rate) / 2
        fn, top = sine(rate + amplitude, amplitude, period or duration), max(rate, peak)
    elif name == "flash":
        fn, top = flash_crowd(rate, peak, at), max(rate, peak)
    else:
        raise ValueError(f"unknown pattern {name!r}; known: {', '.join(PATTERNS)}")
    return arrivals(fn, duration=duration, max_rate=top, sizes=sizes, seed=seed, prefix=name)
