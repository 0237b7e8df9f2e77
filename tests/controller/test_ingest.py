"""The controller's event intake against a real Redis: the models whose queue grew are handed on
for evaluation before the other models of the same batch (those by the drain task)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from controller.ingest import Ingest
from controller.ops import Metrics
from controller.state import StateStore
from surgescale.events import Event, EventConsumer, EventProducer, EventType, StreamKeys
from tests.conftest import client_for


def ev(model: str, kind: EventType, rid: str) -> Event:
    return Event(type=kind, model=model, gateway="g", ts_ms=0, request_id=rid)


async def handed_on(
    redis_url: str,
    keys: StreamKeys,
    events: list[Event],
    *,
    urgent: Callable[[str], bool] = lambda _: True,
) -> list[str]:
    """The order in which one batch of `events` hands its models on for evaluation."""
    expected = len({e.model for e in events})
    async with client_for(redis_url, keys) as redis:
        producer = EventProducer(redis, keys=keys)
        await producer.start()
        for event in events:
            producer.emit(event)
        assert await producer.flush()
        await producer.close()
        consumer = EventConsumer(redis, keys=keys, group="ctl", block_ms=20, start_id="0")
        order: list[str] = []
        all_in = asyncio.Event()

        def changed(model: str, now: float) -> None:
            order.append(model)
            if len(order) == expected:
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
            urgent=urgent,
        )
        task = asyncio.create_task(ingest.run())
        try:
            await asyncio.wait_for(all_in.wait(), 10)
        finally:
            consumer.stop()
            await asyncio.wait_for(task, 5)
    assert len(order) == expected, order  # each model once
    return order


async def test_a_model_whose_queue_grew_is_handed_on_first(
    redis_url: str, keys: StreamKeys
) -> None:
    # completions on many models, then one enqueue, in one batch
    events = [ev(f"busy-{i}", EventType.COMPLETE, f"r{i}") for i in range(40)]
    order = await handed_on(redis_url, keys, [*events, ev("waiting", EventType.ENQUEUE, "q")])
    assert order[0] == "waiting"
    # The others are handed on by the drain, each once.
    assert sorted(order[1:]) == sorted(f"busy-{i}" for i in range(40))


async def test_a_queue_that_did_not_grow_waits_for_the_drain(
    redis_url: str, keys: StreamKeys
) -> None:
    """Enqueues on models whose queue did not grow since their last evaluation (their
    dispatches kept up) are handed on by the drain, after the one whose queue grew: at 1,000
    models their evaluations held the loop ahead of the urgent one's scale PATCH."""
    events = [ev(f"steady-{i}", EventType.ENQUEUE, f"r{i}") for i in range(40)]
    order = await handed_on(
        redis_url,
        keys,
        [*events, ev("grew", EventType.ENQUEUE, "q")],
        urgent=lambda model: model == "grew",
    )
    assert order[0] == "grew"
    assert sorted(order[1:]) == sorted(f"steady-{i}" for i in range(40))
