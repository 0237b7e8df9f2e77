"""The in-flight floor (`controller.policy.in_flight_floor`): a table, and a time sequence with a
fake `now` of a burst of long prompts at a learned concurrency of 1 (70B code 4x's first minute)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from controller.policy import (
    Observation,
    PolicySpec,
    PolicyState,
    Reason,
    decide,
    in_flight_floor,
)
from tests.controller.specs import TP4_NODE, observation

SPEC = replace(TP4_NODE, max_replicas=116, max_num_seqs=256, tpot_limit=False, rate_headroom=0.0)
"""70B TP4-like (two replicas per node), concurrency learned from a 50 ms TPOT objective."""


OBS: dict[str, Any] = {
    "queue_depth": 0,
    "in_flight": 0,
    "ready_replicas": 12,
    "starting_replicas": 0,
    "arrival_rate_short": 3.0,
    "arrival_rate_long": 3.0,
    "service_rate_per_replica": 3.0,
    "ttft_p95_s": 0.5,
    "tpot_p95_s": None,
    "pod_cap": 256,
}
"""This file's observation before what a test changes (`specs.observation`)."""


def obs(now: float, **kw: Any) -> Observation:
    return observation(now, OBS, **kw)


@pytest.mark.parametrize(
    ("in_flight", "learned", "pod_cap", "fixed", "expected"),
    [
        # learned concurrency: the requests a replica is let run, not the learned value
        pytest.param(121, 1, 256, None, 1, id="learned-1-cap-256"),
        pytest.param(600, 1, 256, None, 3, id="learned-beyond-one-cap"),
        pytest.param(121, 1, None, None, 1, id="learned-no-cap-max-num-seqs"),
        pytest.param(121, 1, 16, None, 8, id="learned-small-cap"),
        pytest.param(0, 1, 256, None, 0, id="nothing-in-flight"),
        # a fixed concurrency is the operator's word: the floor stays at it
        pytest.param(200, 32, 32, 32, 7, id="fixed-32"),
        pytest.param(200, 16, 256, 16, 13, id="fixed-16-cap-256"),
    ],
)
def test_in_flight_floor_table(
    in_flight: int, learned: int, pod_cap: int | None, fixed: int | None, expected: int
) -> None:
    spec = PolicySpec(concurrency_per_replica=fixed, max_num_seqs=256)
    o = obs(0.0, in_flight=in_flight, concurrency_per_replica=learned, pod_cap=pod_cap)
    assert in_flight_floor(o, spec, learned) == expected


def test_burst_at_learned_concurrency_1_buys_no_nodes() -> None:
    """12 Ready replicas on 6 nodes; a burst puts 50, 90, then 121 requests in flight in 10 s
    while the learned concurrency is 1. The requests are running on the Ready replicas; the
    rates (3/s at 3/s per replica) ask for 2. The fleet stays on its 6 nodes, and every
    decision says what the floor was."""
    state = PolicyState.initial(12, 6)
    for now, in_flight in ((50.0, 50), (55.0, 90), (60.0, 121), (65.0, 30)):
        o = obs(now, in_flight=in_flight, concurrency_per_replica=1)
        d, state = decide(o, state, SPEC, now)
        assert d.valid
        assert d.concurrency == 1
        assert d.in_flight_floor == 1
        assert (d.replicas, d.nodes) == (12, 6), d
        assert d.reason is not Reason.IN_FLIGHT


def test_fixed_concurrency_floor_scales_up_as_in_flight() -> None:
    """The same burst at a fixed 8 per replica (the operator's word, the gateway caps a pod at
    8): 121 in flight need 16 replicas, 8 nodes, and the decision says `InFlight`."""
    spec = PolicySpec(**{**_fields(SPEC), "concurrency_per_replica": 8})
    state = PolicyState.initial(12, 6)
    o = obs(60.0, in_flight=121, concurrency_per_replica=None, pod_cap=8)
    d, _ = decide(o, state, spec, 60.0)
    assert (d.replicas, d.nodes, d.reason) == (16, 8, Reason.IN_FLIGHT), d
    assert d.in_flight_floor == 16
    assert "121 in flight need 16 replicas" in d.detail


def _fields(spec: PolicySpec) -> dict[str, Any]:
    return {f: getattr(spec, f) for f in spec.__dataclass_fields__}
