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
the values the unique events imply: `duplicate_events_applied` is the number of injected events
whose effect shows (target 0), out of `duplicate_events_injected`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

from sim.benches.faults.context import FaultContext, stream_entries
from sim.benches.faults.observe import metric
from sim.benches.faults.report import Figure, at_most, info, measured
from sim.benches.faults.stack import PROBE_MODEL, Stack, StackOptions, running_stack
from surgescale.events import Event, EventProducer, EventType, StreamKeys, close, connect

NAME = "duplicates"
TEMPLATE = (at_most("duplicate_events_applied", None, 0, fault=NAME),)
HOUR_MS = 3_600_000


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

    async def gauge(self, name: str) -> float | None:
        return await metric(self.metrics_url, name, {"model": PROBE_MODEL})

    async def settle(self, name: str, expect: float, timeout_s: float = 4.0) -> float | None:
        """Wait until the gauge shows `expect` (bounded); the last value read."""
        deadline = time.monotonic() + timeout_s
        value = await self.gauge(name)
        while value != expect and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            value = await self.gauge(name)
        return value

    async def after_ticks(self, name: str) -> float:
        """The gauge after the controller had time for two periodic evaluations."""
        await asyncio.sleep(2.5)
        return await self.gauge(name) or 0.0


async def _cases(probe: Probe) -> tuple[int, int, dict[str, int]]:
    flight = "surgescale_controller_in_flight"
    queue = "surgescale_controller_queue_depth"
    tag = uuid.uuid4().hex[:6]
    ev = probe.event
    applied: dict[str, int] = {}

    # Make sure the controller reads the probe stream before anything is measured.
    warm = f"probe-{tag}-0"
    deadline = time.monotonic() + 20.0
    while await probe.gauge(flight) != 1.0:
        if time.monotonic() > deadline:
            raise RuntimeError("the controller never reported the probe model's in-flight")
        await probe.emit(
            [ev(warm, EventType.SNAPSHOT, queue_depth=0, in_flight=1, seq=1, interval_ms=HOUR_MS)]
        )
        await asyncio.sleep(0.3)
    base_flight = 1.0

    # complete resent
    gw = f"probe-{tag}-1"
    rids = [f"{gw}-r{i}" for i in range(10)]
    await probe.emit(
        [ev(gw, EventType.SNAPSHOT, queue_depth=0, in_flight=0, seq=1, interval_ms=HOUR_MS)]
        + [ev(gw, EventType.ENQUEUE, request_id=r) for r in rids]
        + [ev(gw, EventType.DISPATCH, request_id=r, queue_ms=1.0, pod="p") for r in rids]
    )
    await probe.settle(flight, base_flight + 10)
    done = await probe.emit(
        [ev(gw, EventType.COMPLETE, request_id=r, status=200, output_tokens=1) for r in rids[:5]]
    )
    expect = base_flight + 5
    before = await probe.settle(flight, expect) or 0.0
    await probe.replay(done)
    after = await probe.after_ticks(flight)
    applied["complete"] = max(0, round(before - after))

    # enqueue resent
    gw = f"probe-{tag}-2"
    q0 = await probe.gauge(queue) or 0.0
    await probe.emit(
        [ev(gw, EventType.SNAPSHOT, queue_depth=0, in_flight=0, seq=1, interval_ms=HOUR_MS)]
    )
    await asyncio.sleep(0.3)
    enq = await probe.emit([ev(gw, EventType.ENQUEUE, request_id=f"{gw}-r{i}") for i in range(6)])
    before = await probe.settle(queue, q0 + 6) or 0.0
    await probe.replay(enq)
    after = await probe.after_ticks(queue)
    applied["enqueue"] = max(0, round(after - before))

    # stale snapshot
    gw = f"probe-{tag}-3"
    f0 = await probe.gauge(flight) or 0.0
    old = await probe.emit(
        [ev(gw, EventType.SNAPSHOT, queue_depth=0, in_flight=3, seq=5, interval_ms=HOUR_MS)]
    )
    await probe.settle(flight, f0 + 3)
    await probe.emit(
        [ev(gw, EventType.SNAPSHOT, queue_depth=0, in_flight=7, seq=6, interval_ms=HOUR_MS)]
    )
    before = await probe.settle(flight, f0 + 7) or 0.0
    await probe.replay(old)
    after = await probe.after_ticks(flight)
    applied["stale_snapshot"] = 1 if round(before - after) == 4 else 0
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
