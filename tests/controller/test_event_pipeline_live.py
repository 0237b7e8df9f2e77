"""The controller's event intake end to end (real Redis, the real loop): a backlog flushed after
a Redis outage does not scale the fleet, a resent batch applies once, and a stopped controller
leaves no consumer group behind (issue 15)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from surgescale.events import Event, EventType, RedisClient
from surgescale.events.schema import decode_entry, encode_batch
from tests.controller.conftest import MODEL, Gateway, Sim, evaluations, eventually
from tests.waiting import wait_until


async def _reading(ctl: Any) -> None:
    async def ready() -> bool:
        return bool(ctl.health.ready()[0] and ctl.is_leader and ctl.consumer.streams)

    await eventually(ready, what="controller ready, leading and reading the model's stream")


def _lifecycle(gw: str, rid: str, ts_ms: int) -> list[Event]:
    """A request that came, ran and finished (nothing left queued or in flight)."""

    def event(kind: EventType, **kw: Any) -> Event:
        return Event(type=kind, model=MODEL, gateway=gw, ts_ms=ts_ms, request_id=rid, **kw)

    return [
        event(EventType.ENQUEUE),
        event(EventType.DISPATCH, queue_ms=1.0),
        event(EventType.COMPLETE, e2e_ms=200.0, queue_ms=1.0, status=200),
    ]


async def test_a_backlog_flushed_after_an_outage_does_not_scale_up(
    sim: Sim, gateway_factory: Callable[[], Gateway]
) -> None:
    """The live finding: 1.07 s after Redis came back the controller scaled 1 -> 3 for 41.8/s
    while the real rate was 4/s. Here 25 s of 4/s arrive at once, as a gateway flushes them."""
    await sim.create_model("llama", replicas=1)
    ctl = await sim.controller("solo")
    async with gateway_factory() as gw:
        await _reading(ctl)
        await asyncio.sleep(0.5)
        folded_before = ctl.store.events
        now_ms = int(time.time() * 1000)
        for i in range(100):  # 4/s over the 25 s just past
            for event in _lifecycle(gw.name, f"b{i}", now_ms - 25_000 + i * 250):
                gw.producer.emit(event)
        assert await gw.producer.flush()

        async def folded() -> bool:
            return ctl.store.events - folded_before >= 300

        await eventually(folded, what="the backlog folded in")
        seen = evaluations(ctl)
        await wait_until(lambda: evaluations(ctl) >= seen + 3, what="3 more evaluations")
        state = ctl.store.models[MODEL]
        loop_now = asyncio.get_running_loop().time()
        assert state.arrivals_short.rate(loop_now) <= 6.0
        assert await sim.replicas("llama") == 1


async def test_a_resent_batch_applies_once(
    sim: Sim, gateway_factory: Callable[[], Gateway], redis: RedisClient
) -> None:
    await sim.create_model("llama", replicas=1)
    ctl = await sim.controller("solo")
    async with gateway_factory() as gw:
        await _reading(ctl)
        batch = _lifecycle(gw.name, "r1", int(time.time() * 1000))
        for event in batch:
            gw.producer.emit(event)
        assert await gw.producer.flush()
        # The same entries again, ids and all, as a producer resending after a timeout does.
        stream = sim.keys.stream(MODEL)
        entries: Any = await redis.xrange(stream)
        sent = [e for _, fields in entries for e in decode_entry(fields)[0] if e.request_id == "r1"]
        assert [e.eseq is not None for e in sent] == [True] * 3
        await redis.xadd(stream, encode_batch(sent))  # type: ignore[arg-type]

        async def dropped() -> int:
            state = ctl.store.models.get(MODEL)
            return state.duplicates if state is not None else 0

        assert await eventually(dropped, what="the replay dropped") == 3


async def test_a_stopped_controller_removes_its_consumer_group(
    sim: Sim, gateway_factory: Callable[[], Gateway], redis: RedisClient
) -> None:
    await sim.create_model("llama", replicas=1)
    ctl = await sim.controller("solo")
    async with gateway_factory() as gw:
        await _reading(ctl)
        stream = sim.keys.stream(MODEL)
        groups: Any = await redis.xinfo_groups(stream)
        assert [g["name"].decode() for g in groups] == [ctl.consumer.group]  # type: ignore[union-attr]
        await ctl.stop()
        sim.controllers.remove(ctl)
        groups = await redis.xinfo_groups(stream)
        assert groups == []
        gw.snapshot()
