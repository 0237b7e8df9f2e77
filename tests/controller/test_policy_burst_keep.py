"""Nodes a burst asked for, kept after it while the arrivals are bursty
(`PolicySpec.burst_keep`, off by default): a time sequence with a fake `now`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from controller.policy import Decision, PolicyState, Reason, decide
from tests.controller.test_policy_burst import ON, obs

KEEP = replace(ON, burst_keep=True)


def _run(spec: Any, until: int) -> list[Decision]:
    """12 replicas on 6 nodes; a burst of 5 s at 200 s that the change detector calls a step
    to 40/s (3/s over the long window, the arrivals meeting three times that), then 0.5/s."""
    state = PolicyState.initial(12, 6)
    out: list[Decision] = []
    for t in range(until + 1):
        burst = 200 <= t <= 205
        o = obs(
            float(t),
            arrival_rate_short=4.0 if burst else 0.5,
            arrival_rate_long=3.0 if burst else 0.5,
            arrival_step_rate=40.0 if burst else None,
        )
        decision, state = decide(o, state, spec, float(t))
        out.append(decision)
    return out


def test_a_bursty_fleet_keeps_the_nodes_its_last_burst_asked_for() -> None:
    """The step asks for 40/s over 4.4 * 0.9 a replica: 11 replicas on 6 nodes (a step's
    replicas use the room there is); the long window times the factor (9/s) needs 2 nodes. Without the rule the start's
    nodes go to 2 once the keep time (480 s before any gap is seen) has passed since t = 0;
    with it the 6 the burst asked for are kept for the keep time after the burst."""
    off = _run(ON, 600)
    on = _run(KEEP, 600)
    assert max(d.recommended for d in on[200:206]) >= 11
    assert off[-1].nodes <= 2
    assert any(d.reason is Reason.RELEASE_NODE for d in off)
    assert on[-1].nodes == 6
    assert on[-1].reason is Reason.KEEP_NODE
    assert "6 asked for by a burst in the last 480s" in on[-1].detail
    # and released once the keep time after the burst has passed
    later = _run(KEEP, 700)
    assert later[-1].nodes <= 2


def test_a_smooth_fleet_keeps_nothing_for_its_bursts() -> None:
    """The same sequence with a burst factor within the headroom (1.4): not bursty, the nodes
    go as without the rule."""
    state = PolicyState.initial(12, 6)
    decision = None
    for t in range(601):
        burst = 200 <= t <= 205
        o = obs(
            float(t),
            arrival_rate_short=4.0 if burst else 0.5,
            arrival_rate_long=3.0 if burst else 0.5,
            arrival_step_rate=40.0 if burst else None,
            burst_factor=1.4,
        )
        decision, state = decide(o, state, KEEP, float(t))
    assert decision is not None
    assert decision.nodes <= 2
