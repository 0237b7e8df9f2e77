"""Per-model state from events: exact queue accounting, healing snapshots, windows, forgetting."""

from __future__ import annotations

import random
from typing import Any

import pytest

from controller.state import ClusterCounts, StateSettings, StateStore
from controller.windows import MeanWindow, QuantileWindow, RateWindow, RatioWindow
from surgescale.events import Event, EventType

M = "llama3-8b"


def ev(kind: EventType, rid: str = "", gw: str = "g1", **kw: Any) -> Event:
    return Event(type=kind, model=M, gateway=gw, ts_ms=0, request_id=rid, **kw)


def observe(store: StateStore, now: float, **kw: Any) -> Any:
    return store.model(M).observe(now, cluster=ClusterCounts(**kw), concurrency_per_replica=32)


def sample(store: StateStore, now: float, ready: int = 0) -> None:
    """The controller's sampling step (its tick)."""
    store.model(M).sample(now, ready_replicas=ready, concurrency_per_replica=32)


def test_queue_and_in_flight_follow_request_lifecycles() -> None:
    store = StateStore()
    t = 0.0
    store.ingest([ev(EventType.SNAPSHOT, queue_depth=0, in_flight=0, interval_ms=1000)], t)
    store.ingest([ev(EventType.ENQUEUE, f"r{i}") for i in range(10)], t)
    store.ingest([ev(EventType.DISPATCH, f"r{i}") for i in range(4)], t)
    store.ingest([ev(EventType.COMPLETE, "r0", e2e_ms=900.0, queue_ms=100.0, tpot_ms=20.0)], t)
    store.ingest([ev(EventType.REJECT, "r9"), ev(EventType.CANCEL, "r1")], t)  # queued, in flight
    store.ingest([ev(EventType.REJECT, "never-enqueued")], t)  # refused at admission
    o = observe(store, 0.5, ready_replicas=1)
    assert o.queue_depth == 10 - 4 - 1  # r4..r8
    assert o.in_flight == 4 - 1 - 1  # r2, r3
    assert o.ready_replicas == 1
    assert o.service_rate_per_replica == pytest.approx(32 / 0.8)
    assert o.tpot_p95_s == pytest.approx(0.02, rel=0.02)
    assert o.has_data


def test_snapshot_heals_lost_events_and_events_after_it_count() -> None:
    store = StateStore()
    store.ingest([ev(EventType.ENQUEUE, f"r{i}") for i in range(5)], 0.0)
    # Suppose 3 dispatches were lost: the gateway's snapshot says 2 queued, 3 in flight.
    store.ingest([ev(EventType.SNAPSHOT, queue_depth=2, in_flight=3, interval_ms=500)], 1.0)
    store.ingest([ev(EventType.ENQUEUE, "r5"), ev(EventType.ENQUEUE, "r6")], 1.1)
    o = observe(store, 1.2)
    assert (o.queue_depth, o.in_flight) == (4, 3)


def test_gateways_add_up_and_a_silent_one_is_forgotten() -> None:
    store = StateStore()
    store.ingest(
        [ev(EventType.SNAPSHOT, gw="a", queue_depth=5, in_flight=1, interval_ms=1000)], 0.0
    )
    store.ingest(
        [ev(EventType.SNAPSHOT, gw="b", queue_depth=7, in_flight=2, interval_ms=1000)], 0.0
    )
    assert observe(store, 0.1).queue_depth == 12
    # b keeps reporting; a goes silent.
    for t in (1.0, 2.0, 3.0):
        store.ingest(
            [ev(EventType.SNAPSHOT, gw="b", queue_depth=7, in_flight=2, interval_ms=1000)], t
        )
    assert observe(store, 2.9).queue_depth == 12  # 2.9 s < 3 intervals
    o = observe(store, 3.1)
    assert (o.queue_depth, o.in_flight) == (7, 2)
    assert list(store.model(M).gateways) == ["a", "b"]  # observing changes nothing
    sample(store, 3.1)  # the sampling step forgets it
    assert list(store.model(M).gateways) == ["b"]
    # Nobody reports: no data, so the policy holds.
    assert not observe(store, 10.0).has_data


def test_arrival_rates_short_and_long() -> None:
    store = StateStore(StateSettings(short_window_s=2.0, long_window_s=60.0))
    t = 0.0
    for i in range(600):  # 10/s for 60 s
        t = i * 0.1
        store.ingest([ev(EventType.ENQUEUE, f"a{i}")], t)
    for i in range(100):  # then 50/s for 2 s
        t = 60.0 + i * 0.02
        store.ingest([ev(EventType.ENQUEUE, f"b{i}")], t)
    o = observe(store, t)
    assert o.arrival_rate_short == pytest.approx(50.0, rel=0.1)
    assert o.arrival_rate_long == pytest.approx((600 - 20 + 100) / 60.0, rel=0.1)
    assert o.last_enqueue_at == t


def test_ttft_quantile_slides() -> None:
    store = StateStore(StateSettings(latency_window_s=30.0))
    rng = random.Random(1)
    for i in range(1000):
        store.ingest([ev(EventType.FIRST_TOKEN, f"r{i}", ttft_ms=rng.uniform(100, 200))], i * 0.01)
    p95 = observe(store, 10.0).ttft_p95_s
    assert p95 == pytest.approx(0.195, rel=0.03)
    store.ingest([ev(EventType.FIRST_TOKEN, "slow", ttft_ms=5000.0)], 40.0)
    assert observe(store, 41.0).ttft_p95_s == pytest.approx(5.0, rel=0.02)  # old samples gone


def test_rate_window_ramps_up_over_its_length() -> None:
    w = RateWindow(10.0, bucket_s=0.1)
    for i in range(20):
        w.add(100.0 + i * 0.05)
    assert w.rate(101.0) == pytest.approx(2.0, rel=0.01)  # 20 events over a 10 s window
    assert w.count(200.0) == 0
    assert w.rate(200.0) == 0.0


def test_mean_and_quantile_windows_empty() -> None:
    assert MeanWindow(5.0).mean(1.0) is None
    assert QuantileWindow(5.0).quantile(1.0, 0.95) is None
    m = MeanWindow(5.0, bucket_s=1.0)
    m.add(0.0, 2.0)
    m.add(3.0, 4.0)
    assert m.mean(3.0) == 3.0
    assert m.mean(7.0) == 4.0
    assert m.mean(20.0) is None


def test_ingest_reports_changed_models() -> None:
    store = StateStore()
    other = Event(type=EventType.ENQUEUE, model="other", gateway="g", ts_ms=0, request_id="x")
    changed = store.ingest([ev(EventType.ENQUEUE, "a"), other, ev(EventType.ENQUEUE, "b")], 0.0)
    assert changed == {M, "other"}
    assert store.model("other").queue_depth == 1
    assert store.model(M).queue_depth == 2


def test_quantiles_stay_unbiased_when_sampling_kicks_in() -> None:
    """Past `full_rate_samples` per bucket only some samples are kept, with weights. A rising
    stream (early samples small, late ones large) shows any bias: unweighted sampling would
    over-represent the early, small values."""
    w = QuantileWindow(60.0, bucket_s=5.0, full_rate_samples=1024)
    n = 100_000
    values = [i / n for i in range(n)]
    for i in range(0, n, 500):
        w.add_many(1.0, values[i : i + 500])
    for q in (0.25, 0.5, 0.95):
        assert w.quantile(1.0, q) == pytest.approx(q, rel=0.03), q
    kept = w._buckets[0][1]
    assert kept.count == pytest.approx(n, rel=0.01)  # total weight = samples seen


def _full_load(store: StateStore, *, seconds: int, ready: int, in_flight: int) -> Any:
    """Each second: 20 completions of 0.5 s in-pod time, then a snapshot of `in_flight`."""
    o = None
    for s in range(seconds + 1):
        t = float(s)
        if s:
            store.ingest(
                [
                    ev(EventType.COMPLETE, f"c{s}-{i}", e2e_ms=500.0, queue_ms=0.0)
                    for i in range(20)
                ],
                t,
            )
        store.ingest([ev(EventType.SNAPSHOT, queue_depth=20, in_flight=in_flight)], t)
        sample(store, t, ready)
        o = observe(store, t, ready_replicas=ready)
    return o


def test_service_rate_is_measured_while_replicas_are_full() -> None:
    # Two full replicas (60 of 64 slots) complete 20/s together: 10/s each. Little's law on the
    # 0.5 s in-pod time would say 32 / 0.5 = 64/s, six times the real capacity.
    store = StateStore()
    o = _full_load(store, seconds=10, ready=2, in_flight=60)
    assert o.service_rate_per_replica == pytest.approx(10.0)
    # The measurement outlives the busy period (capacity window), while Little's law still holds.
    store.ingest([ev(EventType.SNAPSHOT, queue_depth=0, in_flight=2)], 30.0)
    assert observe(store, 30.0, ready_replicas=2).service_rate_per_replica == pytest.approx(10.0)
    # ... and after the capacity window (600 s) has emptied: a quiet spell says nothing new.
    store.ingest([ev(EventType.SNAPSHOT, queue_depth=0, in_flight=0)], 1000.0)
    assert observe(store, 1000.0, ready_replicas=2).service_rate_per_replica == pytest.approx(10.0)


def test_service_rate_at_low_load_is_littles_law_until_replicas_fill() -> None:
    store = StateStore()
    o = _full_load(store, seconds=10, ready=2, in_flight=8)  # 8 of 64 slots: not full
    assert o.service_rate_per_replica == pytest.approx(32 / 0.5)


def test_capacity_needs_enough_replica_seconds() -> None:
    store = StateStore(StateSettings(min_capacity_replica_s=50.0))
    o = _full_load(store, seconds=10, ready=2, in_flight=60)  # 20 replica-seconds < 50
    assert o.service_rate_per_replica == pytest.approx(32 / 0.5)


def test_ratio_window_slides() -> None:
    w = RatioWindow(10.0, bucket_s=1.0)
    assert w.ratio(0.0) is None
    w.add(0.5, 10.0, 2.0)
    w.add(5.5, 30.0, 2.0)
    assert w.ratio(6.0) == pytest.approx(10.0)
    assert w.ratio(6.0, min_denominator=5.0) is None
    assert w.ratio(12.0) == pytest.approx(15.0)  # the first interval left the window
    assert w.ratio(30.0) is None


# ---- step detection, TPOT concurrency, the gateway's pod cap ---------------------------------


def _poisson(rng: random.Random, rate: float, start: float, end: float) -> list[float]:
    out: list[float] = []
    t = start
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            return out
        out.append(t)


def _feed(store: StateStore, times: list[float], first: int = 0) -> None:
    for i, t in enumerate(times):
        store.ingest([ev(EventType.ENQUEUE, f"r{first + i}")], t)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_step_in_arrivals_is_detected_within_a_few_arrivals(seed: int) -> None:
    rng = random.Random(seed)
    store = StateStore()
    store.ingest([ev(EventType.SNAPSHOT, queue_depth=0, in_flight=0, interval_ms=1000)], 0.0)
    steady = _poisson(rng, 3.0, 0.0, 120.0)
    _feed(store, steady)
    state = store.model(M)
    assert state.step.rate(120.0) is None
    burst = _poisson(rng, 30.0, 120.0, 130.0)
    for n, t in enumerate(burst, start=1):
        _feed(store, [t], first=len(steady) + n)
        if state.step.rate(t) is not None:
            break
    assert n <= 15, f"step seen only after {n} arrivals"
    o = observe(store, t, ready_replicas=1)
    assert o.arrival_step_rate is not None
    assert 9.0 <= o.arrival_step_rate <= 60.0  # a new rate of the right order, before any queue


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_flapping_on_poisson_noise_at_steady_load(seed: int) -> None:
    """18 req/s for 10 minutes through state and policy (GPU billing; 2.5 replicas' worth at the
    prior 8 req/s): no step alarm after the start, and the replica count never moves."""
    from controller.policy import Billing, PolicySpec, PolicyState, decide

    spec = PolicySpec(billing=Billing.GPU, max_replicas=20, scale_down_delay_s=60.0)
    rng = random.Random(seed)
    store = StateStore()
    state = PolicyState.initial(3)
    changes, replicas = 0, 3
    times = _poisson(rng, 18.0, 0.0, 600.0)
    next_eval = next_sample = 0.0
    warmed: int | None = None
    for i, t in enumerate(times):
        if warmed is None and t > 60.0:
            warmed = store.model(M).step.alarms  # 0 -> 18/s at the start is a real step
        if i % 10 == 0:  # the gateway's snapshots: served as they come, no queue
            store.ingest([ev(EventType.SNAPSHOT, queue_depth=0, in_flight=8, interval_ms=1000)], t)
        _feed(store, [t], first=i)
        if t >= next_sample:  # the controller's tick
            next_sample = t + 1.0
            sample(store, t, replicas)
        if t >= next_eval:
            next_eval = t + 0.1
            o = observe(store, t, ready_replicas=replicas)
            d, state = decide(o, state, spec, t)
            if t > 60.0 and d.replicas != replicas:
                changes += 1
            replicas = d.replicas
    assert store.model(M).step.alarms == warmed
    assert changes == 0


def test_tpot_objective_sets_the_concurrency() -> None:
    """TPOT grows with the batch (5 ms + 0.5 ms per sequence): with a 30 ms objective the
    largest batch that meets it is ~50; without an objective it is max_num_seqs."""
    rng = random.Random(0)
    store = StateStore()
    store.ingest([ev(EventType.SNAPSHOT, queue_depth=0, in_flight=0, interval_ms=1000)], 0.0)
    model = store.model(M)
    model.sample(0.0, ready_replicas=1, concurrency_per_replica=256)
    rid = 0
    for batch in (8, 24, 40):
        store.ingest([ev(EventType.SNAPSHOT, queue_depth=0, in_flight=batch, interval_ms=1000)], 1)
        for _ in range(40):
            tpot = (5.0 + 0.5 * batch) * rng.uniform(0.9, 1.05)
            store.ingest([ev(EventType.DISPATCH, f"x{rid}")], 1.0)
            store.ingest([ev(EventType.COMPLETE, f"x{rid}", tpot_ms=tpot)], 1.0)
            rid += 1
    cluster = ClusterCounts(ready_replicas=1)
    o = model.observe(2.0, cluster=cluster, concurrency_per_replica=None, tpot_slo_s=0.030)
    assert o.concurrency_per_replica is not None
    assert 40 <= o.concurrency_per_replica <= 52
    o = model.observe(2.0, cluster=cluster, concurrency_per_replica=None, max_num_seqs=128)
    assert o.concurrency_per_replica == 128
    o = model.observe(2.0, cluster=cluster, concurrency_per_replica=24, tpot_slo_s=0.030)
    assert o.concurrency_per_replica == 24  # a fixed value in the spec wins


def test_snapshot_pod_cap_reaches_the_observation() -> None:
    store = StateStore()
    store.ingest([ev(EventType.SNAPSHOT, gw="a", queue_depth=0, in_flight=0, pod_cap=64)], 0.0)
    store.ingest([ev(EventType.SNAPSHOT, gw="b", queue_depth=0, in_flight=0, pod_cap=48)], 0.0)
    assert observe(store, 0.1).pod_cap == 48


def test_in_flight_is_kept_per_pod_across_gateways() -> None:
    """Before a scale-down the pods are ranked by this (issue 15: the idlest leave)."""
    store = StateStore(StateSettings(max_tracked_requests=100))
    a, b = "http://10.0.0.1:8000", "http://10.0.0.2:8000"
    store.ingest([ev(EventType.ENQUEUE, f"r{i}") for i in range(6)], 0.0)
    store.ingest([ev(EventType.DISPATCH, f"r{i}", pod=a) for i in range(4)], 0.0)
    store.ingest([ev(EventType.DISPATCH, "r4", pod=b)], 0.0)
    store.ingest([ev(EventType.ENQUEUE, "x"), ev(EventType.DISPATCH, "x", gw="g2", pod=b)], 0.0)
    assert store.model(M).pod_in_flight() == {a: 4, b: 2}
    store.ingest([ev(EventType.COMPLETE, "r0", pod=a), ev(EventType.CANCEL, "r1")], 0.1)
    store.ingest([ev(EventType.DISPATCH, "r2", pod=b)], 0.1)  # retried on another pod
    store.ingest([ev(EventType.COMPLETE, "r4", pod=b), ev(EventType.COMPLETE, "r4", pod=b)], 0.1)
    assert store.model(M).pod_in_flight() == {a: 1, b: 2}
    store.ingest([ev(EventType.COMPLETE, "r3"), ev(EventType.COMPLETE, "r2")], 0.2)
    store.ingest([ev(EventType.COMPLETE, "x", gw="g2")], 0.2)
    assert store.model(M).pod_in_flight() == {}


def test_per_pod_tracking_is_bounded() -> None:
    store = StateStore(StateSettings(max_tracked_requests=10))
    store.ingest([ev(EventType.DISPATCH, f"r{i}", pod=f"p{i % 3}") for i in range(100)], 0.0)
    view = store.model(M).gateways["g1"]
    assert len(view.at_pod) == 10
    assert sum(store.model(M).pod_in_flight().values()) == 10


# --- event time, once-only, snapshot order (issue 15) ------------------------------------------

T0_MS = 1_800_000_000_000
"""Wall clock of the scenarios below (ms); the controller's loop clock reads 0 at T0_MS."""


def stamped(kind: EventType, rid: str, ts_s: float, **kw: Any) -> Event:
    """An event that happened at `ts_s` seconds after T0 by the gateway's wall clock."""
    return Event(
        type=kind, model=M, gateway=kw.pop("gw", "g1"), ts_ms=T0_MS + int(ts_s * 1000),
        request_id=rid, **kw,
    )  # fmt: skip


def receive(store: StateStore, events: list[Event], at_s: float) -> None:
    """The controller receives `events` at loop time `at_s` (wall clock T0 + at_s)."""
    store.ingest(events, at_s, wall_ms=T0_MS + int(at_s * 1000))


def test_a_backlog_flushed_after_an_outage_is_history_not_a_burst() -> None:
    """The live finding: 4 req/s, Redis away for 25 s, then the gateway's buffer arrives at once;
    timed by receipt, 100 arrivals landed in the 2 s short window (≈ 50/s) and the controller
    scaled 1 -> 3. Timed by the events' own clocks the short rate stays at the real 4/s."""
    store = StateStore(StateSettings(short_window_s=2.0, long_window_s=60.0))
    n = 0
    for i in range(120):  # 30 s at 4/s, each received 5 ms after it happened
        t = i * 0.25
        receive(store, [stamped(EventType.ENQUEUE, f"r{n}", t)], t + 0.005)
        n += 1
    backlog = []
    for i in range(100):  # 25 s of outage: buffered by the gateway
        backlog.append(stamped(EventType.ENQUEUE, f"r{n}", 30.0 + i * 0.25))
        n += 1
    receive(store, backlog, 55.05)
    o = observe(store, 55.1)
    assert o.arrival_rate_short == pytest.approx(4.0, abs=1.0)
    assert o.arrival_rate_long == pytest.approx(220 / 60.0, rel=0.05)  # history where it belongs
    assert o.queue_depth == 220  # the counts still apply
    assert store.model(M).late_events > 80


def test_event_time_survives_a_gateway_forgotten_during_the_outage() -> None:
    """A gateway silent past 3 snapshot intervals is forgotten; its clock offset is not."""
    store = StateStore()
    for i in range(40):
        t = i * 0.25
        receive(store, [stamped(EventType.SNAPSHOT, "", t, queue_depth=0, in_flight=0)], t)
    sample(store, 20.0)  # forgets g1
    assert not store.model(M).gateways
    late = [stamped(EventType.ENQUEUE, f"r{i}", 10.0 + i * 0.05) for i in range(100)]  # to 15 s
    receive(store, late, 21.0)
    assert observe(store, 21.0).arrival_rate_short == 0.0
    assert observe(store, 21.0).queue_depth == 100


def test_a_gateway_clock_behind_by_less_than_the_skew_bound_counts_as_fresh() -> None:
    store = StateStore(StateSettings(max_clock_skew_s=5.0))
    for i in range(40):  # its clock reads 3 s behind ours
        t = i * 0.05
        receive(store, [stamped(EventType.ENQUEUE, f"r{i}", t - 3.0)], t)
    assert observe(store, 2.0).arrival_rate_short == pytest.approx(20.0, rel=0.1)


def test_a_controller_started_mid_backlog_does_not_read_it_as_a_burst() -> None:
    """No lag floor known yet: the newest event of the batch seeds it."""
    store = StateStore()
    backlog = [stamped(EventType.ENQUEUE, f"r{i}", i * 0.25) for i in range(100)]  # 25 s
    receive(store, backlog, 25.0)
    assert observe(store, 25.0).arrival_rate_short <= 5.0


def test_replayed_and_duplicated_events_apply_once() -> None:
    """The live finding: a Redis pause made the gateway resend a batch; 2 completes lowered
    in-flight twice. With ids a resent batch is a no-op."""
    store = StateStore()

    def ided(kind: EventType, rid: str, n: int, **kw: Any) -> Event:
        return ev(kind, rid, origin="gw1-a", eseq=n, **kw)

    batch = [ided(EventType.ENQUEUE, f"r{i}", i + 1) for i in range(4)]
    batch += [ided(EventType.DISPATCH, f"r{i}", 5 + i) for i in range(4)]
    store.ingest(batch, 0.0)
    done = [ided(EventType.COMPLETE, "r0", 9), ided(EventType.COMPLETE, "r1", 10)]
    store.ingest(done, 0.1)
    store.ingest(done, 0.2)  # resent
    store.ingest(batch, 0.3)  # redelivered
    o = observe(store, 0.3)
    assert (o.queue_depth, o.in_flight) == (0, 2)
    assert store.model(M).duplicates == 10
    assert o.arrival_rate_short == pytest.approx(4 / 2.0)


def test_out_of_order_delivery_fills_gaps_and_a_restart_starts_a_new_sequence() -> None:
    store = StateStore()

    def enq(n: int, origin: str = "a") -> Event:
        return ev(EventType.ENQUEUE, f"{origin}{n}", origin=origin, eseq=n)

    store.ingest([enq(1), enq(2), enq(5), enq(6)], 0.0)  # 3 and 4 are late (reclaimed)
    store.ingest([enq(4), enq(3)], 0.1)
    store.ingest([enq(3), enq(6)], 0.2)  # now both are replays
    assert store.model(M).queue_depth == 6
    store.ingest([enq(1, origin="b"), enq(2, origin="b")], 0.3)  # gateway restarted
    assert store.model(M).queue_depth == 8
    assert store.model(M).duplicates == 2


def test_events_without_ids_apply_as_before() -> None:
    store = StateStore()
    e = ev(EventType.ENQUEUE, "r1")
    store.ingest([e, e], 0.0)
    assert store.model(M).queue_depth == 2


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        pytest.param({"origin": "a", "seq": 4}, {"origin": "a", "seq": 5}, id="same-origin-seq"),
        pytest.param({"ts_ms": 1_000, "seq": 9}, {"ts_ms": 2_000, "seq": 1}, id="no-origin-ts"),
        pytest.param(
            {"origin": "a", "seq": 9, "ts_ms": 1_000},
            {"origin": "b", "seq": 1, "ts_ms": 2_000},
            id="restarted-gateway",
        ),
    ],
)
def test_a_snapshot_older_than_the_applied_one_is_ignored(
    older: dict[str, Any], newer: dict[str, Any]
) -> None:
    store = StateStore()

    def snap(depth: int, **kw: Any) -> Event:
        fields: dict[str, Any] = {"ts_ms": 0, **kw}
        return Event(
            type=EventType.SNAPSHOT, model=M, gateway="g1", queue_depth=depth, in_flight=0,
            interval_ms=1000, **fields,
        )  # fmt: skip

    store.ingest([snap(7, **newer)], 0.0)
    store.ingest([snap(3, **older)], 0.1)  # reclaimed late, or resent
    assert store.model(M).queue_depth == 7
    assert store.model(M).stale_snapshots == 1
    store.ingest([snap(9, **newer)], 0.2)  # the same snapshot again: a duplicate
    assert store.model(M).queue_depth == 7


def test_windows_take_late_samples_into_the_bucket_of_their_time() -> None:
    w = RateWindow(2.0, bucket_s=0.05)
    w.add(10.0, 5)
    w.add(9.0, 3)  # late, still in the window
    w.add(5.0, 100)  # late and older than the window
    assert w.count(10.0) == 8
    q = QuantileWindow(10.0, bucket_s=1.0)
    q.add(20.0, 1.0)
    assert q.quantile(20.0, 0.5) == pytest.approx(1.0, rel=0.02)
    q.add_many(19.0, [3.0, 3.0, 3.0])  # late samples reach the merged (closed) buckets
    assert q.quantile(20.0, 0.5) == pytest.approx(3.0, rel=0.02)
    q.add_many(1.0, [100.0])  # far too old
    assert q.quantile(20.0, 0.99) == pytest.approx(3.0, rel=0.02)


def test_seq_tracker_remembers_a_bounded_number_of_gaps() -> None:
    from controller.dedupe import SeqTracker

    t = SeqTracker(max_gaps=2)
    assert [t.first_time(n) for n in (1, 3, 5, 7)] == [True] * 4  # gaps {2}, {4}, {6}
    assert t.first_time(2) is False  # the oldest gap was given up: treated as seen
    assert t.first_time(4) is True
    assert t.first_time(4) is False
    assert t.first_time(6) is True
    assert [t.first_time(n) for n in (5, 7, 1)] == [False] * 3
    t2 = SeqTracker(max_gaps=4)
    assert [t2.first_time(n) for n in (10, 14, 12, 11, 13, 12)] == [True] * 5 + [False]


def _busy(store: StateStore, until: float, *, observe_every: float | None) -> Any:
    """Two replicas completing 20/s, full at each whole second and not at each half (the
    snapshots say so), sampled every second (the tick) and observed every `observe_every` s in
    between (None: never)."""
    t, step, n = 0.0, 0.05, 0
    next_observe = 0.0
    while t <= until + 1e-9:
        if n % 20 == 0:
            if n:
                completions = [
                    ev(EventType.COMPLETE, f"c{n}-{i}", e2e_ms=500.0, queue_ms=0.0)
                    for i in range(20)
                ]
                store.ingest(completions, t)
            store.ingest([ev(EventType.SNAPSHOT, queue_depth=20, in_flight=60)], t)
            sample(store, t, 2)
        elif n % 20 == 10:  # mid-second the replicas are far from full for a moment
            store.ingest([ev(EventType.SNAPSHOT, queue_depth=0, in_flight=10)], t)
        if observe_every is not None and t >= next_observe:
            next_observe = t + observe_every
            observe(store, t, ready_replicas=2)
        n += 1
        t = n * step
    return observe(store, until, ready_replicas=2)


def test_an_observation_does_not_depend_on_how_often_one_looks() -> None:
    """Observing is free of side effects: the same events and samples give the same
    observation whether the state was observed every 50 ms, every 5 s or never before."""
    often = _busy(StateStore(), 30.0, observe_every=0.05)
    rarely = _busy(StateStore(), 30.0, observe_every=5.0)
    never = _busy(StateStore(), 30.0, observe_every=None)
    assert often == rarely == never
    assert often.service_rate_per_replica == pytest.approx(10.0)  # measured by the samples


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param(
            # (time, gateway, snapshot interval ms or None for a plain event)
            [(0.0, "a", 10_000), (1.0, "a", 500), (2.0, "b", None)],
            id="shorter-interval-brings-forgetting-forward",
        ),
        pytest.param(
            [(0.0, "a", 10_000), (5.0, "b", None), (6.0, "c", 200)],
            id="new-gateways-after-a-long-bound",
        ),
        pytest.param(
            [(0.0, "a", 1_000), (0.5, "a", None), (2.0, "a", None), (2.9, "b", 1_000)],
            id="events-without-snapshots-do-not-extend-a-snapshotting-gateway",
        ),
    ],
)
def test_forget_silent_answers_as_a_full_scan_at_every_moment(
    steps: list[tuple[float, str, int | None]],
) -> None:
    """`forget_silent` skips its scan until a gateway could be forgotten: at every moment it
    must forget exactly what a scan of all gateways forgets."""
    state = StateStore().model(M)
    limit = state.settings.forget_after_intervals
    forgotten: set[str] = set()
    t = 0.0
    pending = list(steps)
    while t <= 40.0:
        while pending and pending[0][0] <= t:
            at, name, interval_ms = pending.pop(0)
            if interval_ms is None:
                state.apply(ev(EventType.ENQUEUE, f"r{at}", gw=name), at)
            else:
                state.apply(ev(EventType.SNAPSHOT, gw=name, interval_ms=interval_ms), at)
        expected = {
            name
            for name, gw in state.gateways.items()
            if t - (gw.snapshot_at if gw.snapshot_at is not None else gw.last_seen)
            > limit * gw.interval_s
        }
        gone = set(state.forget_silent(t))
        assert gone == expected, t
        forgotten |= gone
        t = round(t + 0.05, 2)
    assert forgotten == {name for _, name, _ in steps}  # everyone went silent in the end
    assert not state.gateways


def test_ingest_says_which_models_got_something_that_may_grow_a_queue() -> None:
    store = StateStore()

    def on(model: str, kind: EventType, **kw: Any) -> Event:
        return Event(type=kind, model=model, gateway="g", ts_ms=0, request_id="r", **kw)

    touched = store.ingest(
        [
            on("a", EventType.DISPATCH),
            on("b", EventType.ENQUEUE),
            on("a", EventType.COMPLETE),
            on("c", EventType.SNAPSHOT, queue_depth=3),
            on("d", EventType.FIRST_TOKEN, ttft_ms=10.0),
        ],
        0.0,
    )
    assert touched == {"a", "b", "c", "d"}
    assert store.queued == {"b", "c"}
    store.ingest([on("a", EventType.CANCEL)], 0.1)
    assert store.queued == set()  # the last ingest's only
