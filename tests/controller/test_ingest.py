"""The controller's event intake against a real Redis: the models whose queue may have grown are
handed on for evaluation before the other models of the same batch (those by the drain task)."""

from __future__ import annotations

import asyncio

from controller.ingest import Ingest
from controller.ops import Metrics
from controller.state import StateStore
from surgescale.events import Event, EventConsumer, EventProducer, EventType, StreamKeys
from tests.conftest import client_for


def ev(model: str, kind: EventType, rid: str) -> Event:
    return Event(type=kind, model=model, gateway="g", ts_ms=0, request_id=rid)


async def test_a_model_whose_queue_grew_is_handed_on_first(
    redis_url: str, keys: StreamKeys
) -> None:
    async with client_for(redis_url, keys) as redis:
        producer = EventProducer(redis, keys=keys)
        await producer.start()
        for i in range(40):  # completions on many models, then one enqueue, in one batch
            producer.emit(ev(f"busy-{i}", EventType.COMPLETE, f"r{i}"))
        producer.emit(ev("waiting", EventType.ENQUEUE, "q"))
        assert await producer.flush()
        await producer.close()
        consumer = EventConsumer(redis, keys=keys, group="ctl", block_ms=20, start_id="0")
        order: list[str] = []
        all_in = asyncio.Event()

        def changed(model: str, now: float) -> None:
            order.append(model)
            if len(order) == 41:
                all_in.set()

        ingest = Ingest(
            consumer,
            admit=lambda events: events,
            store=StateStore(),
            changed=changed,
            metrics=Metrics(),
            telemetry=lambda: None,
            chunk=512,
            ack_interval_s=0.0,
        )
        task = asyncio.create_task(ingest.run())
        try:
            await asyncio.wait_for(all_in.wait(), 10)
        finally:
            consumer.stop()
            await asyncio.wait_for(task, 5)
        assert len(order) == 41
        assert order[0] == "waiting"
        # The others are handed on by the drain, each once.
        assert sorted(order[1:]) == sorted(f"busy-{i}" for i in range(40))
