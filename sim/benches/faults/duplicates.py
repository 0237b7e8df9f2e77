"""Fault `duplicates`: resent and out-of-date events must change nothing.

Injection: the bench acts as extra gateways of a probe model (`faults-probe`, its own
InferenceScaler and an empty Deployment, so nothing else writes its counts) and writes events
through the real `EventProducer`. It then re-adds some of the very stream entries it wrote (the
same bytes, as a gateway does when a batch's reply was lost and it resends), and one snapshot
older than the last one applied:

- `complete` resent: 10 requests enqueued and dispatched, 5 completed, the completes' entry
  added again (5 duplicates; each applied one would lower in-flight by one more);
- `enqueue` resent: 6 requests enqueued, the entry added again (6 duplicates; each applied one
  would raise the queue by one);
- stale snapshot: snapshots seq 5 (3 in flight) then seq 6 (7 in flight), then seq 5's entry
  added again (1 duplicate; applied, it takes in-flight back to 3).

Measured from the controller's `/metrics` (`surgescale_controller_in_flight` and
`surgescale_controller_queue_depth` of the probe model, refreshed at every evaluation), against
the values the unique events imply. After each replay the bench writes one new, unique event (a
marker) that moves the other gauge, and waits until its effect shows: the stream is read in order, so by then the replay has
been read too, however slow the controller is. `duplicate_events_applied` is the number of
injected events whose effect shows (target 0), out of `duplicate_events_injected`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sim.benches.faults.context import FaultContext, stream_entries
from sim.benches.faults.observe import parse_metric, scrape
from sim.benches.faults.report import Figure, at_most, info, measured
from sim.benches.faults.stack import PROBE_MODEL, Stack, StackOptions, running_stack
from surgescale.events import Event, EventProducer, EventType, StreamKeys, close, connect

NAME = "duplicates"
TEMPLATE = (at_most("duplicate_events_applied", None, 0, fault=NAME),)
HOUR_MS = 3_600_000
FLIGHT = "surgescale_controller_in_flight"
QUEUE = "surgescale_controller_queue_depth"


class Probe:
    """Writes probe-model events and reads the controller's view of them."""

    def __init__(self, stack: Stack, producer: EventProducer) -> None:
        self.stack = stack
        self.producer = producer
        self.metrics_url = stack.controllers[stack.leader].metrics_url

    def event(self, gateway: str, kind: EventType, **fields: Any) -> Event:
        return Event(
            type=kind, model=PROBE_MODEL, gateway=gateway, ts_ms=int(time.time() * 1000), **fields
        )

    async def emit(self, events: Sequence[Event]) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Write `events`; the stream entries they became."""
        before = await self._entries()
        for e in events:
            self.producer.emit(e)
        await self.producer.flush(timeout=5.0)
        after = await self._entries()
        return after[len(before) :]

    async def replay(self, entries: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> None:
        client = connect(self.stack.redis.url)
        try:
            stream = StreamKeys(self.stack.prefix).stream(PROBE_MODEL)
            for _, fields in entries:
                await client.xadd(stream, fields)  # type: ignore[arg-type]
        finally:
            await close(client)

    async def _entries(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return await stream_entries(self.stack.redis.url, self.stack.prefix, PROBE_MODEL)

    async def both(self) -> tuple[float | None, float | None]:
        """(in flight, queue depth) of the probe model, from one scrape."""
        text = await scrape(self.metrics_url)
        labels = {"model": PROBE_MODEL}
        return parse_metric(text, FLIGHT, labels), parse_metric(text, QUEUE, labels)

    async def until(
        self, ok: Callable[[float, float], bool], what: str, timeout_s: float = 10.0
    ) -> tuple[float, float]:
        """Wait until (in flight, queue) satisfies `ok`; that pair. Raises if it never does."""
        deadline = time.monotonic() + timeout_s
        while True:
            flight, queue = await self.both()
            if flight is not None and queue is not None and ok(flight, queue):
                return flight, queue
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the controller never showed {what} (in flight {flight}, queue {queue})"
                )
            await asyncio.sleep(0.1)


async def _cases(probe: Probe) -> tuple[int, int, dict[str, int]]:
    tag = uuid.uuid4().hex[:6]
    ev = probe.event
    applied: dict[str, int] = {}

    def snapshot(gw: str, *, seq: int, queue: int = 0, flight: int = 0) -> Event:
        return ev(
            gw,
            EventType.SNAPSHOT,
            queue_depth=queue,
            in_flight=flight,
            seq=seq,
            interval_ms=HOUR_MS,
        )

    # Make sure the controller reads the probe stream before anything is measured.
    warm = f"probe-{tag}-0"
    deadline = time.monotonic() + 20.0
    while (await probe.both()) != (1.0, 0.0):
        if time.monotonic() > deadline:
            raise RuntimeError("the controller never reported the probe model's counts")
        await probe.emit([snapshot(warm, seq=1, flight=1)])
        await asyncio.sleep(0.3)
    marks = f"probe-{tag}-mark"
    await probe.emit([snapshot(marks, seq=1)])
    f, q = 1.0, 0.0

    # Each replay is followed by one new, unique event (a marker) that moves the *other* gauge:
    # once it shows, the controller has read the replay before it (one stream, read in order).

    # complete resent, measured on in-flight; marker: one enqueue (queue + 1)
    gw = f"probe-{tag}-1"
    rids = [f"{gw}-r{i}" for i in range(10)]
    await probe.emit(
        [snapshot(gw, seq=1)]
        + [ev(gw, EventType.ENQUEUE, request_id=r) for r in rids]
        + [ev(gw, EventType.DISPATCH, request_id=r, queue_ms=1.0, pod="p") for r in rids]
    )
    f += 10
    await probe.until(lambda a, b: (a, b) == (f, q), f"in flight {f}")
    done = await probe.emit(
        [ev(gw, EventType.COMPLETE, request_id=r, status=200, output_tokens=1) for r in rids[:5]]
    )
    f -= 5
    await probe.until(lambda a, b: (a, b) == (f, q), f"in flight {f}")
    await probe.replay(done)
    await probe.emit([ev(marks, EventType.ENQUEUE, request_id=f"{marks}-1")])
    q += 1
    seen, _ = await probe.until(lambda a, b: b == q, "the marker enqueue")
    applied["complete"] = round(f - seen)
    f = seen

    # enqueue resent, measured on the queue; marker: a snapshot with one more in flight
    gw = f"probe-{tag}-2"
    await probe.emit([snapshot(gw, seq=1)])
    enq = await probe.emit([ev(gw, EventType.ENQUEUE, request_id=f"{gw}-r{i}") for i in range(6)])
    q += 6
    await probe.until(lambda a, b: (a, b) == (f, q), f"queue {q}")
    await probe.replay(enq)
    await probe.emit([snapshot(marks, seq=2, queue=1, flight=1)])
    f += 1
    _, seen = await probe.until(lambda a, b: a == f, "the marker snapshot")
    applied["enqueue"] = round(seen - q)
    q = seen

    # stale snapshot, measured on in-flight; marker: a snapshot with one more queued
    gw = f"probe-{tag}-3"
    old = await probe.emit([snapshot(gw, seq=5, flight=3)])
    await probe.emit([snapshot(gw, seq=6, flight=7)])
    f += 7
    await probe.until(lambda a, b: (a, b) == (f, q), f"in flight {f}")
    await probe.replay(old)
    await probe.emit([snapshot(marks, seq=3, queue=2, flight=1)])
    q += 1
    seen, _ = await probe.until(lambda a, b: b == q, "the marker snapshot")
    applied["stale_snapshot"] = 1 if round(f - seen) == 4 else 0
    return sum(applied.values()), 5 + 6 + 1, applied


async def run(ctx: FaultContext) -> list[Figure]:
    options = StackOptions(controllers=1, probe_model=True)
    async with running_stack(options, ctx.work / NAME) as st:
        client = connect(st.redis.url)
        producer = EventProducer(client, keys=StreamKeys(st.prefix))
        await producer.start()
        try:
            total, injected, by_case = await _cases(Probe(st, producer))
        finally:
            await producer.close()
            await close(client)
    return [
        *measured(TEMPLATE, {"duplicate_events_applied": total}),
        info("duplicate_events_injected", injected, fault=NAME),
        *(info(f"duplicate_{k}_applied", v, fault=NAME) for k, v in by_case.items()),
    ]
