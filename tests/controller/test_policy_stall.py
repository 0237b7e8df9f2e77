"""A replica's capacity under the TPOT objective when prefills stall decode (while the replicas
run too few requests for their TPOT p95 to judge), and a capacity
measured at a collapsed concurrency not reused: tables and time sequences with a fake `now`
(`controller.stall`, `controller.state`, `controller.policy.decide`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from controller.policy import Observation, PolicyState, Reason, decide, prefill_stall_rate
from controller.stall import stall_rate
from controller.state import ClusterCounts, StateStore
from surgescale.events import Event, EventType
from tests.controller.specs import TP4_NODE, observation

M = "llama3-70b"
SPEC = replace(TP4_NODE, max_replicas=116)


@pytest.mark.parametrize(
    ("base", "rate", "prompt", "slo", "expected"),
    [
        # 70B TP4 code: 18 ms a token alone, 14k prompt tokens/s, 2,048-token prompts
        pytest.param(0.018, 14_000.0, 2048.0, 0.05, 0.64 * 14_000 / 2048, id="70b code"),
        pytest.param(0.025, 14_000.0, 2048.0, 0.05, 0.5 * 14_000 / 2048, id="slower decode"),
        pytest.param(0.018, 14_000.0, 512.0, 0.05, 0.64 * 14_000 / 512, id="short prompts"),
        pytest.param(0.05, 14_000.0, 2048.0, 0.05, None, id="decode alone at the objective"),
        pytest.param(0.018, None, 2048.0, 0.05, None, id="no prefill rate yet"),
        pytest.param(0.018, 14_000.0, None, 0.05, None, id="no prompt sizes"),
        pytest.param(None, 14_000.0, 2048.0, 0.05, None, id="no TPOT yet"),
        pytest.param(0.018, 14_000.0, 2048.0, None, None, id="no TPOT objective"),
    ],
)
def test_stall_rate_table(
    base: float | None,
    rate: float | None,
    prompt: float | None,
    slo: float | None,
    expected: float | None,
) -> None:
    got = stall_rate(
        base_tpot_s=base, prefill_tokens_per_s=rate, mean_prompt_tokens=prompt, tpot_slo_s=slo
    )
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def ev(kind: EventType, rid: str = "", **kw: Any) -> Event:
    return Event(type=kind, model=M, gateway="g1", ts_ms=0, request_id=rid, **kw)


def _code_requests(store: StateStore, *, start: int, seconds: int, ready: int) -> None:
    """Each second two 2,048-token prompts, prefilled at 14k tokens/s (first token 146 ms after
    dispatch, after 50 ms in the queue), decoding at 18 ms a token; one a second waits behind
    another's prefill (half the rate)."""
    model = store.model(M)
    for s in range(start, start + seconds):
        t = float(s)
        for i, prefill_s in enumerate((2048 / 14_000, 2 * 2048 / 14_000)):
            rid = f"r{s}-{i}"
            store.ingest([ev(EventType.ENQUEUE, rid, prompt_tokens=2048)], t)
            store.ingest([ev(EventType.DISPATCH, rid, pod="p0", queue_ms=50.0)], t + 0.05)
            ttft_ms = 50.0 + prefill_s * 1000.0
            store.ingest([ev(EventType.FIRST_TOKEN, rid, ttft_ms=ttft_ms)], t + 0.5)
            store.ingest(
                [
                    ev(
                        EventType.COMPLETE,
                        rid,
                        output_tokens=20,
                        tpot_ms=18.0,
                        queue_ms=50.0,
                        e2e_ms=ttft_ms + 19 * 18.0,
                    )
                ],
                t + 0.9,
            )
        model.sample(t + 0.95, ready_replicas=ready, concurrency_per_replica=256)


def _observe(store: StateStore, now: float, ready: int) -> Observation:
    return store.model(M).observe(
        now,
        cluster=ClusterCounts(ready_replicas=ready),
        concurrency_per_replica=None,
        tpot_slo_s=0.05,
    )


def test_state_measures_the_prefill_rate_and_gives_the_stall_rate() -> None:
    store = StateStore()
    store.ingest([ev(EventType.SNAPSHOT, queue_depth=0, in_flight=0, interval_ms=1000)], 0.0)
    _code_requests(store, start=1, seconds=30, ready=4)
    o = _observe(store, 31.0, 4)
    # p90 of the per-request prefill rates is the solo rate (14k tokens/s); base TPOT 18 ms
    assert o.stall_rate_per_replica == pytest.approx((1 - 0.018 / 0.05) * 14_000 / 2048, rel=0.03)
    # without a TPOT objective there is nothing to size by
    model = store.model(M)
    plain = model.observe(
        31.0, cluster=ClusterCounts(ready_replicas=4), concurrency_per_replica=None
    )
    assert plain.stall_rate_per_replica is None


def test_capacity_measured_while_full_at_a_collapsed_concurrency_is_not_reused() -> None:
    """70B code 4x at 217 s: the learned concurrency fell to 1 for a few evaluations, 54
    requests on 58 replicas counted as full, and the 0.88 completions/s per replica measured
    then sized every later burst. Back at 256 that figure is not a capacity."""
    store = StateStore()
    model = store.model(M)
    for s in range(11):
        t = float(s)
        if s:
            store.ingest(
                [ev(EventType.COMPLETE, f"c{s}-{i}", e2e_ms=500.0, queue_ms=0.0) for i in range(2)],
                t,
            )
        store.ingest([ev(EventType.SNAPSHOT, queue_depth=0, in_flight=2)], t)
        model.sample(t, ready_replicas=2, concurrency_per_replica=1)  # "full" at 1 a replica
    assert model.service_rate(10.0, 1) == pytest.approx(1.0)  # 2/s on 2 replicas, measured
    # at concurrency 256 the replicas were never full: Little's law (256 / 0.5 s)
    assert model.service_rate(10.0, 256) == pytest.approx(512.0)


OBS: dict[str, Any] = {
    "queue_depth": 0,
    "in_flight": 20,
    "ready_replicas": 44,
    "starting_replicas": 0,
    "arrival_rate_short": 20.0,
    "arrival_rate_long": 20.0,
    "arrival_short_window_s": 2.0,
    "service_rate_per_replica": 400.0,
    "ttft_p95_s": 0.3,
    "tpot_p95_s": 0.02,
    "concurrency_per_replica": 256,
    "stall_rate_per_replica": 4.4,
}
"""This file's observation before what a test changes (`specs.observation`)."""


def obs(now: float, **kw: Any) -> Observation:
    return observation(now, OBS, **kw)


@pytest.mark.parametrize(
    ("spec_kw", "obs_kw", "mu", "stall"),
    [
        pytest.param({}, {}, 4.4, 4.4, id="stall rate below Little's law: sizes"),
        pytest.param({}, {"service_rate_per_replica": 2.0}, 2.0, None, id="observed lower"),
        pytest.param({}, {"stall_rate_per_replica": None}, 400.0, None, id="not known"),
        pytest.param({"prefill_stall_limit": False}, {}, 400.0, None, id="rule off"),
        pytest.param({"tpot_slo_s": None}, {}, 400.0, None, id="no TPOT objective"),
        # 200 in flight on 44 replicas: their own TPOT p95 (20 ms of 50) judges the rate
        # (20/s / 44 * 50 / 20 / 0.9 = 1.26/s a replica), not the stall model
        pytest.param({}, {"in_flight": 200}, 20 / 44 * 2.5 / 0.9, None, id="TPOT p95 judges"),
    ],
)
def test_service_rate_limited_by_prefill_stalls_table(
    spec_kw: dict[str, Any], obs_kw: dict[str, Any], mu: float, stall: float | None
) -> None:
    spec = replace(SPEC, **spec_kw)
    o = obs(0.0, **obs_kw)
    expected_stall = None if stall is None else o.stall_rate_per_replica
    if stall is not None:
        assert prefill_stall_rate(o, spec) == pytest.approx(stall)
    decision, _ = decide(o, PolicyState.initial(44, 22), spec, 0.0)
    assert decision.service_rate == pytest.approx(mu)
    assert decision.stall_rate == expected_stall


def test_a_sustained_climb_buys_nodes_for_the_stall_rate() -> None:
    """20/s for a minute on 10 nodes with Little's law at 400/s a replica (no headroom): each
    replica takes 4.4/s before TPOT reaches 50 ms, so 20/s at 90 % utilization needs
    ceil(20 / 3.96) = 6 replicas (1 without the limit); a climb to 90/s that lasts needs
    ceil(90 / 3.96) = 23 replicas on 12 nodes: bought, and the reason says why."""
    spec = replace(SPEC, rate_headroom=0.0)
    state = PolicyState.initial(20, 10)
    decision, state = decide(obs(0.0, ready_replicas=20), state, spec, 0.0)
    assert decision.recommended == 6
    climb = obs(1.0, ready_replicas=20, arrival_rate_long=90.0, arrival_rate_short=90.0)
    decision, state = decide(climb, state, spec, 1.0)
    assert decision.reason is Reason.PREFILL_STALL
    assert "mu limited by prefill stalls" in decision.detail
    assert decision.recommended == 23
    assert decision.nodes == 12
