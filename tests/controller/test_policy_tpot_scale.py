"""The TPOT limit scaled by the prefill-stall model, not by objective / TPOT p95: a table of
`controller.policy.tpot_scale`, the state's token-alone time, and the 70B code 1x burst at
570 s replayed with a fake `now` (`controller.policy.decide`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from controller.policy import Observation, PolicyState, Reason, decide, tpot_scale
from controller.state import ClusterCounts, StateStore
from surgescale.events import Event, EventType
from tests.controller.specs import TP4_NODE, observation

M = "llama3-70b"
SPEC = replace(TP4_NODE, max_replicas=42)


OBS: dict[str, Any] = {
    "queue_depth": 0,
    "in_flight": 40,
    "ready_replicas": 4,
    "starting_replicas": 0,
    "arrival_rate_short": 6.0,
    "arrival_rate_long": 6.0,
    "arrival_short_window_s": 2.0,
    "service_rate_per_replica": 400.0,
    "ttft_p95_s": 0.5,
    "tpot_p95_s": 0.5,
    "concurrency_per_replica": 256,
    "stall_rate_per_replica": 4.5,
    "tpot_base_s": 0.018,
}
"""This file's observation before what a test changes (`specs.observation`)."""


def obs(now: float, **kw: Any) -> Observation:
    return observation(now, OBS, **kw)


@pytest.mark.parametrize(
    ("spec_kw", "obs_kw", "expected"),
    [
        # far above the objective: the prefill share is near 1, the stall model moves the rate
        # by (1 - 18/50) / (1 - 18/500) = 0.66, the proportional scale by 50/500 = 0.1
        pytest.param({}, {}, 0.64 / 0.964, id="500 ms: stall model"),
        pytest.param({"tpot_limit_stall": False}, {}, 0.1, id="500 ms: rule off"),
        pytest.param({}, {"tpot_base_s": None}, 0.1, id="token alone unknown: proportional"),
        pytest.param({}, {"tpot_p95_s": 0.05}, 1.0, id="at the objective both give 1"),
        pytest.param({}, {"tpot_p95_s": 0.06}, 0.64 / (1 - 0.018 / 0.06), id="60 ms"),
        # below the objective the limit is above the rate today (and only binds below mu)
        pytest.param({}, {"tpot_p95_s": 0.03}, 0.64 / 0.4, id="30 ms"),
        pytest.param({}, {"tpot_p95_s": 0.015}, 0.05 / 0.015, id="p95 below the token alone"),
        pytest.param({}, {"tpot_base_s": 0.06}, 0.1, id="decode alone over the objective"),
    ],
)
def test_tpot_scale_table(spec_kw: dict[str, Any], obs_kw: dict[str, Any], expected: float) -> None:
    assert tpot_scale(obs(0.0, **obs_kw), replace(SPEC, **spec_kw)) == pytest.approx(expected)


def test_state_reports_a_token_alone_as_the_p10_of_recent_tpots() -> None:
    store = StateStore()
    store.ingest([ev(EventType.SNAPSHOT, queue_depth=0, in_flight=0, interval_ms=1000)], 0.0)
    tpots = [18.0] * 2 + [40.0] * 8 + [300.0] * 10  # p10 of 20 is the 2nd smallest
    store.ingest(
        [
            ev(EventType.COMPLETE, f"r{i}", tpot_ms=t, e2e_ms=5000.0, queue_ms=0.0)
            for i, t in enumerate(tpots)
        ],
        10.0,
    )
    o = store.model(M).observe(
        10.0, cluster=ClusterCounts(ready_replicas=4), concurrency_per_replica=None
    )
    assert o.tpot_base_s == pytest.approx(0.018, rel=0.02)  # a sketch quantile


def ev(kind: EventType, rid: str = "", **kw: Any) -> Event:
    return Event(type=kind, model=M, gateway="g1", ts_ms=0, request_id=rid, **kw)


# 70B code 1x at 574-580 s (the decision log of main at d6de4cb): 4 Ready replicas on 2 nodes,
# a burst of long prompts; the short window falls from 39.5 to 6.5/s as it passes, the long
# window climbs from 4.6 to 5.9/s, the TPOT p95 of the completions climbs from 116 to 500 ms
# while the in-flight requests drain; a token alone takes 17.8 ms.
BURST = [
    (574.05, 39.5, 4.58, 105, 0.116),
    (576.54, 32.5, 5.82, 168, 0.239),
    (576.93, 25.5, 5.87, 168, 0.298),
    (577.11, 21.0, 5.72, 167, 0.317),
    (577.64, 13.0, 5.75, 153, 0.379),
    (578.14, 8.5, 5.77, 98, 0.436),
    (578.65, 5.5, 5.87, 78, 0.463),
    (579.18, 6.5, 5.93, 56, 0.502),
]


def _replay(spec: Any) -> list[tuple[int, int, Reason]]:
    state = PolicyState.initial(4, 2)
    out = []
    for now, short, long, in_flight, p95 in BURST:
        o = obs(
            now,
            arrival_rate_short=short,
            arrival_rate_long=long,
            in_flight=in_flight,
            tpot_p95_s=p95,
            tpot_base_s=0.0178,
            starting_replicas=max(state.replicas - 4, 0),
        )
        d, state = decide(o, state, spec, now)
        out.append((d.replicas, d.nodes, d.reason))
    return out


def test_a_burst_that_stalls_four_replicas_does_not_buy_the_bound() -> None:
    """Sized proportionally, the need is the Ready replicas times p95 / objective whatever
    the rate (4 x 500 / 50 = 40): main bought 21 nodes at 579 s, Ready at ~820 s after the
    burst, and held ~17 GPU-h of them. Under the stall model the same TPOT p95 says the
    replicas are at most 1 / (1 - 18/50) = 1.6 times too few for the rate that lasted."""
    got = _replay(SPEC)
    assert max(n for _, n, _ in got) <= 5
    assert got[-1][1] <= 5
    off = _replay(replace(SPEC, tpot_limit_stall=False))
    assert off[-1][:2] == (42, 21)
    assert Reason.TPOT_LIMIT in {r for _, _, r in off}


def test_the_detail_says_how_the_tpot_limit_was_scaled() -> None:
    o = obs(0.0, arrival_rate_short=20.0, arrival_rate_long=20.0, tpot_p95_s=0.1)
    d, _ = decide(o, PolicyState.initial(4, 2), replace(SPEC, rate_headroom=0.0), 0.0)
    assert d.reason is Reason.TPOT_LIMIT
    assert d.tpot_rate == pytest.approx(20 / 4 * (0.64 / (1 - 0.018 / 0.1)) / 0.9)
    assert "mu limited by TPOT p95 100.0ms (x0.78, a token alone 18.0ms)" in d.detail
