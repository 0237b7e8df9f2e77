"""Reads that follow Redis's keyspace notifications (real Redis): only the streams that changed
are named, nothing is lost when notifications are, and a Redis that refuses CONFIG is read as
before.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from surgescale.events import EventConsumer, RedisClient, StreamKeys, close, connect
from surgescale.events.notify import FLAGS, missing_flags
from surgescale.events.schema import encode
from tests.controller.conftest import eventually
from tests.events.test_many_streams import ev, fill

STREAMS = 300


@pytest.fixture
async def flags(redis: RedisClient) -> AsyncIterator[None]:
    """Leave the server's notification flags as this test found them."""
    before = await server_flags(redis)
    yield
    await redis.config_set(FLAGS, before)


async def server_flags(redis: RedisClient) -> str:
    got = await redis.config_get(FLAGS)  # redis-py decodes CONFIG GET's reply
    return str(next(iter(got.values()), ""))


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    async def probe() -> bool:
        return check()

    await eventually(probe, timeout=timeout, what=what)


async def add(redis: RedisClient, keys: StreamKeys, model: str, n: int) -> None:
    await redis.xadd(keys.stream(model), encode(ev(model, n)))  # type: ignore[arg-type]


class Reader:
    """A consumer's batches gathered by a task of their own."""

    def __init__(self, consumer: EventConsumer) -> None:
        self.consumer = consumer
        self.got: list[str] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for batch in self.consumer.batches():
            self.got.extend(e.model for e in batch.events)
            await batch.ack()

    async def stop(self) -> None:
        self.consumer.stop()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.mark.parametrize(
    ("flags_set", "missing"),
    [("", "Kt"), ("Ex", "Kt"), ("KEA", ""), ("Kt", ""), ("Et", "K"), ("K$", "t")],
)
def test_missing_flags(flags_set: str, missing: str) -> None:
    assert missing_flags(flags_set) == missing


async def test_reads_name_only_the_streams_that_changed(
    redis: RedisClient, keys: StreamKeys, flags: None
) -> None:
    await redis.config_set(FLAGS, "")
    models = [f"m{i}" for i in range(STREAMS)]
    await fill(redis, keys, models)
    consumer = EventConsumer(
        redis, group="g", consumer="c", keys=keys, block_ms=50, notify=True, full_read_s=60.0
    )
    reader = Reader(consumer)
    try:
        await until(lambda: len(reader.got) >= STREAMS, "the first entries are read")
        await until(lambda: consumer.notified, "reads follow notifications")
        assert missing_flags(await server_flags(redis)) == ""  # turned on by the consumer
        full = consumer.stats.full_reads
        reader.got.clear()
        for n in range(20):
            await add(redis, keys, models[n * 7], n)
            await asyncio.sleep(0.005)
        await until(lambda: len(reader.got) >= 20, "every new entry is read")
        assert sorted(reader.got) == sorted(models[n * 7] for n in range(20))
        assert consumer.stats.notified_reads >= 1
        # No read named every stream: each named only those Redis said had changed.
        assert consumer.stats.full_reads == full
    finally:
        await reader.stop()


async def test_entries_whose_notification_was_lost_are_read_by_the_next_full_read(
    redis: RedisClient, keys: StreamKeys, flags: None
) -> None:
    models = [f"m{i}" for i in range(10)]
    await fill(redis, keys, models)
    consumer = EventConsumer(
        redis, group="g", consumer="c", keys=keys, block_ms=50, notify=True, full_read_s=0.5
    )
    reader = Reader(consumer)
    try:
        await until(lambda: consumer.notified and len(reader.got) >= 10, "started")
        await redis.config_set(FLAGS, "")  # from now on XADD publishes nothing
        full = consumer.stats.full_reads
        await add(redis, keys, "m3", 99)
        await until(lambda: "m3" in reader.got[10:], "the silent entry is read", timeout=5.0)
        assert consumer.stats.full_reads > full
        assert consumer.notify_state == "on"  # still subscribed: the safety net read it
    finally:
        await reader.stop()


async def test_a_dropped_subscription_is_made_again_and_nothing_is_lost(
    redis: RedisClient, keys: StreamKeys, flags: None
) -> None:
    await fill(redis, keys, ["a", "b"])
    consumer = EventConsumer(
        redis, group="g", consumer="c", keys=keys, block_ms=50, notify=True, full_read_s=60.0
    )
    reader = Reader(consumer)
    try:
        await until(lambda: consumer.notified and len(reader.got) >= 2, "started")
        notes = consumer._notes
        assert notes is not None
        epoch = notes.epoch
        killed = await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1
        await add(redis, keys, "b", 7)  # published to nobody
        await until(lambda: "b" in reader.got[2:], "the entry added while down is read")
        await until(lambda: notes.epoch > epoch, "subscribed again")
        await add(redis, keys, "a", 8)
        await until(lambda: "a" in reader.got[2:], "read after the new subscription")
    finally:
        await reader.stop()


async def test_a_redis_that_refuses_config_is_read_as_before(
    redis: RedisClient, redis_url: str, keys: StreamKeys, flags: None
) -> None:
    await redis.config_set(FLAGS, "")
    user, password = f"noconfig-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await redis.execute_command(
        "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all", "-config"
    )
    plain = connect(redis_url)
    assert isinstance(plain, Redis)
    kwargs = plain.connection_pool.connection_kwargs
    limited = Redis(
        host=kwargs.get("host", "localhost"),
        port=kwargs.get("port", 6379),
        db=kwargs.get("db", 0),
        username=user,
        password=password,
    )
    await close(plain)
    await fill(redis, keys, ["a"])
    consumer = EventConsumer(
        limited, group="g", consumer="c", keys=keys, block_ms=50, notify=True, full_read_s=60.0
    )
    reader = Reader(consumer)
    try:
        await until(lambda: consumer.notify_state == "refused", "CONFIG SET is refused")
        await add(redis, keys, "a", 5)
        await until(lambda: len(reader.got) >= 2, "entries are still read")
        assert consumer.stats.notified_reads == 0
        assert await server_flags(redis) == ""
    finally:
        await reader.stop()
        await limited.aclose()
        await redis.execute_command("ACL", "DELUSER", user)
