"""The TPOT limit on a replica's service rate and the headroom under node billing: table
decisions and time sequences with a fake `now` (`controller.policy.tpot_rate`, `headroom`)."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from controller.policy import (
    Billing,
    Observation,
    PolicySpec,
    PolicyState,
    Reason,
    decide,
    headroom,
    tpot_rate,
)
from tests.controller.specs import TP4_NODE, observation

SPEC = TP4_NODE
"""70B TP4-like: two replicas per node, a TPOT objective of 50 ms, default headroom (50 %)."""


OBS: dict[str, Any] = {
    "queue_depth": 0,
    "in_flight": 0,
    "ready_replicas": 4,
    "starting_replicas": 0,
    "arrival_rate_short": 20.0,
    "arrival_rate_long": 20.0,
    "service_rate_per_replica": 8.0,
    "ttft_p95_s": 0.3,
    "tpot_p95_s": None,
}
"""This file's observation before what a test changes (`specs.observation`)."""


def obs(now: float, **kw: Any) -> Observation:
    return observation(now, OBS, **kw)


@pytest.mark.parametrize(
    ("kw", "spec_kw", "expected"),
    [
        pytest.param(
            {"tpot_p95_s": 0.04, "in_flight": 148},
            {},
            20 / 4 * 0.05 / 0.04 / 0.9,
            id="rate per replica times objective / p95, over the utilization",
        ),
        pytest.param(
            {"tpot_p95_s": 0.10, "in_flight": 148},
            {},
            20 / 4 * 0.5 / 0.9,
            id="above the objective: less than today's rate per replica",
        ),
        pytest.param({"tpot_p95_s": None, "in_flight": 148}, {}, None, id="no TPOT p95 yet"),
        pytest.param(
            {"tpot_p95_s": 0.04, "in_flight": 8},
            {},
            None,
            id="2 per replica say nothing about the limit",
        ),
        pytest.param(
            {"tpot_p95_s": 0.04, "in_flight": 148, "ready_replicas": 0},
            {},
            None,
            id="no Ready replica",
        ),
        pytest.param(
            {"tpot_p95_s": 0.04, "in_flight": 148},
            {"tpot_slo_s": None},
            None,
            id="no TPOT objective",
        ),
        pytest.param(
            {"tpot_p95_s": 0.04, "in_flight": 148}, {"tpot_limit": False}, None, id="rule off"
        ),
    ],
)
def test_tpot_rate_table(
    kw: dict[str, Any], spec_kw: dict[str, Any], expected: float | None
) -> None:
    got = tpot_rate(obs(0.0, **kw), replace(SPEC, **spec_kw), 20.0)
    assert got == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("rate", "spec_kw", "expected"),
    [
        pytest.param(20.0, {}, 30.0, id="node billing: 50 % above the sustained rate"),
        pytest.param(20.0, {"rate_headroom": 0.25}, 25.0, id="as configured"),
        pytest.param(20.0, {"billing": Billing.GPU}, None, id="GPU billing: today's behaviour"),
        pytest.param(20.0, {"rate_headroom": 0.0}, None, id="off"),
        pytest.param(0.0, {}, None, id="no load: nothing to pad"),
    ],
)
def test_headroom_table(rate: float, spec_kw: dict[str, Any], expected: float | None) -> None:
    assert headroom(rate, replace(SPEC, **spec_kw)) == expected


def test_an_optimistic_service_rate_is_held_to_what_tpot_allows() -> None:
    """The learned concurrency says a replica serves 8/s; at 5/s per replica the TPOT p95 is
    already 45 ms of 50: sized with 8/s, four replicas look like room for 29/s, but what TPOT
    allows is ~5.6/s a replica, so 20/s needs 4 and the limit is in the decision."""
    spec = replace(SPEC, rate_headroom=0.0)
    o = obs(0.0, in_flight=148, tpot_p95_s=0.045)
    d, _ = decide(o, PolicyState.initial(4, 2), spec, 0.0)
    assert d.tpot_rate == pytest.approx(20 / 4 * 0.05 / 0.045 / 0.9)
    assert d.service_rate == pytest.approx(d.tpot_rate)
    assert (d.replicas, d.reason) == (4, Reason.STEADY)
    # TPOT above the objective at 24/s: the replicas serve less than they take, one node more
    d, _ = decide(
        replace(o, arrival_rate_short=24.0, arrival_rate_long=24.0, tpot_p95_s=0.06),
        PolicyState.initial(4, 2),
        spec,
        0.0,
    )
    assert (d.replicas, d.nodes, d.reason) == (6, 3, Reason.TPOT_LIMIT)
    assert "TPOT p95 60.0ms" in d.detail
    # the same observation without the rule: the learned 8/s says four are plenty
    d, _ = decide(
        replace(o, arrival_rate_short=24.0, arrival_rate_long=24.0, tpot_p95_s=0.06),
        PolicyState.initial(4, 2),
        replace(spec, tpot_limit=False),
        0.0,
    )
    assert (d.replicas, d.reason, d.tpot_rate) == (4, Reason.STEADY, None)


def test_a_low_tpot_never_raises_the_service_rate() -> None:
    d, _ = decide(obs(0.0, in_flight=40, tpot_p95_s=0.01), PolicyState.initial(4, 2), SPEC, 0.0)
    assert d.tpot_rate is None
    assert d.service_rate == 8.0


def climb(spec: PolicySpec, *, start: float = 300.0) -> list[tuple[float, int, int, Reason]]:
    """20 req/s, then 20 -> 31 req/s over 180 s from `start` (the shape of the conv trace at 4x),
    on a cluster model where a node asked for serves 240 s later. The replicas' TPOT p95 grows
    with the rate per Ready replica (45 ms at 5.5/s). Returns (t, ready, desired, reason)."""
    state = PolicyState.initial(4, 2)
    ready_at: list[tuple[float, int]] = []  # (when, replicas) of asked-for capacity
    ready = 4
    out = []
    for step in range(0, 900):
        t = float(step)
        rate = 20.0 + 11.0 * min(max(t - start, 0.0) / 180.0, 1.0)
        for when, n in list(ready_at):
            if when <= t:
                ready = max(ready, n)
                ready_at.remove((when, n))
        per_replica = rate / ready
        o = obs(
            t,
            arrival_rate_short=rate,
            arrival_rate_long=rate,
            ready_replicas=ready,
            in_flight=int(per_replica * 7),
            tpot_p95_s=0.045 * per_replica / 5.5,
        )
        d, state = decide(o, state, spec, t)
        if d.replicas > ready and not any(n >= d.replicas for _, n in ready_at):
            ready_at.append((t + 240.0, d.replicas))
        out.append((t, ready, d.replicas, d.reason))
    return out


def test_headroom_is_bought_before_a_climb_a_new_node_could_not_serve() -> None:
    """With the headroom, capacity for 30/s is there before the climb starts; without it the
    fleet follows the climb a reacquire time late, and the TPOT p95 is above the objective for
    minutes (the rate per Ready replica above the 6.1/s where it crosses 50 ms)."""
    with_headroom = climb(SPEC)
    without = climb(replace(SPEC, rate_headroom=0.0))

    def overloaded(run: list[tuple[float, int, int, Reason]]) -> int:
        return sum(
            1
            for t, ready, _, _ in run
            if (20.0 + 11.0 * min(max(t - 300, 0) / 180, 1)) / ready > 6.1
        )

    assert any(r is Reason.HEADROOM for _, _, _, r in with_headroom)
    ready_at_start = next(ready for t, ready, _, _ in with_headroom if t == 300.0)
    assert ready_at_start >= 6  # 20/s * 1.5 at ~5.6/s a replica: bought in the first minutes
    assert overloaded(with_headroom) < overloaded(without)
    assert overloaded(without) >= 120


def test_headroom_does_not_flap_on_poisson_noise() -> None:
    """A steady 20 req/s with Poisson noise in the short window and noisy TPOT p95: the
    headroom buys its nodes once and the decision then holds (no scale event after the first
    minutes)."""
    rng = random.Random(7)
    state = PolicyState.initial(4, 2)
    changes = []
    last = state.replicas
    for step in range(0, 1800):
        t = float(step)
        short = rng.gauss(20.0, (20.0 / 2.0) ** 0.5)
        o = obs(
            t,
            arrival_rate_short=max(short, 0.0),
            arrival_rate_long=rng.gauss(20.0, 0.5),
            arrival_short_window_s=2.0,
            ready_replicas=state.replicas,
            in_flight=7 * 20 // max(state.replicas, 1),
            tpot_p95_s=rng.uniform(0.03, 0.04),
        )
        d, state = decide(o, state, SPEC, t)
        if d.replicas != last:
            changes.append((t, last, d.replicas))
            last = d.replicas
    assert all(t < 120.0 for t, _, _ in changes), changes


def test_gpu_billing_has_no_headroom() -> None:
    spec = replace(SPEC, billing=Billing.GPU)
    d, _ = decide(obs(0.0), PolicyState.initial(4, 2), spec, 0.0)
    assert d.headroom_rate is None
    assert d.recommended == 3  # 20/s at 8/s, 90 %
    d, _ = decide(obs(0.0), PolicyState.initial(4, 2), SPEC, 0.0)
    assert (d.headroom_rate, d.recommended) == (30.0, 5)


def test_no_headroom_is_piled_on_while_capacity_is_starting() -> None:
    """At a climb's top, with the replicas the headroom bought still loading, a higher rate does
    not buy more headroom on top (that node would be Ready after the load fell)."""
    o = obs(
        0.0,
        arrival_rate_short=28.0,
        arrival_rate_long=28.0,
        ready_replicas=6,
        service_rate_per_replica=5.0,
    )
    d, _ = decide(o, PolicyState.initial(8, 4), SPEC, 0.0)
    assert (d.headroom_rate, d.replicas, d.reason) == (42.0, 10, Reason.HEADROOM)
    d, _ = decide(replace(o, starting_replicas=2), PolicyState.initial(8, 4), SPEC, 0.0)
    assert d.headroom_rate is None
    assert d.replicas == 8  # 28/s at 5/s, 90 %: 7 needed; the 8 asked for stay
