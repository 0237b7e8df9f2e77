"""The pure policy: table-driven single decisions, then time-sequence scenarios with a fake `now`."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

import pytest

from controller.policy import (
    Billing,
    Decision,
    Observation,
    PolicySpec,
    PolicyState,
    Reason,
    decide,
    nodes_for,
    service_rate,
)
from controller.retention import keep_seconds, worth_buying
from tests.controller.specs import observation

R = Reason

SPEC = PolicySpec(
    min_replicas=0,
    max_replicas=20,
    ttft_slo_s=1.0,
    concurrency_per_replica=32,
    scale_down_delay_s=60.0,
    scale_down_max_step=1,
    scale_down_period_s=10.0,
    scale_to_zero_idle_s=120.0,
    gpus_per_replica=2,
    gpus_per_node=8,
    billing=Billing.GPU,
    drain_horizon_s=1.0,
    arrival_noise_z=2.0,
)
"""The per-GPU rules: GPU billing, a queue drained within the TTFT SLO."""


OBS: dict[str, Any] = {
    "queue_depth": 0,
    "in_flight": 0,
    "ready_replicas": 0,
    "starting_replicas": 0,
    "arrival_rate_short": 0.0,
    "arrival_rate_long": 0.0,
    "service_rate_per_replica": 10.0,
    "ttft_p95_s": None,
    "tpot_p95_s": None,
    "last_enqueue_at": None,
}
"""This file's observation before what a test changes (`specs.observation`)."""


def obs(now: float, **kw: Any) -> Observation:
    return observation(now, OBS, **kw)


def warm(replicas: int, now: float = 0.0, spec: PolicySpec = SPEC, **kw: Any) -> PolicyState:
    """A state that has been at `replicas` (and busy) long enough to have a history."""
    state = PolicyState.initial(replicas)
    o = obs(now, ready_replicas=replicas, in_flight=1 if replicas else 0, **kw)
    _, state = decide(o, state, replace(spec, scale_down_delay_s=0.0), now)
    return replace(state, replicas=replicas, window=((now, replicas),))


@pytest.mark.parametrize(
    ("start", "observation", "expected_replicas", "reason"),
    [
        pytest.param(
            2,
            obs(100, ready_replicas=2, arrival_rate_short=15.0, in_flight=20),
            2,
            R.STEADY,
            id="steady",
        ),
        # 45/s at mu 10 and utilization 0.9 -> ceil(5.0) = 5, plus 20 queued to drain in 1 s -> +2
        pytest.param(
            2,
            obs(100, ready_replicas=2, arrival_rate_short=45.0, queue_depth=20),
            7,
            R.SCALE_UP,
            id="burst-up",
        ),
        pytest.param(
            2,
            obs(100, ready_replicas=2, arrival_rate_short=1e6),
            20,
            R.SCALE_UP,
            id="capped-at-max",
        ),
        pytest.param(0, obs(100, queue_depth=1), 1, R.SCALE_UP, id="wake-on-queue"),
        pytest.param(0, obs(100, last_enqueue_at=99.9), 1, R.SCALE_UP, id="wake-on-enqueue"),
        pytest.param(3, obs(100, has_data=False), 3, R.NO_DATA, id="no-data-holds"),
        pytest.param(3, obs(90, ready_replicas=3), 3, R.STALE_DATA, id="stale-holds"),
        pytest.param(
            3, obs(90, ready_replicas=3, queue_depth=500), 3, R.STALE_DATA, id="stale-no-scale-up"
        ),
        # in-flight need: 200 in flight at 32 per replica -> 7 even with no arrivals
        pytest.param(
            2, obs(100, ready_replicas=2, in_flight=200), 7, R.IN_FLIGHT, id="in-flight-need"
        ),
    ],
)
def test_single_decision(
    start: int, observation: Observation, expected_replicas: int, reason: Reason
) -> None:
    state = warm(start, now=99.0)
    decision, _ = decide(observation, state, SPEC, 100.0)
    assert decision.replicas == expected_replicas, decision
    assert decision.reason is reason
    assert decision.valid == (reason not in (R.NO_DATA, R.STALE_DATA))
    assert decision.nodes == (nodes_for(expected_replicas, SPEC) if decision.valid else state.nodes)


@pytest.mark.parametrize(
    ("replicas", "gpr", "gpn", "headroom", "nodes"),
    [
        pytest.param(0, 1, 8, 0, 0, id="zero"),
        pytest.param(1, 1, 8, 0, 1, id="one"),
        pytest.param(8, 1, 8, 0, 1, id="full-node"),
        pytest.param(9, 1, 8, 0, 2, id="spill"),
        pytest.param(3, 4, 8, 0, 2, id="tp4"),
        pytest.param(0, 2, 8, 1, 1, id="headroom-at-zero"),
        pytest.param(4, 2, 8, 1, 2, id="headroom-spills"),
    ],
)
def test_nodes_for(replicas: int, gpr: int, gpn: int, headroom: int, nodes: int) -> None:
    spec = PolicySpec(gpus_per_replica=gpr, gpus_per_node=gpn, headroom_replicas=headroom)
    assert nodes_for(replicas, spec) == nodes


def test_prior_service_rate_before_observation() -> None:
    o = obs(0, service_rate_per_replica=None)
    assert service_rate(o, SPEC) == pytest.approx(32 / 4.0)
    assert service_rate(obs(0, service_rate_per_replica=3.0), SPEC) == 3.0
    d, _ = decide(replace(o, arrival_rate_short=16.0), PolicyState.initial(0), SPEC, 0.0)
    assert d.service_rate == pytest.approx(8.0)
    assert d.replicas == math.ceil(16.0 / (8.0 * 0.9))


def run(
    steps: list[tuple[float, Observation]], state: PolicyState, spec: PolicySpec = SPEC
) -> list[Decision]:
    out = []
    for now, o in steps:
        d, state = decide(o, state, spec, now)
        out.append(d)
    return out


def test_burst_scales_up_at_once_then_holds() -> None:
    state = warm(1, now=0.0)
    steps = [(1.0, obs(1.0, ready_replicas=1, arrival_rate_short=5.0, in_flight=10))]
    steps.append((1.05, obs(1.05, ready_replicas=1, arrival_rate_short=60.0, queue_depth=30)))
    ds = run(steps, state)
    assert ds[0].replicas == 1
    assert ds[1].replicas == math.ceil(60 / 9 + 30 / 10)  # 7 + 3 = 10, in one step
    assert ds[1].nodes == math.ceil(10 * 2 / 8)


def test_cold_start_counts_starting_replicas() -> None:
    """Queue growth that the starting replicas were sized for does not ask for more."""
    state = PolicyState.initial(0)
    d, state = decide(
        obs(0.0, queue_depth=5, arrival_rate_short=40.0, last_enqueue_at=0.0), state, SPEC, 0.0
    )
    first = d.replicas
    assert first == math.ceil(40 / 9 + 5 / 10)
    # 30 s of model load: nothing ready, queue piles up at the arrival rate, all `first` starting.
    for i in range(1, 301):
        t = i * 0.1
        o = obs(
            t,
            queue_depth=5 + int(40 * t),
            arrival_rate_short=40.0,
            starting_replicas=first,
            last_enqueue_at=t,
        )
        d, state = decide(o, state, SPEC, t)
        assert d.replicas == first, (t, d)
    # The arrival rate doubles: that is new demand and is served at once.
    d, state = decide(
        obs(
            30.1,
            queue_depth=5 + int(40 * 30.1),
            arrival_rate_short=80.0,
            starting_replicas=first,
            last_enqueue_at=30.1,
        ),
        state,
        SPEC,
        30.1,
    )
    assert d.replicas == math.ceil(80 / 9)


def test_slower_than_expected_service_scales_up() -> None:
    """A queue growing faster than the model predicts is unexplained and is drained."""
    state = warm(4, now=0.0)
    d, state = decide(obs(1.0, ready_replicas=4, arrival_rate_short=30.0), state, SPEC, 1.0)
    assert d.replicas == 4
    d, state = decide(
        obs(2.0, ready_replicas=4, arrival_rate_short=30.0, queue_depth=60), state, SPEC, 2.0
    )
    assert d.replicas == math.ceil(30 / 9 + 60 / 10)


def test_slow_decay_is_delayed_and_rate_limited() -> None:
    state = warm(6, now=0.0)
    replicas = []
    for i in range(1, 201):
        t = float(i)
        d, state = decide(
            obs(
                t,
                ready_replicas=state.replicas,
                arrival_rate_short=5.0,
                in_flight=5,
                last_enqueue_at=t,
            ),
            state,
            SPEC,
            t,
        )
        replicas.append(d.replicas)
    # No change before the 60 s delay has passed.
    assert all(r == 6 for r in replicas[:59])
    # Then one replica per 10 s period, down to the need (ceil(5/9) = 1).
    drops = [i + 1 for i in range(1, len(replicas)) if replicas[i] < replicas[i - 1]]
    assert all(replicas[i - 1] - replicas[i] <= 1 for i in range(1, len(replicas)))
    assert all(b - a >= 10 for a, b in itertools.pairwise(drops))
    assert replicas[-1] == 1
    assert drops[0] >= 60


def test_scale_down_waits_for_the_window_maximum() -> None:
    """Flapping input: a peak inside the delay window keeps the replicas."""
    state = warm(2, now=0.0)
    seen = []
    for i in range(1, 241):
        t = i * 0.5
        rate = 80.0 if (i // 20) % 2 == 0 else 2.0  # 10 s high, 10 s low, repeating
        d, state = decide(
            obs(t, ready_replicas=state.replicas, arrival_rate_short=rate, last_enqueue_at=t),
            state,
            SPEC,
            t,
        )
        seen.append(d.replicas)
    peak = math.ceil(80 / 9)
    assert max(seen) == peak
    first_peak = seen.index(peak)
    assert all(r == peak for r in seen[first_peak:])  # never flaps down between bursts


def test_scale_to_zero_after_idle_and_instant_wake() -> None:
    state = warm(1, now=0.0)
    t = 0.0
    zeroed_at: float | None = None
    while t < 200.0:
        t += 1.0
        d, state = decide(
            obs(t, ready_replicas=state.replicas, last_enqueue_at=0.0), state, SPEC, t
        )
        if t < 120.0:
            assert d.replicas == 1, (t, d)
        if zeroed_at is None and d.replicas == 0:
            zeroed_at = t
            assert d.nodes == 0
            assert d.reason is R.SCALE_TO_ZERO
    assert zeroed_at == 120.0
    # The first enqueue wakes it on the same evaluation.
    d, state = decide(obs(t + 0.01, last_enqueue_at=t + 0.005), state, SPEC, t + 0.01)
    assert d.replicas == 1
    assert d.nodes == 1


def test_min_replicas_blocks_scale_to_zero() -> None:
    spec = replace(SPEC, min_replicas=2)
    state = warm(2, now=0.0, spec=spec)
    for i in range(1, 400):
        d, state = decide(obs(float(i), ready_replicas=2), state, spec, float(i))
        assert d.replicas == 2


def test_missing_data_never_scales_down() -> None:
    state = warm(5, now=0.0)
    for i in range(1, 1000):
        t = float(i)
        # The last data point is from t=0 and said "idle": still no scale-down.
        d, state = decide(obs(0.0, ready_replicas=5), state, SPEC, t + 10.0)
        assert not d.valid
        assert d.replicas == 5
    d, state = decide(obs(0.0, has_data=False), state, SPEC, 2000.0)
    assert not d.valid
    assert d.replicas == 5


def test_no_scale_down_while_ttft_breaches_slo() -> None:
    state = warm(5, now=0.0)
    for i in range(1, 300):
        t = float(i)
        d, state = decide(
            obs(t, ready_replicas=5, arrival_rate_short=1.0, ttft_p95_s=2.5, last_enqueue_at=t),
            state,
            SPEC,
            t,
        )
        assert d.replicas == 5
    assert d.reason is R.HOLD_LATENCY


def test_fresh_state_waits_a_full_delay_before_scaling_down() -> None:
    """A new leader that finds 5 replicas does not cut them on its first, quiet observation."""
    state = PolicyState.initial(5)
    d, state = decide(obs(1000.0, ready_replicas=5, last_enqueue_at=1000.0), state, SPEC, 1000.0)
    assert d.replicas == 5
    d, state = decide(obs(1061.0, ready_replicas=5, last_enqueue_at=1061.0), state, SPEC, 1061.0)
    assert d.replicas == 4


def test_idle_overrides_a_rate_window_longer_than_the_idle_period() -> None:
    spec = replace(SPEC, scale_to_zero_idle_s=1.0)
    state = warm(2, now=0.0, spec=spec)
    # The short-window rate still shows the last arrivals, but nothing was enqueued for 1 s.
    d, state = decide(
        obs(1.5, ready_replicas=2, arrival_rate_short=5.0, last_enqueue_at=0.4), state, spec, 1.5
    )
    assert d.replicas == 0
    assert d.reason is R.SCALE_TO_ZERO


# ---- arrival rate used for sizing: the short window must beat Poisson noise -----------------


@pytest.mark.parametrize(
    ("short", "long", "window", "expected"),
    [
        (31.0, 22.0, 2.0, 3),  # noisy 2 s reading around a 22/s mean: 23.1/s sizes, not 31/s
        (31.0, 22.0, None, 4),  # no window length known: the short rate as is
        (39.0, 1.0, 2.0, 4),  # a real step (1 -> 39/s) still sizes at once: 30.2/s
        (0.0, 20.0, 2.0, 3),  # a quiet gap inside a busy minute: the long rate holds the floor
    ],
)
def test_sizing_arrival_table(
    short: float, long: float, window: float | None, expected: int
) -> None:
    o = obs(
        0.0,
        ready_replicas=1,
        in_flight=1,
        arrival_rate_short=short,
        arrival_rate_long=long,
        arrival_short_window_s=window,
    )
    d, _ = decide(o, warm(1), SPEC, 0.0)
    assert d.recommended == expected


def test_noisy_window_around_a_steady_mean_holds_the_size() -> None:
    """Readings 24-31/s around a steady 22/s (mu 10, util 0.9) never ask beyond 3 replicas."""
    state = warm(3)
    peak = 0
    for i, short in enumerate([24.0, 31.0, 27.0, 29.0, 22.0, 30.0, 25.0]):
        o = obs(
            float(i),
            ready_replicas=3,
            in_flight=40,
            arrival_rate_short=short,
            arrival_rate_long=22.0,
            arrival_short_window_s=2.0,
        )
        d, state = decide(o, state, SPEC, float(i))
        peak = max(peak, d.replicas)
    assert peak == 3


# ---- node billing: replicas on nodes that stay are free; a node goes only when it frees --------

NODE_SPEC = PolicySpec(
    min_replicas=0,
    max_replicas=12,
    concurrency_per_replica=32,
    scale_to_zero_idle_s=None,
    gpus_per_replica=1,
    gpus_per_node=4,
    billing=Billing.NODE,
    cold_start_s=60.0,
    node_boot_s=120.0,
    scale_down_period_s=10.0,
    rate_headroom=0.0,
    nodes_for_long_rate=False,
)
"""Four replicas per node; a release-and-return costs 2 * (60 + 120) = 360 node-seconds. No
headroom: these tests size nodes for today's rate (the headroom has its own tests,
`test_policy_headroom.py`), and for the short window's rate (nodes bought only for the
long-window rate, and the deferral that rule replaces: `test_policy_persistence.py`)."""


def demand(t: float, rate: float, ready: int) -> Observation:
    # mu 10/s, utilization 0.9: rate 30 -> 4 replicas (1 node), rate 60 -> 7 (2 nodes)
    return obs(t, ready_replicas=ready, arrival_rate_short=rate, in_flight=1, last_enqueue_at=t)


def test_node_billing_fills_the_node() -> None:
    d, _ = decide(demand(0.0, 5.0, 1), PolicyState.initial(1, 1), NODE_SPEC, 0.0)
    assert (d.replicas, d.nodes, d.reason) == (4, 1, R.FILL_NODES)


def test_node_release_only_when_a_node_frees() -> None:
    """Demand falls from two nodes' worth to 5 replicas (still two nodes): nothing goes. Then to
    one node's worth: the second node (and its replicas) go after the keep time, together."""
    state = PolicyState.initial(8, 2)
    seen: list[tuple[float, int, int]] = []
    t = 0.0
    for rate, until in [(60.0, 10.0), (40.0, 400.0), (20.0, 1000.0)]:
        while t < until:
            t += 1.0
            d, state = decide(demand(t, rate, state.replicas), state, NODE_SPEC, t)
            seen.append((t, d.replicas, d.nodes))
    assert {(r, n) for _, r, n in seen} == {(8, 2), (4, 1)}  # never a replica off a kept node
    released = next(t for t, r, _ in seen if r == 4)
    assert released - 400.0 >= 360.0  # kept for the rent-or-buy time before it goes
    assert released - 400.0 <= 362.0


def test_gpu_billing_scales_replicas_down_on_the_same_node() -> None:
    spec = replace(NODE_SPEC, billing=Billing.GPU, scale_down_delay_s=60.0)
    state = warm(8, spec=spec)
    for i in range(1, 200):
        d, state = decide(demand(float(i), 40.0, state.replicas), state, spec, float(i))
    assert d.replicas == 5  # today's behaviour: down to the need although the node stays
    assert d.nodes == 2


def _bursts(
    state: PolicyState,
    gap_s: float,
    count: int,
    spec: PolicySpec | None = None,
    burst_s: int = 30,
) -> tuple[PolicyState, list[Decision]]:
    """`count` cycles of a `burst_s` burst (two nodes' worth) then `gap_s` quiet (one node's
    worth); the decision at the first evaluation of each burst. Node buying is not deferred
    unless `spec` says so."""
    spec = spec or replace(NODE_SPEC, defer_short_bursts=False)
    t = state.last_now or 0.0
    firsts = []
    for _ in range(count):
        for i in range(burst_s):
            t += 1.0
            d, state = decide(demand(t, 60.0, state.replicas), state, spec, t)
            if i == 0:
                firsts.append(d)
        end = t + gap_s
        while t < end:
            t += 1.0
            d, state = decide(demand(t, 20.0, state.replicas), state, spec, t)
    return state, firsts


def test_burst_after_a_gap_is_served_from_kept_replicas() -> None:
    state = PolicyState.initial(4, 1)
    _, firsts = _bursts(state, gap_s=200.0, count=3)
    assert firsts[0].reason is R.SCALE_UP  # the first burst finds one node
    for d in firsts[1:]:  # 200 s gaps < the 360 s keep: the replicas are still there
        assert d.replicas == 8
        assert d.reason is R.STEADY


def test_keep_time_is_learned_from_the_gaps_between_bursts() -> None:
    """Gaps of 420 s outlast the default keep (360 s): the first ones find the node released;
    once three such gaps were seen, keeping the node through them is cheaper and it stays."""
    state = PolicyState.initial(4, 1)
    state, firsts = _bursts(state, gap_s=420.0, count=6)
    assert [d.reason for d in firsts[:4]] == [R.SCALE_UP] * 4
    assert firsts[-1].keep_node_s == pytest.approx(420.0, abs=2.0)
    assert [d.replicas for d in firsts[-2:]] == [8, 8]
    assert all(d.reason is R.STEADY for d in firsts[-2:])


def test_bursts_shorter_than_a_node_boot_do_not_buy_nodes() -> None:
    """10 s bursts every 10 minutes: once a few were seen, a node that would be Ready 180 s later
    is not bought for the next one (the kept node's replicas take it); a burst that outlasts
    every one seen before buys it."""
    state = PolicyState.initial(4, 1)
    state, firsts = _bursts(state, gap_s=600.0, count=4, spec=NODE_SPEC, burst_s=10)
    assert firsts[0].reason is R.SCALE_UP
    assert [(d.reason, d.nodes, d.replicas) for d in firsts[-2:]] == [(R.DEFER_NODE, 1, 4)] * 2
    t = state.last_now or 0.0
    nodes = []
    for _ in range(60):  # now a sustained step
        t += 1.0
        d, state = decide(demand(t, 60.0, state.replicas), state, NODE_SPEC, t)
        nodes.append(d.nodes)
    assert nodes[0] == 1
    assert nodes[-1] == 2
    assert nodes.index(2) <= 15  # bought once it outlasted the 10 s bursts (plus the merge)


def test_long_gaps_release_sooner() -> None:
    """Bursts an hour apart: keeping a node through them costs more than coming back; the keep
    time falls to the time it takes to get a node back."""
    spec = replace(NODE_SPEC, max_keep_node_s=7200.0)
    state = PolicyState.initial(4, 1)
    t = 0.0
    for _ in range(4):
        for rate, span in [(60.0, 30), (20.0, 3600)]:
            for _ in range(span):
                t += 5.0 if rate < 60 and span > 100 else 1.0
                d, state = decide(demand(t, rate, state.replicas), state, spec, t)
    assert d.keep_node_s == pytest.approx(180.0)


# ---- drain horizon and step ----------------------------------------------------------------


def test_drain_horizon_is_when_capacity_can_arrive() -> None:
    spec = replace(NODE_SPEC, billing=Billing.GPU, max_replicas=40)
    o = obs(0.0, ready_replicas=2, in_flight=64, arrival_rate_short=18.0, queue_depth=600)
    d, _ = decide(o, warm(2, spec=spec), spec, 0.0)
    # 18/s -> 2 replicas; 600 queued over a 60 s cold start at 10/s -> +1, fits the node (4)
    assert (d.replicas, d.drain_horizon_s) == (3, 60.0)
    d, _ = decide(replace(o, queue_depth=6000), warm(2, spec=spec), spec, 0.0)
    # 6000 queued needs new nodes: drained over cold start + node boot (180 s): 2 + 4
    assert (d.replicas, d.drain_horizon_s) == (6, 180.0)
    fixed = replace(spec, drain_horizon_s=1.0)
    d, _ = decide(o, warm(2, spec=fixed), fixed, 0.0)
    assert d.replicas == 40  # the old rule: drain within the TTFT SLO


def test_a_detected_step_scales_before_a_queue_forms() -> None:
    o = obs(0.0, ready_replicas=1, in_flight=5, arrival_rate_short=4.0, arrival_rate_long=4.0)
    o = replace(o, arrival_short_window_s=2.0)
    d, _ = decide(o, warm(1), SPEC, 0.0)
    assert d.replicas == 1
    d, _ = decide(replace(o, arrival_step_rate=40.0), warm(1), SPEC, 0.0)
    # 40/s wants 5 replicas; a step just seen fills today's node (4 slots of 2 GPUs) and does
    # not yet buy a node that would come a boot and a cold start later ...
    assert (d.replicas, d.nodes, d.reason, d.step_rate) == (4, 1, R.STEP_UP, 40.0)
    # ... which the rate windows do once they show it.
    d, _ = decide(replace(o, arrival_rate_short=40.0, arrival_rate_long=40.0), warm(1), SPEC, 0.0)
    assert (d.replicas, d.nodes, d.reason) == (5, 2, R.SCALE_UP)


def test_pod_cap_bounds_the_concurrency() -> None:
    o = obs(0.0, ready_replicas=1, in_flight=64, concurrency_per_replica=64)
    assert decide(o, warm(1), SPEC, 0.0)[0].concurrency == 64
    d, _ = decide(replace(o, pod_cap=16), warm(1), SPEC, 0.0)
    assert (d.concurrency, d.recommended) == (16, 4)


@pytest.mark.parametrize(
    ("gaps", "keep"),
    [
        pytest.param((), 360.0, id="no-history: deterministic rent-or-buy (the penalty)"),
        pytest.param((420.0, 420.0), 360.0, id="two gaps are not yet a pattern"),
        pytest.param((420.0, 410.0, 430.0), 430.0, id="recurring gaps: keep through them"),
        pytest.param((5.0, 8.0, 12.0), 180.0, id="short dips: never below the re-acquire time"),
        pytest.param((3000.0, 3600.0, 2500.0), 180.0, id="long gaps: release early"),
        pytest.param((200.0, 250.0, 5000.0, 6000.0), 250.0, id="mixed: cover the short ones"),
    ],
)
def test_keep_seconds_table(gaps: tuple[float, ...], keep: float) -> None:
    assert keep_seconds(gaps, reacquire_s=180.0, penalty_s=360.0) == pytest.approx(keep)


@pytest.mark.parametrize(
    ("bursts", "age", "buy"),
    [
        pytest.param((), 0.0, True, id="no history"),
        pytest.param((10.0, 12.0), 0.0, True, id="too little history"),
        pytest.param((10.0, 12.0, 9.0), 0.0, False, id="short bursts"),
        pytest.param((10.0, 12.0, 9.0), 13.0, True, id="longer than any seen"),
        pytest.param((10.0, 400.0, 500.0), 0.0, True, id="most last past a boot"),
        pytest.param((10.0, 20.0, 30.0, 400.0), 0.0, False, id="most end before one"),
        pytest.param((10.0, 20.0, 30.0, 400.0), 25.0, True, id="outlived the short ones"),
    ],
)
def test_worth_buying_table(bursts: tuple[float, ...], age: float, buy: bool) -> None:
    assert worth_buying(bursts, age=age, reacquire_s=180.0) is buy


def test_a_standby_does_not_keep_the_expected_queue_of_a_scale_up_it_never_made() -> None:
    """Regression (issue 15): a standby decided 8 but never wrote it; following the cluster's 1
    replica it kept the backlog that imagined scale-up was sized for, so after takeover it
    climbed one replica per second. A standby that follows the cluster must decide from what it
    observes, and the new leader must ask for the full target on its first decision."""
    spec = replace(SPEC, scale_down_delay_s=300.0)
    state = PolicyState.initial(1)
    current = 1  # what the Deployment says: no one writes while the leader is dead
    queue = 40.0
    standby: list[int] = []
    now = 0.0
    for _ in range(20):  # 5 s as a standby, evaluating every 0.25 s, the queue growing
        now += 0.25
        queue += 10 * 0.25
        if current != state.replicas:
            state = state.with_replicas(current)  # as the loop does for a standby
        o = obs(
            now,
            queue_depth=int(queue),
            ready_replicas=1,
            in_flight=10,
            arrival_rate_short=20.0,
            arrival_rate_long=20.0,
        )
        d, state = decide(o, state, spec, now)
        standby.append(d.replicas)
    # Every standby decision sizes for the whole observed queue (none of it is on its way).
    full = math.ceil(20 / 9 + int(queue) / 10)
    assert standby[-1] == full, standby
    assert standby == sorted(standby)  # follows the growing queue, never falls back
    # Takeover: the first decision as leader (state synced to the cluster) is the target.
    state = state.with_replicas(current)
    now += 0.25
    queue += 10 * 0.25
    o = obs(
        now,
        queue_depth=int(queue),
        ready_replicas=1,
        in_flight=10,
        arrival_rate_short=20.0,
        arrival_rate_long=20.0,
    )
    d, state = decide(o, state, spec, now)
    assert d.replicas == math.ceil(20 / 9 + int(queue) / 10)


def test_with_replicas_keeps_the_expected_queue_when_capacity_was_added() -> None:
    """A scale made by someone else that is larger than ours still explains the backlog."""
    state = replace(PolicyState.initial(3), expected_queue=25.0)
    assert state.with_replicas(5).expected_queue == 25.0
    assert state.with_replicas(3).expected_queue == 25.0
    assert state.with_replicas(2).expected_queue == 0.0
