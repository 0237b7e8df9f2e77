"""The demo's scenario schedule and the live view's pure parts."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from sim.demo.live import EventTally, ViewState, line, render
from sim.demo.scenario import Scenario, arrivals, default_sizes_path, load_sizes, write_jsonl
from surgescale.events import Event, EventType


def test_rate_follows_the_phases() -> None:
    s = Scenario(quiet_s=10, burst_s=10, decay_s=10, tail_s=10, base_rps=1, burst_rps=16)
    assert s.rate(5) == 1
    assert s.rate(15) == 16
    assert s.rate(25) == pytest.approx(4.0)  # halfway through an exponential decay 16 -> 1
    assert s.rate(35) == 1
    assert s.rate(41) == 0
    assert s.duration_s == 40
    assert s.load_step_at == 10
    assert s.burst_end_at == 20


def test_arrivals_are_seeded_and_follow_the_rate(tmp_path: Path) -> None:
    s = Scenario(quiet_s=20, burst_s=20, decay_s=1, tail_s=1, base_rps=2, burst_rps=20, seed=3)
    sizes = load_sizes(default_sizes_path())
    assert len(sizes) > 10_000, "the Azure conv trace should be readable"
    one = arrivals(s, sizes)
    assert one == arrivals(s, sizes)
    quiet = sum(1 for a in one if a.arrival_s < 20)
    burst = sum(1 for a in one if 20 <= a.arrival_s < 40)
    assert 20 <= quiet <= 65  # Poisson mean 40
    assert 330 <= burst <= 470  # Poisson mean 400
    assert all(a.output_tokens <= s.max_output_tokens for a in one)
    path = write_jsonl(one, tmp_path / "t.jsonl")
    rows = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert len(rows) == len(one)
    assert set(rows[0]) == {"timestamp", "input_length", "output_length"}
    assert rows == sorted(rows, key=lambda r: r["timestamp"])


def _event(kind: EventType, ts: int, **kw: object) -> Event:
    return Event(type=kind, model="m", gateway=str(kw.pop("gateway", "g1")), ts_ms=ts, **kw)  # type: ignore[arg-type]


def test_event_tally() -> None:
    tally = EventTally(model="m", window_s=5.0, ttft_window_s=10.0)
    for i in range(20):
        tally.add(_event(EventType.ENQUEUE, 1_000 + i * 100))
    tally.add(Event(type=EventType.ENQUEUE, model="other", gateway="g", ts_ms=1_000))
    for i in range(100):
        tally.add(_event(EventType.FIRST_TOKEN, 2_000, ttft_ms=float(i + 1)))
    tally.add(_event(EventType.SNAPSHOT, 2_500, queue_depth=7, in_flight=3))
    tally.add(_event(EventType.SNAPSHOT, 2_500, gateway="g2", queue_depth=1, in_flight=1))
    assert tally.arrival_rate(3_000) == pytest.approx(20 / 5)
    assert tally.ttft_p95(3_000) == pytest.approx(0.095)  # nearest rank: the 95th of 1..100 ms
    assert tally.queue_depth(3_000) == (8, 4)
    assert tally.queue_depth(10_000) == (0, 0)  # stale snapshots do not count
    assert tally.arrival_rate(20_000) == 0
    assert tally.ttft_p95(20_000) is None


def test_event_tally_counts_a_redelivered_event_once() -> None:
    tally = EventTally(model="m")

    def enqueue(origin: str, eseq: int) -> Event:
        return Event(
            type=EventType.ENQUEUE, model="m", gateway="g", ts_ms=1_000, origin=origin, eseq=eseq
        )

    for eseq in (1, 2, 3, 2, 5, 4, 4):  # 2 and 4 twice (a retried write), 4 after 5 (reclaimed)
        tally.add(enqueue("a", eseq))
    tally.add(enqueue("b", 1))  # another producer's first
    tally.add(Event(type=EventType.ENQUEUE, model="m", gateway="g", ts_ms=1_000))  # no eseq
    assert tally.enqueued == 7
    assert tally.accounted(7) is False  # none has ended


def test_event_tally_leaves_out_the_warm_up_request() -> None:
    # The demo's warm-up request can reach Redis after the tally starts at "$" (its events
    # linger for a batch); the tally is given its id and counts the load's requests only.
    tally = EventTally(model="m", ignore={"gw-0"})
    for rid, eseq in (("gw-0", 1), ("gw-1", 2), ("gw-2", 3)):
        for kind in (EventType.ENQUEUE, EventType.COMPLETE):
            tally.add(
                Event(type=kind, model="m", gateway="g", ts_ms=1_000, request_id=rid, eseq=eseq)
            )
    assert (tally.enqueued, tally.completed) == (2, 2)
    everything = EventTally(model="m")
    everything.add(
        Event(type=EventType.ENQUEUE, model="m", gateway="g", ts_ms=1, request_id="gw-0")
    )
    assert everything.enqueued == 1


def test_render_shows_every_figure() -> None:
    state = ViewState(
        title="surgescale",
        elapsed_s=12.0,
        duration_s=100.0,
        phase="burst",
        slo_s=1.0,
        arrival_rate=15.5,
        queue_depth=42,
        in_flight=16,
        waiting=50,
        ttft_p95_s=2.5,
        replicas_desired=5,
        replicas_starting=3,
        replicas_ready=2,
        nodes_desired=3,
        nodes_ready=1,
        sent=200,
        finished=150,
        decision="scale up: queue 42",
    )
    console = Console(file=io.StringIO(), width=120)
    console.print(render(state))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    for needle in (
        "15.5 req/s",
        "42 queued",
        "50 waiting",
        "2.50 s",
        "SLO 1 s",
        "5 desired, 3 starting, 2 ready",
        "3 desired, 1 ready",
        "scale up: queue 42",
    ):
        assert needle in text, needle
    assert "queue=42" in line(state)
