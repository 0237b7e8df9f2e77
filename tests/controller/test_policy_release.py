"""Node releases one step a period, and each idle node level kept for its own gaps: tables and
time sequences with a fake `now` (`controller.policy.decide`, `controller.levelkeep`)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest

from controller.levelkeep import MIN_GAPS, LevelGaps, kept_nodes
from controller.policy import (
    Decision,
    Observation,
    PolicySpec,
    PolicyState,
    Reason,
    decide,
    release_period_s,
    release_to,
)
from controller.retention import keep_seconds
from tests.controller.specs import TP4_NODE, observation

SPEC = replace(
    TP4_NODE,
    max_replicas=42,
    rate_headroom=0.0,
    trend_z=None,
    node_release_step=1,
    keep_per_level=True,
)
"""70B TP4 on 8-GPU nodes: two replicas a node, 240 s from asking for a node to a Ready
replica; no headroom, so a node level is needed exactly while its replicas are; both rules on
(they are off by default)."""


OBS: dict[str, Any] = {
    "queue_depth": 0,
    "in_flight": 0,
    "starting_replicas": 0,
    "arrival_short_window_s": 2.0,
    "service_rate_per_replica": 1.0,
    "ttft_p95_s": 0.3,
    "tpot_p95_s": 0.02,
}
"""This file's observation before what a test changes (`specs.observation`)."""


def obs(now: float, rate: float, ready: int, **kw: Any) -> Observation:
    """Demand of `rate` req/s at 1 req/s per replica (0.9 usable): ceil(rate / 0.9) replicas."""
    rates = {"arrival_rate_short": rate, "arrival_rate_long": rate}
    return observation(now, {**OBS, "ready_replicas": ready, **rates}, **kw)


# ---- release in steps -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "expected"),
    [
        pytest.param(None, 240.0, id="default: a reacquire time"),
        pytest.param(30.0, 30.0, id="set"),
        pytest.param(-1.0, 0.0, id="never negative"),
    ],
)
def test_release_period_table(period: float | None, expected: float) -> None:
    assert release_period_s(replace(SPEC, node_release_period_s=period)) == expected


@pytest.mark.parametrize(
    ("current", "kept", "step", "expected"),
    [
        pytest.param(6, 1, 1, 5, id="one node of five idle"),
        pytest.param(6, 1, 2, 4, id="two a period"),
        pytest.param(6, 1, 0, 1, id="rule off: down to the kept nodes at once"),
        pytest.param(6, 5, 1, 5, id="the step never goes below the kept nodes"),
        pytest.param(6, 6, 1, 6, id="nothing idle"),
        pytest.param(1, 0, 1, 0, id="the last node"),
    ],
)
def test_release_to_table(current: int, kept: int, step: int, expected: int) -> None:
    spec = replace(SPEC, node_release_step=step)
    assert release_to(current, kept, spec) == expected


def _idle_fleet(spec: PolicySpec) -> tuple[list[tuple[float, int, Reason]], PolicyState]:
    """The start of 70B code 1x: 6 nodes (12 replicas) found Ready at t = 0, demand that needs
    one replica all along; one evaluation a second for 1,500 s."""
    state = PolicyState.initial(12, 6)
    out = []
    ready = 12
    for t in range(1500):
        d, state = decide(obs(float(t), 0.5, ready), state, spec, float(t))
        ready = d.replicas
        out.append((float(t), d.nodes, d.reason))
    return out, state


def test_an_idle_start_is_given_back_one_node_per_reacquire_time() -> None:
    """The keep of a fleet that has seen no gaps yet (480 s) ends for all five idle nodes at
    once; they go one per reacquire time (240 s), not all at once (the old rule: 6 -> 1 at
    480 s), nor one per 30 s (`node_release_period_s` 30: 480-600 s)."""
    seq, _ = _idle_fleet(SPEC)
    releases = [(t, n) for t, n, r in seq if r is Reason.RELEASE_NODE]
    assert [n for _, n in releases] == [5, 4, 3, 2, 1]
    assert releases[0][0] == pytest.approx(480.0, abs=1.0)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(releases)]
    assert gaps == [240.0] * 4
    old, _ = _idle_fleet(replace(SPEC, node_release_step=0))
    assert [n for _, n, r in old if r is Reason.RELEASE_NODE] == [1]
    fast, _ = _idle_fleet(replace(SPEC, node_release_period_s=30.0))
    assert [t for t, _, r in fast if r is Reason.RELEASE_NODE] == [
        480.0,
        510.0,
        540.0,
        570.0,
        600.0,
    ]


def test_the_release_detail_says_it_goes_in_steps() -> None:
    seq_state = PolicyState.initial(12, 6)
    d: Decision | None = None
    for t in range(482):
        d, seq_state = decide(obs(float(t), 0.5, 12), seq_state, SPEC, float(t))
        if d.reason is Reason.RELEASE_NODE:
            break
    assert d is not None
    assert d.reason is Reason.RELEASE_NODE
    assert d.detail.startswith("6 -> 5 node(s)")
    assert "5 idle, 1 per 240s" in d.detail


def test_a_release_step_stops_when_latency_breaks() -> None:
    """After the first step the replicas left miss the TPOT objective: no further release
    (`HoldLatency`), where the old rule had already given back all five."""
    state = PolicyState.initial(12, 6)
    ready = 12
    reasons = []
    for t in range(560):
        tpot = 0.02 if t < 490 else 0.2  # a burst of long prompts on what is left
        d, state = decide(obs(float(t), 0.5, ready, tpot_p95_s=tpot), state, SPEC, float(t))
        ready = d.replicas
        reasons.append((d.nodes, d.reason))
    assert reasons[-1][0] == 5
    assert any(r is Reason.HOLD_LATENCY for _, r in reasons[490:])


# ---- each level kept for its own gaps ---------------------------------------------------------


def test_level_gaps_table() -> None:
    """A level's short gaps are counted (up to MIN_GAPS), its long ones listed."""
    g = LevelGaps()
    g = g.update(1, 3, 0.0, min_gap_s=240.0)  # levels 2 and 3 idle from 0
    assert g.below_since == ((2, 0.0), (3, 0.0))
    g = g.update(2, 3, 10.0, min_gap_s=240.0)  # level 2 back after 10 s
    assert g.gaps(2) == (0.0,)
    assert g.below_since == ((3, 0.0),)
    g = g.update(3, 3, 400.0, min_gap_s=240.0)  # level 3 back after 400 s
    assert g.gaps(3) == (400.0,)
    for t in range(5):  # level 2 flickers five more times: counted up to MIN_GAPS
        g = g.update(1, 3, 1000.0 + 10 * t, min_gap_s=240.0)
        g = g.update(3, 3, 1005.0 + 10 * t, min_gap_s=240.0)
    assert g.gaps(2) == (0.0,) * MIN_GAPS
    assert g.gaps(3) == (0.0,) * MIN_GAPS + (400.0,)
    g = g.update(1, 3, 2000.0, min_gap_s=240.0)
    g = g.update(3, 3, 2500.0, min_gap_s=240.0)
    assert g.gaps(3) == (0.0,) * MIN_GAPS + (400.0, 500.0)
    assert g.gaps(4) == ()


@pytest.mark.parametrize(
    ("gaps", "idle_s", "expected"),
    [
        pytest.param((), 200.0, 3, id="no gaps: the fleet-wide keep (300 s) holds it"),
        pytest.param((), 400.0, 0, id="no gaps: released after the fleet-wide keep"),
        pytest.param((400.0, 420.0, 450.0), 400.0, 3, id="its own long gaps keep it"),
        pytest.param((0.0, 0.0, 0.0), 260.0, 2, id="only short gaps: a reacquire time"),
        pytest.param((400.0, 450.0), 400.0, 0, id="too few gaps of its own: fleet-wide keep"),
    ],
)
def test_kept_nodes_table(gaps: tuple[float, ...], idle_s: float, expected: int) -> None:
    """Levels 2 and 3 idle for `idle_s`; level 3 has `gaps` of its own, level 2 none (the
    fleet-wide keep, 300 s)."""
    shorts = sum(1 for g in gaps if g == 0.0)
    longs = tuple(g for g in gaps if g > 0.0)
    levels = LevelGaps(
        below_since=((2, 1000.0), (3, 1000.0)),
        long=((3, longs),) if longs else (),
        short=((3, shorts),) if shorts else (),
    )

    def keep(g: tuple[float, ...]) -> float:
        return keep_seconds(g, reacquire_s=240.0, penalty_s=480.0)

    kept, top = kept_nodes(levels, held=3, now=1000.0 + idle_s, keep=keep, fleet_keep_s=300.0)
    assert kept == expected
    own = levels.gaps(3)
    assert top == (keep(own) if len(own) >= MIN_GAPS else 300.0)


def _bursts(spec: PolicySpec, gaps: list[float]) -> list[int]:
    """Demand for 5 nodes (10 replicas) for 60 s, then for 1-2 nodes through each gap in turn:
    the need flickers between 1 and 2 nodes every 2 s (the lowest levels' short gaps, which
    flood a pooled memory of 32). One evaluation a second; a node asked for is there at once
    (only the keep is under test). Returns the nodes held when each burst starts."""
    state = PolicyState.initial(10, 5)
    ready = 10
    t = 0.0
    held = []
    for gap in gaps:
        held.append(state.nodes)
        for _ in range(60):
            d, state = decide(obs(t, 9.0, ready), state, spec, t)
            ready = d.replicas
            t += 1.0
        end = t + gap
        while t < end:
            rate = 0.9 if int(t) // 2 % 2 else 2.7
            d, state = decide(obs(t, rate, ready), state, spec, t)
            ready = d.replicas
            t += 1.0
    return held


def test_idle_levels_are_kept_through_the_gaps_they_had() -> None:
    """Bursts every ~7 minutes, the need flickering at the lowest levels in between: the pooled
    memory holds only the flicker and its keep is a reacquire time (240 s), so a node is
    released before every burst returns (one: the next release would be 240 s later); once each has seen three gaps of 390-410 s of its
    own, they are kept through the next ones."""
    gaps = [390.0, 410.0, 400.0, 395.0, 405.0, 400.0, 398.0]
    spec = replace(SPEC, defer_short_bursts=False)
    assert _bursts(spec, gaps)[-3:] == [5, 5, 5]
    assert _bursts(replace(spec, keep_per_level=False), gaps)[-3:] == [4, 4, 4]
