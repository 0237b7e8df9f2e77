"""The arrival trend (`controller.forecast`) and the nodes the policy buys along it."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from controller.forecast import ArrivalTrend, Trend
from controller.policy import (
    Billing,
    Observation,
    PolicySpec,
    PolicyState,
    Reason,
    decide,
    forecast_rate,
)

SPEC = PolicySpec(
    min_replicas=0,
    max_replicas=16,
    concurrency_per_replica=32,
    scale_to_zero_idle_s=None,
    gpus_per_replica=4,
    gpus_per_node=8,
    billing=Billing.NODE,
    cold_start_s=120.0,
    node_boot_s=120.0,
    rate_headroom=0.0,
)
"""70B TP4-like: two replicas per node, 240 s from asking for a node to a Ready replica; no
headroom (the trend alone)."""


def poisson(rng: random.Random, rate_at: Any, start: float, end: float) -> list[float]:
    """Arrival times of a Poisson process with rate `rate_at(t)` (thinning, max rate 100)."""
    out: list[float] = []
    t = start
    while True:
        t += rng.expovariate(100.0)
        if t >= end:
            return out
        if rng.random() < rate_at(t) / 100.0:
            out.append(t)


def fed(times: list[float]) -> ArrivalTrend:
    trend = ArrivalTrend()
    for t in times:
        trend.add(t)
    return trend


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_steady_ramp_is_a_certain_trend(seed: int) -> None:
    """20 -> 31 req/s over three minutes (the conv trace at 4x around its peak)."""
    times = poisson(random.Random(seed), lambda t: 20.0 + 0.06 * t, 0.0, 300.0)
    est = fed(times).estimate(300.0)
    assert est is not None
    assert est.slope == pytest.approx(0.06, rel=0.35)
    assert est.certain(2.0) > 0.02


def test_too_little_history_is_no_trend() -> None:
    trend = fed(poisson(random.Random(0), lambda t: 20.0 + t, 0.0, 50.0))
    assert trend.estimate(50.0) is None  # 5 complete 10 s buckets < 6
    assert fed([]).estimate(100.0) is None


@pytest.mark.parametrize("seed", [0, 1])
def test_poisson_noise_at_a_steady_rate_is_rarely_a_trend(seed: int) -> None:
    """An hour at 20 req/s, estimated every 10 s: the certain part of the slope is rarely above
    0, and then small (a few replicas' worth of nothing)."""
    times = poisson(random.Random(seed), lambda t: 20.0, 0.0, 3600.0)
    trend = ArrivalTrend()
    certain = []
    i = 0
    for now in range(10, 3601, 10):
        while i < len(times) and times[i] < now:
            trend.add(times[i])
            i += 1
        est = trend.estimate(float(now))
        if est is not None:
            certain.append(est.certain(2.0))
    assert sum(1 for c in certain if c > 0) <= 0.06 * len(certain)
    assert max(certain) * 240.0 < 5.0  # at most a quarter of the rate, 240 s ahead


def test_bursty_batches_are_not_a_trend() -> None:
    """Batches of 100-300 requests at once, 30-90 s apart, growing from 150 to 250 on average:
    the residuals dwarf the slope."""
    rng = random.Random(3)
    trend, t = ArrivalTrend(), 0.0
    while t < 300.0:
        size = int(rng.uniform(100, 300) * (0.75 + t / 600.0))
        trend.add(t, size)
        t += rng.uniform(30.0, 90.0)
    est = trend.estimate(300.0)
    assert est is not None
    assert est.certain(2.0) == 0.0


def obs(now: float, rate: float, ready: int, trend: Trend | None) -> Observation:
    return Observation(
        now_data=now,
        queue_depth=0,
        in_flight=ready * 10,
        ready_replicas=ready,
        starting_replicas=0,
        arrival_rate_short=rate,
        arrival_rate_long=rate,
        service_rate_per_replica=6.0,
        ttft_p95_s=None,
        tpot_p95_s=None,
        last_enqueue_at=now,
        arrival_trend=None if trend is None else trend.slope,
        arrival_trend_stderr=None if trend is None else trend.stderr,
    )


def ramp(spec: PolicySpec, *, stderr: float) -> list[tuple[float, int, Reason]]:
    """16 -> 27 req/s from t = 240 s to 420 s (mu 6/s, 90 %: 3 replicas to 5; 4 on 2 nodes)."""
    state = PolicyState.initial(4, 2)
    out = []
    for t in range(0, 600):
        rate = 16.0 + 0.06 * min(max(t - 240, 0), 180)
        slope = 0.06 if 240 < t <= 420 else 0.0
        d, state = decide(obs(float(t), rate, state.replicas, Trend(slope, stderr)), state, spec, t)
        out.append((float(t), d.nodes, d.reason))
    return out


def test_nodes_are_bought_for_the_rate_the_trend_reaches_when_they_are_ready() -> None:
    with_trend = ramp(SPEC, stderr=0.01)
    without = ramp(replace(SPEC, trend_z=None), stderr=0.01)
    first = next(t for t, n, _ in with_trend if n > 2)
    later = next(t for t, n, _ in without if n > 2)
    assert dict((t, r) for t, _, r in with_trend)[first] is Reason.TREND_UP
    assert later - first >= 60.0  # a minute or more earlier than today's rate asks
    assert first > 240.0  # and not before the ramp


def test_an_uncertain_slope_adds_nothing() -> None:
    assert ramp(SPEC, stderr=0.05) == ramp(replace(SPEC, trend_z=None), stderr=0.05)


@pytest.mark.parametrize(
    ("slope", "stderr", "z", "expected"),
    [
        pytest.param(0.06, 0.01, 2.0, 20.0 + 0.04 * 240, id="certain part of the slope"),
        pytest.param(0.06, 0.04, 2.0, None, id="not certain"),
        pytest.param(-0.5, 0.01, 2.0, None, id="falling: today's rate"),
        pytest.param(1.0, 0.0, 2.0, 40.0, id="at most doubled"),
        pytest.param(0.06, 0.0, None, None, id="forecast off"),
    ],
)
def test_forecast_rate_table(
    slope: float, stderr: float, z: float | None, expected: float | None
) -> None:
    o = obs(0.0, 20.0, 4, Trend(slope, stderr))
    got = forecast_rate(o, replace(SPEC, trend_z=z), 20.0)
    assert got == (None if expected is None else pytest.approx(expected))
