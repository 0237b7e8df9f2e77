"""The event pipeline under faults (issue 15), each against a private redis-server of its own:
a paused Redis that makes the producer resend, a flood against `maxmemory`, a full Redis, a Redis
restarted empty, a failed ack, and consumer-group housekeeping."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from controller.state import StateStore
from sim.localredis.server import RedisServer, start_private_redis
from surgescale.events import (
    Event,
    EventConsumer,
    EventProducer,
    EventType,
    RedisClient,
    StreamKeys,
    close,
    connect,
)
from surgescale.events import producer as producer_module
from surgescale.events.schema import decode_entry, encode
from tests.waiting import wait_until


@pytest.fixture
def server() -> Iterator[RedisServer]:
    srv = start_private_redis()
    try:
        yield srv
    finally:
        if srv.process is not None and srv.process.poll() is None:
            os.kill(srv.process.pid, signal.SIGCONT)
        srv.stop()


@pytest.fixture
async def admin(server: RedisServer) -> AsyncIterator[RedisClient]:
    client = connect(server.url, timeout=5.0)
    yield client
    await close(client)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def stream_events(client: RedisClient, key: str) -> list[Event]:
    reply: Any = await client.xrange(key)
    out: list[Event] = []
    for _, fields in reply:
        events, bad = decode_entry(fields)
        assert not bad
        out.extend(events)
    return out


def ev(kind: EventType, rid: str = "", **kw: Any) -> Event:
    return Event(type=kind, model="m", gateway="gw", ts_ms=1, request_id=rid, **kw)


async def test_a_paused_redis_makes_the_producer_resend_and_the_resent_events_apply_once(
    server: RedisServer, admin: RedisClient
) -> None:
    """The live finding: Redis paused (SIGSTOP) past the producer's socket timeout; the producer
    resent its batch, Redis then ran both copies, and 2 completes lowered in-flight twice."""
    keys = StreamKeys("t")
    client = connect(server.url, timeout=0.3, connect_timeout=0.3)
    producer = EventProducer(client, keys=keys)
    await producer.start()
    producer.emit(ev(EventType.SNAPSHOT, queue_depth=0, in_flight=5, seq=1, interval_ms=1000))
    assert await producer.flush()
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        producer.emit(ev(EventType.COMPLETE, "r1"))
        producer.emit(ev(EventType.COMPLETE, "r2"))
        producer.emit(ev(EventType.SNAPSHOT, queue_depth=0, in_flight=3, seq=2, interval_ms=1000))
        await wait_for(lambda: producer.stats.flush_errors >= 2)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert await producer.flush(timeout=10.0)
    await producer.close()
    await close(client)

    events = await stream_events(admin, keys.stream("m"))
    ids = {(e.origin, e.eseq) for e in events}
    assert len(events) > len(ids) == 4, "the pause should have made Redis store a resent copy"
    assert all(e.origin == producer.origin for e in events)
    store = StateStore()
    store.ingest(events, 0.0)
    assert store.model("m").in_flight == 3
    assert store.model("m").duplicates == len(events) - 4


async def test_a_flood_keeps_each_stream_within_its_event_bound(
    server: RedisServer, admin: RedisClient
) -> None:
    """Trimming used to count entries (MAXLEN 100,000) while an entry carries up to 100 events:
    a flood could hold 10 million events. Now the bound counts events."""
    await admin.config_set("maxmemory", "64mb")
    keys = StreamKeys("t")
    limits = producer_module.StreamLimits(max_events=20_000)
    producer = EventProducer(admin, keys=keys, limits=limits)
    await producer.start()
    for n in range(200_000):
        producer.emit(ev(EventType.ENQUEUE, f"r{n}"))
        if n % 5_000 == 0:
            await asyncio.sleep(0)
    assert await producer.flush(timeout=60.0)
    await producer.close()
    held = len(await stream_events(admin, keys.stream("m")))
    # Approximate trimming keeps up to one macro node (100 entries of <= 100 events) extra.
    assert 19_000 <= held <= 20_000 + 100 * 100
    info: Any = await admin.info("memory")
    assert info["used_memory"] < 32 * 2**20
    assert producer.stats.refused == 0


async def test_entries_older_than_the_age_bound_are_trimmed(
    server: RedisServer, admin: RedisClient
) -> None:
    keys = StreamKeys("t")
    stream = keys.stream("m")
    old_ms = int(time.time() * 1000) - 120_000  # entries written two minutes ago
    async with admin.pipeline(transaction=False) as pipe:
        for n in range(1_000):
            fields = encode(ev(EventType.ENQUEUE, f"old{n}"))
            pipe.xadd(stream, fields, id=f"{old_ms + n}-0")  # type: ignore[arg-type]
        await pipe.execute()
    producer = EventProducer(admin, keys=keys, limits=producer_module.StreamLimits(max_age_s=60.0))
    await producer.start()
    producer.emit(ev(EventType.ENQUEUE, "new"))
    assert await producer.flush()
    await producer.close()
    left = [e.request_id for e in await stream_events(admin, keys.stream("m"))]
    assert left[-1] == "new"
    assert len(left) <= 101  # approximate: at most one Redis macro node of old entries is left


async def test_a_full_redis_refuses_writes_and_the_producer_drops_and_counts_them(
    server: RedisServer, admin: RedisClient
) -> None:
    ballast = [f"ballast:{i}" for i in range(100)]
    await admin.mset({key: b"x" * 65_536 for key in ballast})
    info: Any = await admin.info("memory")
    # Redis is now past maxmemory (and evicts nothing: the default noeviction policy).
    await admin.config_set("maxmemory", str(info["used_memory"] - 2**20))
    keys = StreamKeys("t")
    client = connect(server.url, timeout=1.0)
    producer = EventProducer(client, keys=keys)
    await producer.start()
    attempts = (producer.stats.flushes, producer.stats.flush_errors)
    for n in range(10):
        producer.emit(ev(EventType.ENQUEUE, f"r{n}"))  # never raises, never waits
    assert (producer.stats.flushes, producer.stats.flush_errors) == attempts  # no write tried
    assert await producer.flush(timeout=5.0), "refused events must not be retried forever"
    assert producer.stats.refused == 10
    assert producer.stats.dropped == 10
    await admin.delete(*ballast)
    producer.emit(ev(EventType.ENQUEUE, "after"))
    await wait_for(lambda: producer.stats.flushed == 1)
    assert [e.request_id for e in await stream_events(admin, keys.stream("m"))] == ["after"]
    await producer.close()
    await close(client)


async def collect(consumer: EventConsumer, want: int, timeout: float = 15.0) -> list[Event]:
    got: list[Event] = []

    async def run() -> None:
        async for batch in consumer.batches():
            got.extend(batch.events)
            await batch.ack()
            if len(got) >= want:
                return

    await asyncio.wait_for(run(), timeout)
    return got


async def test_a_new_consumer_finds_the_streams_of_a_redis_restarted_empty(
    server: RedisServer,
) -> None:
    """The live finding: after Redis lost its data a new controller found 0 streams while the
    gateway wrote 180 entries (the registry was written once per stream)."""
    keys = StreamKeys("t")
    client = connect(server.url, timeout=0.5, connect_timeout=0.3)
    producer = EventProducer(client, keys=keys)
    await producer.start()
    producer.emit(ev(EventType.ENQUEUE, "before"))
    assert await producer.flush()
    server.stop()
    server.start()  # empty: no persistence
    for n in range(3):  # the gateway keeps writing
        producer.emit(ev(EventType.ENQUEUE, f"r{n}"))
    await wait_for(lambda: producer.stats.flushed == 4)
    reader = connect(server.url)
    consumer = EventConsumer(
        reader, keys=keys, group="new", consumer="c", block_ms=50, start_id="$",
        discover_interval_s=0.05,
    )  # fmt: skip
    await consumer.discover()
    assert consumer.streams == [keys.stream("m")]
    for n in range(180):
        producer.emit(ev(EventType.ENQUEUE, f"s{n}"))
    got = await collect(consumer, 180)
    assert [e.request_id for e in got] == [f"s{n}" for n in range(180)]
    await producer.close()
    await close(client)
    await close(reader)


async def test_streams_are_found_by_key_pattern_when_the_registry_is_gone(
    server: RedisServer, admin: RedisClient
) -> None:
    keys = StreamKeys("t")
    await admin.xadd(keys.stream("a"), {b"e": b"{}"})
    await admin.xadd(keys.stream("b"), {b"e": b"{}"})
    await admin.xadd("t:events:not-a-stream-of-ours", {b"e": b"{}"})
    await admin.set("t:events:{c}", b"a string, not a stream")
    consumer = EventConsumer(admin, keys=keys, group="g", consumer="c")
    await consumer.discover()
    assert sorted(consumer.streams) == [keys.stream("a"), keys.stream("b")]


async def test_a_failed_ack_is_retried(server: RedisServer, admin: RedisClient) -> None:
    keys = StreamKeys("t")
    producer = EventProducer(admin, keys=keys)
    await producer.start()
    for n in range(5):
        producer.emit(ev(EventType.ENQUEUE, f"r{n}"))
    assert await producer.flush()
    await producer.close()
    # The consumer's user may not XACK for a while: its acks fail with an error reply.
    await admin.acl_setuser(
        "reader", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
        commands=["+@all", "-xack"],
    )  # fmt: skip
    client = connect(f"redis://reader:pw@127.0.0.1:{server.port}/0")
    consumer = EventConsumer(client, keys=keys, group="g", consumer="c", block_ms=50)
    batch = await anext(aiter(consumer.batches()))
    assert len(batch.deliveries) == 5
    with pytest.raises(Exception, match="xack"):
        await batch.ack()
    assert consumer.stats.ack_errors == 1
    pending: Any = await admin.xpending(keys.stream("m"), "g")
    assert pending["pending"] == 1  # one entry holds the five events
    await admin.acl_setuser("reader", commands=["+xack"])
    await consumer.ack([])  # the next ack (or read) retries the failed one
    pending = await admin.xpending(keys.stream("m"), "g")
    assert pending["pending"] == 0
    assert consumer.stats.acked == 5
    await close(client)


async def test_groups_are_removed_on_shutdown_and_stale_ones_collected(
    server: RedisServer, admin: RedisClient
) -> None:
    keys = StreamKeys("t")
    await admin.xadd(keys.stream("m"), {b"e": b"{}"})
    await admin.sadd(keys.registry, keys.stream("m"))

    def consumer(group: str, **kw: Any) -> EventConsumer:
        return EventConsumer(admin, keys=keys, group=group, consumer=group, block_ms=10, **kw)

    old = consumer("ctl-old")  # a controller that stopped without cleaning up
    await old.discover()
    await old._poll()
    other = consumer("someone-else")  # not ours to collect
    await other.discover()
    live = consumer("ctl-live", stale_group_prefix="ctl-", stale_group_idle_s=0.3)
    await live.discover()
    collected = await wait_until(live.collect_stale_groups, what="ctl-old idle for 0.3 s")
    assert collected == [(keys.stream("m"), "ctl-old")]
    groups: Any = await admin.xinfo_groups(keys.stream("m"))
    assert sorted(g["name"].decode() for g in groups) == ["ctl-live", "someone-else"]
    assert await live.remove_group() == 1  # clean shutdown
    groups = await admin.xinfo_groups(keys.stream("m"))
    assert [g["name"].decode() for g in groups] == ["someone-else"]
