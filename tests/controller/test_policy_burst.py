"""The burst factor: how much faster than the long-window rate the arrivals came, as they saw
it (`controller.state.ModelState.burst_factor`), and the capacities divided by it before sizing
(`PolicySpec.burst_sizing`, off by default): tables and time sequences with a fake `now`."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from controller.policy import Observation, PolicyState, Reason, burst_factor, decide
from controller.state import ClusterCounts, StateStore
from surgescale.events import Event, EventType
from tests.controller.specs import TP4_NODE, observation
from tests.controller.test_policy_stall import OBS as STALL_OBS

M = "llama3-70b"
ON = replace(TP4_NODE, max_replicas=42)
OFF = replace(ON, burst_sizing=False)


def _enqueue(rid: str) -> Event:
    return Event(type=EventType.ENQUEUE, model=M, gateway="g1", ts_ms=0, request_id=rid)


def _factor(times: list[float], at: float) -> float | None:
    store = StateStore()
    for i, t in enumerate(times):
        store.ingest([_enqueue(f"r{i}")], t)
    model = store.model(M)
    assert (
        model.burst_factor(at)
        == model.observe(
            at, cluster=ClusterCounts(ready_replicas=1), concurrency_per_replica=None
        ).burst_factor
    )
    return model.burst_factor(at)


def test_a_poisson_stream_has_a_burst_factor_of_one() -> None:
    """Two arrivals a second (Poisson, seeded) for ten minutes: every arrival meets about the
    long-window rate in its short window too, once its own place there is left out."""
    rng = random.Random(0)
    times, t = [], 0.0
    while t < 600.0:
        t += rng.expovariate(2.0)
        times.append(t)
    factor = _factor(times, 600.0)
    assert factor == pytest.approx(1.0, abs=0.1)


def test_load_that_comes_in_bursts_of_seconds_has_a_large_burst_factor() -> None:
    """The same rate as 20 arrivals in one second every 10 s: the long window says 2/s; the
    k-th arrival of a burst met k - 1 before it in its 2 s window, 9.5 on average, 4.75/s."""
    times = [block * 10.0 + i * 0.05 for block in range(30) for i in range(20)]
    factor = _factor(times, 300.0)
    assert factor == pytest.approx(4.75 / 2.0, rel=0.25)


def test_no_arrivals_no_burst_factor() -> None:
    assert StateStore().model(M).burst_factor(10.0) is None


OBS: dict[str, Any] = {
    **STALL_OBS,
    "in_flight": 2,
    "ready_replicas": 12,
    "arrival_rate_short": 8.0,
    "arrival_rate_long": 8.0,
    "burst_factor": 3.0,
}
"""This file's observation before what a test changes (`specs.observation`)."""


def obs(now: float, **kw: Any) -> Observation:
    return observation(now, OBS, **kw)


@pytest.mark.parametrize(
    ("spec", "obs_kw", "factor", "recommended"),
    [
        # 8/s over the long window, met at 3x: 24/s * 1.5 headroom / (4.4 * 0.9) -> 10
        pytest.param(ON, {}, 3.0, 10, id="sized for the rate the arrivals met"),
        pytest.param(ON, {"burst_factor": 0.9}, None, 4, id="smoother than Poisson: none"),
        # within the 50 % headroom: conversation load reads 1.0-1.5
        pytest.param(ON, {"burst_factor": 1.4}, None, 4, id="within the headroom: none"),
        pytest.param(ON, {"burst_factor": 1.6}, 1.6, 5, id="above it"),
        pytest.param(ON, {"burst_factor": None}, None, 4, id="not known"),
        # 8/s * 8 (the cap) * 1.5 / 3.96 -> 25
        pytest.param(ON, {"burst_factor": 30.0}, 8.0, 25, id="capped"),
        # 200 in flight on 12 replicas: their TPOT p95 (20 ms of 50) judges what they take,
        # 8 / 12 * 2.5 / 0.9 = 1.85/s a replica: 12 / (1.85 * 0.9) -> 8, with no burst factor
        pytest.param(ON, {"in_flight": 200}, None, 8, id="TPOT p95 judges"),
        pytest.param(OFF, {}, None, 4, id="rule off"),
    ],
)
def test_burst_rate_table(
    spec: Any, obs_kw: dict[str, Any], factor: float | None, recommended: int
) -> None:
    o = obs(0.0, **obs_kw)
    decision, _ = decide(o, PolicyState.initial(12, 6), spec, 0.0)
    assert decision.burst_factor == (None if factor is None else pytest.approx(factor))
    assert decision.recommended == recommended
    if factor is not None:
        assert burst_factor(o, spec) == pytest.approx(factor)


def test_a_climb_bought_for_the_rate_the_arrivals_met_says_so() -> None:
    """On 2 nodes, the long window at 8/s met at 3x by the arrivals: 10 replicas on 5 nodes
    are bought, and the reason and detail say it was the burst rate."""
    o = obs(0.0, ready_replicas=4, arrival_rate_short=8.0, arrival_rate_long=8.0)
    decision, _ = decide(o, PolicyState.initial(4, 2), replace(ON, rate_headroom=0.0), 0.0)
    assert decision.reason is Reason.BURST_RATE
    assert "the arrivals met 3.00x the long-window rate (24.00/s)" in decision.detail
    assert decision.recommended == 7  # 24 / 3.96
    assert decision.nodes == 4


def test_bursty_load_keeps_the_nodes_its_bursts_need() -> None:
    """70B code 1x's start, shaped: 12 replicas on 6 nodes; a burst at 200-230 s (8/s in the
    windows, the arrivals meeting three times that), then 0.7/s to 500 s. On the long-window
    rate the burst needs 8 * 1.5 / (4.4 * 0.9) -> 4 replicas on 2 nodes, and the start's nodes
    go (to 2 by 500 s, 90 s before 70B code 1x's burst at 570 s found 4 replicas); on the rate
    the arrivals met, 10 replicas on 5 nodes, kept through the keep time."""

    def run(spec: Any) -> tuple[int, list[Reason]]:
        state = PolicyState.initial(12, 6)
        reasons: list[Reason] = []
        nodes = 0
        for t in range(501):
            rate = 8.0 if 200 <= t <= 230 else 0.7
            o = obs(float(t), arrival_rate_short=rate, arrival_rate_long=rate)
            decision, state = decide(o, state, spec, float(t))
            reasons.append(decision.reason)
            nodes = decision.nodes
        return nodes, reasons

    off_nodes, off = run(OFF)
    on_nodes, _ = run(ON)
    assert off_nodes <= 2
    assert Reason.RELEASE_NODE in off
    assert on_nodes >= 5


def test_no_burst_factor_while_the_long_window_fills_or_on_few_arrivals() -> None:
    """A minute after the first arrival the long window reads the rate low (it divides by its
    full length): those arrivals are not noted; nor is a factor given on fewer than 200."""
    steady = [i * 0.1 for i in range(590)]  # 10/s for 59 s
    assert _factor(steady, 59.0) is None
    few = [*steady, *(60.0 + i for i in range(150))]  # then 1/s: 150 noted
    assert _factor(few, 210.0) is None
    assert _factor([*few, *(210.0 + i * 0.5 for i in range(100))], 260.0) is not None
