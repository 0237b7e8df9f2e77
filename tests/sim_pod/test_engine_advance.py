"""The virtual-time fast path gives exactly what stepping one step at a time gives."""

from __future__ import annotations

import random

import pytest

from sim.engine import Engine, EngineEvent, EventKind, get_profile

P8 = get_profile("llama3-8b-h200")

Arrival = tuple[float, str, int, int]


def _workload(seed: int, n: int, rate: float) -> list[Arrival]:
    rng = random.Random(seed)
    t = 0.0
    out = []
    for i in range(n):
        t += rng.expovariate(rate)
        out.append((t, f"r{i}", rng.randint(1, 1500), rng.randint(1, 300)))
    return out


def _reference(engine: Engine, arrivals: list[Arrival]) -> list[tuple[float, str, EventKind]]:
    """Drive with step(): arrivals join the first step that starts at or after them."""
    events: list[tuple[float, str, EventKind]] = []
    todo = list(arrivals)
    t = 0.0
    while todo or engine.has_work:
        if not engine.has_work and todo:
            t = max(t, todo[0][0])
        while todo and todo[0][0] <= t:
            at, rid, p, m = todo.pop(0)
            engine.add(rid, p, m, now=at)
        r = engine.step(t)
        if r is None:
            t = todo[0][0]
            continue
        events += [(r.start, rid, EventKind.PREEMPTED) for rid in r.preempted]
        for o in r.outputs:
            if o.first:
                events.append((r.end, o.request_id, EventKind.FIRST_TOKEN))
            if o.finished:
                events.append((r.end, o.request_id, EventKind.FINISHED))
        t = r.end
    return events


def _advance(
    engine: Engine, arrivals: list[Arrival], extra_ticks: list[float]
) -> list[EngineEvent]:
    """Drive with advance(): advance to each arrival (and extra tick times), then add."""
    events: list[EngineEvent] = []
    marks = sorted(
        [(a[0], a) for a in arrivals] + [(x, None) for x in extra_ticks], key=lambda m: m[0]
    )
    for t, arrival in marks:
        events += engine.advance(t)
        if arrival is not None:
            _, rid, p, m = arrival
            engine.add(rid, p, m, now=t)
    events += engine.advance(float("inf"))
    return events


CASES = [
    pytest.param(dict(seed=1, n=60, rate=5.0), {}, id="light"),
    pytest.param(dict(seed=2, n=300, rate=60.0), {}, id="saturated"),
    pytest.param(dict(seed=3, n=200, rate=40.0), {"max_num_seqs": 8}, id="few-seats"),
    pytest.param(dict(seed=4, n=120, rate=50.0), {"num_kv_blocks": 400}, id="kv-pressure"),
    pytest.param(
        dict(seed=5, n=150, rate=30.0), {"max_num_batched_tokens": 512}, id="small-budget"
    ),
]


@pytest.mark.parametrize(("load", "knobs"), CASES)
def test_advance_matches_stepping(load: dict[str, float], knobs: dict[str, int]) -> None:
    arrivals = _workload(int(load["seed"]), int(load["n"]), load["rate"])
    ref = _reference(Engine(P8, **knobs), arrivals)
    rng = random.Random(7)
    ticks = [rng.uniform(0, arrivals[-1][0] * 2) for _ in range(50)]
    fast_engine = Engine(P8, **knobs)
    fast = [(e.time, e.request_id, e.kind) for e in _advance(fast_engine, arrivals, ticks)]
    assert len(fast) == len(ref)
    for a, b in zip(sorted(fast, key=_key), sorted(ref, key=_key), strict=True):
        assert a[1:] == b[1:]
        assert a[0] == pytest.approx(b[0], rel=1e-9, abs=1e-9)
    finishes = {rid for _, rid, k in ref if k is EventKind.FINISHED}
    assert finishes == {a[1] for a in arrivals}
    if "num_kv_blocks" in knobs:
        assert any(k is EventKind.PREEMPTED for _, _, k in ref)
    assert fast_engine.generation_tokens == sum(a[3] for a in arrivals)


def _key(e: tuple[float, str, EventKind]) -> tuple[str, str, float]:
    return (e[1], e[2].value, e[0])


def test_advance_skips_steps_when_the_batch_is_stable() -> None:
    e = Engine(P8)
    for i in range(32):
        e.add(f"r{i}", 100, 2000, now=0.0)
    events = e.advance(1e6)
    assert [ev.kind for ev in events].count(EventKind.FINISHED) == 32
    assert e.steps == 2000  # one prefill step (first tokens) + 1999 decode steps
    assert e.skipped_steps >= 1990  # ... nearly all of them skipped, not planned one by one
    assert e.generation_tokens == 32 * 2000


def test_next_change_time_is_never_after_an_event() -> None:
    arrivals = _workload(11, 80, 20.0)
    e = Engine(P8)
    todo = list(arrivals)
    now = 0.0
    while todo or e.has_work:
        nct = e.next_change_time()
        nxt = todo[0][0] if todo else float("inf")
        target = min(nct if nct is not None else float("inf"), nxt)
        if target > now:
            quiet = e.advance(target - 1e-9)
            assert quiet == [], (now, target, quiet)
        now = max(now, target)
        e.advance(now)
        while todo and todo[0][0] <= now:
            _at, rid, p, m = todo.pop(0)
            e.add(rid, p, m, now=now)
    assert e.generation_tokens == sum(a[3] for a in arrivals)


def test_gauges_follow_the_queues() -> None:
    e = Engine(P8, max_num_seqs=2)
    for i in range(4):
        e.add(f"r{i}", 50, 20, now=0.0)
    assert (e.running, e.waiting) == (0, 4)
    e.advance(0.0)
    assert (e.running, e.waiting) == (2, 2)
    e.advance(1e6)
    assert (e.running, e.waiting, e.kv_usage) == (0, 0, 0.0)
    assert e.next_change_time() is None


def test_checkpoints_in_a_long_decode_run_give_the_same_event_times() -> None:
    """`next_change_time` settles for checkpoints inside a long pure-decode run (computing the
    run's steps in doubling chunks); waking at each of them, as the evaluator's pods do, gives
    exactly (==) the event times of advancing straight through, and nothing at a checkpoint."""
    from sim.engine.decoderun import CHECKPOINT_STEPS

    def load(engine: Engine) -> None:
        for i in range(4):
            engine.add(f"r{i}", 200, 40 * CHECKPOINT_STEPS + i, now=0.0)

    straight = Engine(P8)
    load(straight)
    expected = [(e.time, e.request_id, e.kind) for e in straight.advance(float("inf"))]

    woken = Engine(P8)
    load(woken)
    got: list[tuple[float, str, EventKind]] = []
    wakes = quiet = 0
    last = -1.0
    while (nct := woken.next_change_time()) is not None:
        assert nct > last  # every wake makes progress
        last = nct
        events = woken.advance(nct)
        wakes += 1
        quiet += not events
        got += [(e.time, e.request_id, e.kind) for e in events]
    assert got == expected
    assert quiet >= 2  # checkpoints were taken: wakes at which nothing happened ...
    assert wakes < 40  # ... a few per run (doubling chunks), not one per chunk of 32 steps
