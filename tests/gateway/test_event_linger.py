"""The event linger: events are held briefly and go to Redis together (several requests' in one
write), in order, with the timestamps of when they happened; an enqueue that waits for a slot
and a reject go at once; a release is put off while a request waits for its first byte (within
a bound); nothing held is lost at a snapshot or shutdown; events the request path leaves for the
loop's next turn keep their timestamps and their order."""

from __future__ import annotations

import asyncio
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
    assert producer.stats.emitted == 0  # a request's end waits too (it may share a write)
    reporter.release()
    assert producer.stats.emitted == 5
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


async def test_two_requests_share_one_write(
    producer: EventProducer, keys: StreamKeys, redis: RedisClient
) -> None:
    reporter = Reporter(gateway="gw-linger", producer=producer, linger_s=3600.0)
    for rid in ("r1", "r2"):
        reporter.emit(EventType.ENQUEUE, MODEL, rid, prompt_tokens=3)
        reporter.emit(EventType.DISPATCH, MODEL, rid, pod="http://pod", queue_ms=0.5)
        reporter.emit(EventType.COMPLETE, MODEL, rid, pod="http://pod", status=200)
        await asyncio.sleep(0.01)  # the producer's flusher gets the loop: nothing to write
    assert producer.stats.flushes == 0
    reporter.release()  # what the linger timer does
    await wait_for(lambda: producer.stats.flushed == 6, what="the release to be written")
    assert producer.stats.flushes == 1
    assert [(e.request_id, e.type) for e in await read_events(redis, keys)] == [
        (rid, kind)
        for rid in ("r1", "r2")
        for kind in (EventType.ENQUEUE, EventType.DISPATCH, EventType.COMPLETE)
    ]


@pytest.mark.parametrize("kind", ["waiting enqueue", "reject"])
async def test_urgent_events_go_at_once_with_what_is_held(
    producer: EventProducer, keys: StreamKeys, redis: RedisClient, kind: str
) -> None:
    reporter = Reporter(gateway="gw-linger", producer=producer, linger_s=3600.0)
    reporter.emit(EventType.COMPLETE, MODEL, "r0", pod="http://pod", status=200)
    reporter.emit(EventType.ENQUEUE, MODEL, "r1", prompt_tokens=3)  # dispatched at once
    assert producer.stats.emitted == 0
    if kind == "reject":
        reporter.emit(EventType.REJECT, MODEL, "r2", status=429, reason="queue_full")
    else:
        reporter.emit(EventType.ENQUEUE, MODEL, "r2", urgent=True, prompt_tokens=3)
    assert producer.stats.emitted == 3
    assert await producer.flush()
    assert [e.request_id for e in await read_events(redis, keys)] == ["r0", "r1", "r2"]


async def test_events_left_for_the_next_turn_keep_their_time_and_their_place(
    producer: EventProducer, keys: StreamKeys, redis: RedisClient
) -> None:
    clock = itertools.count(1_000)
    reporter = Reporter(  # no linger: an event built is an event handed to the producer
        gateway="gw-linger", producer=producer, wall_ms=lambda: next(clock), linger_s=0.0
    )
    reporter.emit(EventType.ENQUEUE, MODEL, "r1", soon=True, prompt_tokens=3)
    reporter.emit(EventType.DISPATCH, MODEL, "r1", soon=True, pod="http://pod")
    assert producer.stats.emitted == 0  # nothing built yet: the request path goes on
    await asyncio.sleep(0)  # the loop's next turn
    assert producer.stats.emitted == 2
    reporter.emit(EventType.FIRST_TOKEN, MODEL, "r1", soon=True, pod="http://pod")
    next(clock)  # time passes before the loop's turn
    # An event that goes now takes what was left before it, in order.
    reporter.emit(EventType.COMPLETE, MODEL, "r0", pod="http://pod", status=200)
    reporter.emit(EventType.DISPATCH, MODEL, "r2", soon=True, pod="http://pod")
    reporter.snapshot({MODEL: (0, 2)}, interval_ms=100)  # and so does a snapshot
    reporter.emit(EventType.ENQUEUE, MODEL, "r3", urgent=True, soon=True)  # urgent: now
    assert producer.stats.emitted == 7
    await asyncio.sleep(0)  # nothing is left for the turn: nothing twice
    assert producer.stats.emitted == 7
    assert await producer.flush()
    events = await read_events(redis, keys)
    assert [(e.type, e.request_id) for e in events] == [
        (EventType.ENQUEUE, "r1"),
        (EventType.DISPATCH, "r1"),
        (EventType.FIRST_TOKEN, "r1"),
        (EventType.COMPLETE, "r0"),
        (EventType.DISPATCH, "r2"),
        (EventType.SNAPSHOT, ""),
        (EventType.ENQUEUE, "r3"),
    ]
    # Stamped at the milestone (1,003 went by before the first token's event was built).
    assert [e.ts_ms for e in events] == [1_000, 1_001, 1_002, 1_004, 1_005, 1_006, 1_007]


async def test_with_a_listener_nothing_is_left_for_later(producer: EventProducer) -> None:
    reporter = Reporter(gateway="gw-linger", producer=producer, linger_s=0.0)
    seen: list[str] = []  # a tracer opens a span here, before the request leaves
    reporter.add_listener(lambda kind, model, request_id, fields: seen.append(request_id))
    reporter.emit(EventType.DISPATCH, MODEL, "r1", soon=True, pod="http://pod")
    assert seen == ["r1"]
    assert producer.stats.emitted == 1


async def test_a_release_waits_for_first_bytes(producer: EventProducer) -> None:
    reporter = Reporter(
        gateway="gw-linger", producer=producer, linger_s=0.005, defer_limit_s=3600.0
    )
    reporter.emit(EventType.COMPLETE, MODEL, "r0", pod="http://pod", status=200)
    reporter.emit(EventType.ENQUEUE, MODEL, "r1", prompt_tokens=3)
    reporter.emit(EventType.DISPATCH, MODEL, "r1", pod="http://pod", queue_ms=0.5)
    await wait_for(lambda: reporter.deferred, what="the linger to run out")
    assert producer.stats.emitted == 0  # r1 is waiting for its first byte
    reporter.emit(EventType.FIRST_TOKEN, MODEL, "r1", pod="http://pod", ttft_ms=1.0)
    assert producer.stats.emitted == 0  # its first byte is next: wait for one more event
    reporter.emit(EventType.COMPLETE, MODEL, "r1", pod="http://pod", status=200)
    assert producer.stats.emitted == 5  # no request waits for a first byte: all go now
    assert not reporter.deferred


async def test_a_queued_request_does_not_put_a_release_off(producer: EventProducer) -> None:
    reporter = Reporter(
        gateway="gw-linger", producer=producer, linger_s=0.005, defer_limit_s=3600.0
    )
    reporter.emit(EventType.ENQUEUE, MODEL, "r1", urgent=True, prompt_tokens=3)  # waits for a slot
    reporter.emit(EventType.COMPLETE, MODEL, "r0", pod="http://pod", status=200)
    await wait_for(lambda: producer.stats.emitted == 2, what="the linger to release r0's end")
    assert not reporter.deferred


async def test_a_deferred_release_has_a_bound(producer: EventProducer) -> None:
    reporter = Reporter(gateway="gw-linger", producer=producer, linger_s=0.005, defer_limit_s=0.02)
    reporter.emit(EventType.ENQUEUE, MODEL, "r1", prompt_tokens=3)
    reporter.emit(EventType.DISPATCH, MODEL, "r1", pod="http://pod")  # never gets a first byte
    await wait_for(lambda: producer.stats.emitted == 2, what="the bound to release it")
    assert not reporter.deferred


async def test_a_gateway_sends_an_enqueue_that_waits_for_a_slot_at_once(
    harness: Harness, redis: RedisClient, keys: StreamKeys
) -> None:
    pod = await harness.pod(load_seconds=60.0)  # never Ready in this test: requests wait
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"], event_linger_ms=1000)
    queue = gw.state.scheduler.queues[MODEL]
    task = asyncio.create_task(gw.client().completions.create(model=MODEL, prompt="x"))
    await wait_for(lambda: queue.queued == 1, what="the request to be queued")
    reporter = gw.state.reporter
    assert reporter is not None
    assert reporter.producer is not None
    assert reporter.producer.stats.emitted >= 1  # not held for the 1 s linger
    events = await events_of(redis, keys, {"enqueue"})
    assert [e.type for e in events if e.request_id] == [EventType.ENQUEUE]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await gw.stop()


async def test_a_gateway_with_a_long_linger_sends_a_request_s_events_in_order(
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
