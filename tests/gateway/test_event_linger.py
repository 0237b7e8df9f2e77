"""The event linger: a request's events are held briefly and go to Redis together, in order,
with the timestamps of when they happened, and nothing held is lost at a snapshot or shutdown."""

from __future__ import annotations

import itertools

from gateway.reporting import Reporter
from surgescale.events import EventProducer, EventType, RedisClient, StreamKeys, connect
from surgescale.events import close as close_client
from tests.gateway.conftest import MODEL, Harness, events_of, read_events, wait_for


async def test_held_events_go_out_in_order_with_their_own_timestamps(
    redis_url: str, keys: StreamKeys, redis: RedisClient
) -> None:
    client = connect(redis_url)
    producer = EventProducer(client, keys=keys)
    await producer.start()
    clock = itertools.count(1_000)
    reporter = Reporter(
        gateway="gw-linger",
        producer=producer,
        wall_ms=lambda: next(clock),
        pod_cap=lambda model: 4,
        linger_s=3600.0,  # only `release` or a snapshot lets them out in this test
    )
    try:
        reporter.emit(EventType.ENQUEUE, MODEL, "r1", prompt_tokens=3)
        reporter.emit(EventType.DISPATCH, MODEL, "r1", pod="http://pod", queue_ms=0.5)
        assert producer.stats.emitted == 0  # held, not yet handed to the producer
        reporter.snapshot({MODEL: (0, 1)}, interval_ms=100)  # releases what came before it
        reporter.emit(EventType.FIRST_TOKEN, MODEL, "r1", pod="http://pod", ttft_ms=1.0)
        assert producer.stats.emitted == 3
        reporter.release()
        assert producer.stats.emitted == 4
        assert await producer.flush()
        events = await read_events(redis, keys)
    finally:
        await producer.close()
        await close_client(client)
    assert [e.type for e in events] == [
        EventType.ENQUEUE,
        EventType.DISPATCH,
        EventType.SNAPSHOT,
        EventType.FIRST_TOKEN,
    ]
    # Stamped when emitted (1000, 1001, 1002, 1003), not when released.
    assert [e.ts_ms for e in events] == [1_000, 1_001, 1_002, 1_003]
    assert [e.eseq for e in events] == [1, 2, 3, 4]


async def test_the_linger_timer_releases_held_events(
    redis_url: str, keys: StreamKeys, redis: RedisClient
) -> None:
    client = connect(redis_url)
    producer = EventProducer(client, keys=keys)
    await producer.start()
    reporter = Reporter(gateway="gw-linger", producer=producer, linger_s=0.005)
    try:
        reporter.emit(EventType.ENQUEUE, MODEL, "r1", prompt_tokens=3)
        reporter.emit(EventType.REJECT, MODEL, "r1", status=503, reason="no_capacity")
        await wait_for(lambda: producer.stats.flushed == 2, what="the timer to release events")
        assert producer.stats.flushes == 1  # both in one write
    finally:
        await producer.close()
        await close_client(client)
    assert [e.type for e in await read_events(redis, keys)] == [
        EventType.ENQUEUE,
        EventType.REJECT,
    ]


async def test_a_gateway_with_a_long_linger_loses_nothing_at_shutdown(
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
    await gw.stop()  # well within the linger: the final snapshot or the shutdown releases them
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
