"""The event linger: a request's events are held briefly and go to Redis together, in order,
with the timestamps of when they happened, and nothing held is lost at a snapshot or shutdown."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from gateway.reporting import Reporter
from surgescale.events import EventProducer, EventType, RedisClient, StreamKeys, connect
from surgescale.events import close as close_client
from tests.gateway.conftest import MODEL, Harness, events_of, read_events, wait_for


@pytest.fixture
async def producer(redis_url: str, keys: StreamKeys) -> AsyncIterator[EventProducer]:
    """A started producer on its own client, closed (with the client) after the test."""
    client = connect(redis_url)
    producer = EventProducer(client, keys=keys)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.close()
        await close_client(client)


async def test_held_events_go_out_in_order_with_their_own_timestamps(
    producer: EventProducer, keys: StreamKeys, redis: RedisClient
) -> None:
    clock = itertools.count(1_000)
    reporter = Reporter(
        gateway="gw-linger",
        producer=producer,
        wall_ms=lambda: next(clock),
        pod_cap=lambda model: 4,
        linger_s=3600.0,  # only `release` or a snapshot lets them out in this test
    )
    reporter.emit(EventType.ENQUEUE, MODEL, "r1", prompt_tokens=3)
    reporter.emit(EventType.DISPATCH, MODEL, "r1", pod="http://pod", queue_ms=0.5)
    assert producer.stats.emitted == 0  # held, not yet handed to the producer
    reporter.snapshot({MODEL: (0, 1)}, interval_ms=100)  # held too, after what it counts
    reporter.emit(EventType.FIRST_TOKEN, MODEL, "r1", pod="http://pod", ttft_ms=1.0)
    assert producer.stats.emitted == 0
    reporter.emit(EventType.COMPLETE, MODEL, "r1", pod="http://pod", status=200)
    assert producer.stats.emitted == 5  # a request's last event releases at once
    assert await producer.flush()
    events = await read_events(redis, keys)
    assert [e.type for e in events] == [
        EventType.ENQUEUE,
        EventType.DISPATCH,
        EventType.SNAPSHOT,
        EventType.FIRST_TOKEN,
        EventType.COMPLETE,
    ]
    # Stamped when emitted, not when released.
    assert [e.ts_ms for e in events] == [1_000, 1_001, 1_002, 1_003, 1_004]
    assert [e.eseq for e in events] == [1, 2, 3, 4, 5]


async def test_release_hands_over_what_is_held(
    producer: EventProducer, keys: StreamKeys, redis: RedisClient
) -> None:
    reporter = Reporter(gateway="gw-linger", producer=producer, linger_s=3600.0)
    reporter.emit(EventType.ENQUEUE, MODEL, "r1", prompt_tokens=3)
    assert producer.stats.emitted == 0
    reporter.release()  # what the gateway does on its way down
    assert producer.stats.emitted == 1
    reporter.release()  # nothing held: nothing more
    assert producer.stats.emitted == 1
    assert await producer.flush()
    assert [e.type for e in await read_events(redis, keys)] == [EventType.ENQUEUE]


async def test_the_linger_timer_releases_held_events(
    producer: EventProducer, keys: StreamKeys, redis: RedisClient
) -> None:
    reporter = Reporter(gateway="gw-linger", producer=producer, linger_s=0.005)
    reporter.emit(EventType.ENQUEUE, MODEL, "r1", prompt_tokens=3)
    reporter.emit(EventType.DISPATCH, MODEL, "r1", pod="http://pod", queue_ms=0.5)
    await wait_for(lambda: producer.stats.flushed == 2, what="the timer to release events")
    assert producer.stats.flushes == 1  # both in one write
    assert [e.type for e in await read_events(redis, keys)] == [
        EventType.ENQUEUE,
        EventType.DISPATCH,
    ]


async def test_a_gateway_with_a_long_linger_sends_a_request_s_events_when_it_ends(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"], event_linger_ms=1000)
    queue = gw.state.scheduler.queues[MODEL]
    await wait_for(lambda: queue.ready_pods == 1, what="pod ready")
    chunks = await gw.client().completions.create(
        model=MODEL, prompt="x", max_tokens=3, stream=True
    )
    assert len([c async for c in chunks if c.choices]) == 3
    # Well within the 1 s linger: `complete` released the request's events, in order.
    events = await events_of(redis, keys, {"enqueue", "dispatch", "first_token", "complete"})
    mine = [e for e in events if e.request_id]
    assert [e.type for e in mine] == [
        EventType.ENQUEUE,
        EventType.DISPATCH,
        EventType.FIRST_TOKEN,
        EventType.COMPLETE,
    ]
    stamps = [e.ts_ms for e in mine]
    assert stamps == sorted(stamps)
    await gw.stop()
