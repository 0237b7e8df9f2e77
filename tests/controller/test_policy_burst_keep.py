"""Nodes a burst asked for, kept after it while the arrivals are bursty and their bursts broke
the latency objective (`PolicySpec.burst_keep`): time sequences with a fake `now`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from controller.policy import Decision, PolicyState, Reason, decide
from tests.controller.test_policy_burst import ON, obs

OFF = replace(ON, burst_keep=False)


def _run(spec: Any, until: int, *, bursts: tuple[int, ...] = (200,), **kw: Any) -> list[Decision]:
    """12 replicas on 6 nodes; bursts of 5 s (at `bursts`) that the change detector calls a
    step to 40/s (3/s over the long window, the arrivals meeting three times that) with a TPOT
    p95 of 80 ms (objective 50), then 0.5/s at 20 ms."""
    state = PolicyState.initial(12, 6)
    out: list[Decision] = []
    for t in range(until + 1):
        burst = any(b <= t <= b + 5 for b in bursts)
        o = obs(
            float(t),
            arrival_rate_short=4.0 if burst else 0.5,
            arrival_rate_long=3.0 if burst else 0.5,
            arrival_step_rate=40.0 if burst else None,
            tpot_p95_s=0.08 if burst else 0.02,
            **kw,
        )
        decision, state = decide(o, state, spec, float(t))
        out.append(decision)
    return out


def test_a_bursty_fleet_keeps_the_nodes_a_burst_that_missed_asked_for() -> None:
    """The step asks for 40/s over 4.4 * 0.9 a replica: 11 replicas on 6 nodes (a step's
    replicas use the room there is); the long window times the factor (9/s) needs 2 nodes.
    Without the rule the start's nodes go to 2 once the keep time (480 s before any gap is
    seen) has passed since t = 0; with it the 6 the burst asked for are kept for the keep time
    after the burst (480 s: no gap between bursts seen yet), then released."""
    off = _run(OFF, 600)
    on = _run(ON, 600)
    assert max(d.recommended for d in on[200:206]) >= 11
    assert off[-1].nodes <= 2
    assert any(d.reason is Reason.RELEASE_NODE for d in off)
    assert on[-1].nodes == 6
    assert on[-1].reason is Reason.KEEP_NODE
    assert "6 asked for by a burst in the last 480s" in on[-1].detail
    assert _run(ON, 700)[-1].nodes <= 2


def test_the_keep_after_a_burst_is_learned_from_the_gaps_between_bursts() -> None:
    """Bursts every 400 s (gaps of 394 s between them at 6 nodes): the keep after the last
    one is 394 s (rent or buy over those gaps), not the 480 s assumed before any was seen."""
    on = _run(ON, 1205 + 400, bursts=(200, 600, 1000, 1200))
    assert on[1205 + 390].nodes == 6
    assert "in the last 394s" in on[1205 + 390].detail
    assert on[-1].nodes <= 2


def test_bursts_served_within_the_objective_keep_nothing() -> None:
    """The same bursts at a TPOT p95 of 20 ms: the fleet met them on what it held (70B code
    4x), and nothing is kept for them."""
    state = PolicyState.initial(12, 6)
    decision = None
    for t in range(601):
        burst = 200 <= t <= 205
        o = obs(
            float(t),
            arrival_rate_short=4.0 if burst else 0.5,
            arrival_rate_long=3.0 if burst else 0.5,
            arrival_step_rate=40.0 if burst else None,
        )
        decision, state = decide(o, state, ON, float(t))
    assert decision is not None
    assert decision.nodes <= 2


def test_a_smooth_fleet_keeps_nothing_for_its_bursts() -> None:
    """A burst factor within the headroom (1.4): not bursty, the nodes go as without the
    rule."""
    assert _run(ON, 600, burst_factor=1.4)[-1].nodes <= 2
