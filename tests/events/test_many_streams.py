"""A consumer over more streams than one pipelined round of housekeeping takes (real Redis).

Reclaiming stale entries and collecting stale groups go through the streams a slice at a time
(`CLAIM_SLICE`, `COLLECT_SLICE`), so that one read never waits for N round trips: every stream must
still be covered. And the read of all streams, packed once per change, must follow the streams as
they come and go.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.exceptions import ResponseError

from surgescale.events import Event, EventConsumer, EventType, RedisClient, StreamKeys
from surgescale.events.consumer import CLAIM_SLICE, COLLECT_SLICE
from surgescale.events.schema import encode
from tests.conftest import client_for

STREAMS = max(CLAIM_SLICE, COLLECT_SLICE) + 44


@pytest.fixture
async def redis(redis_url: str, keys: StreamKeys) -> AsyncIterator[RedisClient]:
    async with client_for(redis_url, keys) as client:
        yield client


def ev(model: str, n: int = 0) -> Event:
    return Event(type=EventType.ENQUEUE, model=model, gateway="g", ts_ms=n, request_id=f"r{n}")


async def fill(redis: RedisClient, keys: StreamKeys, models: list[str]) -> None:
    """One entry in each model's stream, every stream registered."""
    async with redis.pipeline(transaction=False) as pipe:
        for n, model in enumerate(models):
            pipe.xadd(keys.stream(model), encode(ev(model, n)))  # type: ignore[arg-type]
            pipe.sadd(keys.registry, keys.stream(model))
        await pipe.execute()


async def read_until(consumer: EventConsumer, want: int, timeout: float = 20.0) -> list[Event]:
    got: list[Event] = []

    async def run() -> None:
        async for batch in consumer.batches():
            got.extend(batch.events)
            await batch.ack()
            if len(got) >= want:
                return

    await asyncio.wait_for(run(), timeout)
    return got


async def test_stale_entries_of_every_stream_are_reclaimed(
    redis: RedisClient, keys: StreamKeys
) -> None:
    models = [f"m{i}" for i in range(STREAMS)]
    await fill(redis, keys, models)
    dead = EventConsumer(redis, keys=keys, group="ctl", consumer="dead", block_ms=10)
    await dead.discover()
    taken = []
    for _ in range(5):  # its (empty) own history first, then the entries: taken, never acked
        taken += await dead._poll()
    assert len(taken) == STREAMS
    live = EventConsumer(
        redis, keys=keys, group="ctl", consumer="live", block_ms=10, claim_idle_ms=0
    )
    got = await read_until(live, STREAMS)
    assert sorted(e.model for e in got) == sorted(models)
    assert live.stats.reclaimed == STREAMS
    pending: Any = await redis.xpending(keys.stream(models[-1]), "ctl")
    assert pending["pending"] == 0


async def test_stale_groups_of_every_stream_are_collected(
    redis: RedisClient, keys: StreamKeys
) -> None:
    models = [f"m{i}" for i in range(STREAMS)]
    await fill(redis, keys, models)
    async with redis.pipeline(transaction=False) as pipe:
        for model in models:
            pipe.xgroup_create(keys.stream(model), "ctl-old", id="0")
            pipe.xgroup_create(keys.stream(model), "other", id="0")
        await pipe.execute()
    live = EventConsumer(
        redis, keys=keys, group="ctl-live", stale_group_prefix="ctl-", stale_group_idle_s=0.0
    )
    await live.discover()
    removed = await live.collect_stale_groups()
    assert sorted(removed) == sorted((keys.stream(m), "ctl-old") for m in models)
    for model in (models[0], models[-1]):
        groups: Any = await redis.xinfo_groups(keys.stream(model))
        assert sorted(g["name"].decode() for g in groups) == ["ctl-live", "other"]


async def test_the_read_follows_streams_as_they_come_and_go(
    redis: RedisClient, keys: StreamKeys
) -> None:
    await fill(redis, keys, ["a", "b"])
    consumer = EventConsumer(
        redis, keys=keys, group="ctl", block_ms=10, discover_interval_s=0.01, start_id="0"
    )
    assert sorted(e.model for e in await read_until(consumer, 2)) == ["a", "b"]
    consumer.model_filter = lambda m: m != "a"  # a is dropped from the read
    await fill(redis, keys, ["a", "b", "c"])  # c is new
    got = await read_until(consumer, 2)
    await asyncio.sleep(0.05)
    assert sorted(e.model for e in got) == ["b", "c"]
    assert sorted(consumer.models) == ["b", "c"]


async def test_a_read_of_many_streams_that_are_behind_stays_near_its_entry_cap(
    redis: RedisClient, keys: StreamKeys
) -> None:
    models = [f"m{i}" for i in range(50)]
    for _ in range(10):
        await fill(redis, keys, models)  # 10 entries in each of 50 streams: 500 behind
    consumer = EventConsumer(
        redis, keys=keys, group="ctl", block_ms=10, count=100, max_entries_per_read=100
    )
    sizes: list[int] = []

    async def run() -> None:
        async for batch in consumer.batches():
            sizes.append(len(batch.events))
            await batch.ack()
            if sum(sizes) >= 500:
                return

    await asyncio.wait_for(run(), 20.0)
    assert sum(sizes) == 500  # all of it, in reads of 100 x 50 / 50 = 2 per stream
    assert max(sizes) == 100


async def test_one_busy_stream_among_many_is_not_held_to_the_lowered_count(
    redis: RedisClient, keys: StreamKeys
) -> None:
    """Regression (issue 17): with 1,000 streams COUNT is 10 per stream, and a model getting
    2,000 events a second fell behind by up to seconds while the others were idle. A stream that
    fills its COUNT is read again in the same poll with the entry cap the others left unused."""
    quiet = [f"q{i}" for i in range(49)]
    await fill(redis, keys, quiet)  # 1 entry each: under their COUNT of 500 / 50 = 10
    for _ in range(200):
        await fill(redis, keys, ["hot"])
    consumer = EventConsumer(
        redis, keys=keys, group="ctl", block_ms=10, count=100, max_entries_per_read=500
    )
    first: list[Event] = []

    async def run() -> None:
        async for batch in consumer.batches():
            first.extend(batch.events)
            await batch.ack()
            return

    await asyncio.wait_for(run(), 20.0)
    hot = sum(1 for e in first if e.model == "hot")
    assert hot == 10 + 100  # its COUNT in the read of all, then a read of it alone
    assert len(first) == 49 + hot  # the quiet streams were read too, once
    assert len(first) <= 500


async def test_acks_of_many_streams_in_one_batch_and_an_error_reply_spares_the_others(
    redis: RedisClient, keys: StreamKeys
) -> None:
    """The acks of a batch go out as one XACK per stream in one batch (a single Redis: on a
    lean connection of their own, `rawwrite.RawPipe`): every stream's entries end acked, and
    one stream whose XACK gets an error reply does not keep the others pending."""
    models = [f"m{i}" for i in range(STREAMS)]
    await fill(redis, keys, models)
    consumer = EventConsumer(redis, keys=keys, group="ctl", block_ms=10, start_id="0")
    deliveries = []

    async def run() -> None:
        async for batch in consumer.batches():
            deliveries.extend(batch.deliveries)
            if len(deliveries) >= STREAMS:
                return

    await asyncio.wait_for(run(), 20.0)
    assert len(deliveries) == STREAMS
    broken = keys.stream(models[7])
    await redis.delete(broken)
    await redis.set(broken, "not a stream")  # its XACK now gets WRONGTYPE
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await consumer.ack(deliveries)
    for model in (models[0], models[8], models[-1]):
        pending: Any = await redis.xpending(keys.stream(model), "ctl")
        assert pending["pending"] == 0
    assert (consumer.stats.acked, consumer.stats.ack_errors) == (0, 1)  # kept for a retry
    await redis.delete(broken)
    await consumer.ack([])  # the retry, on the same connection: still usable after the error
    assert consumer.stats.acked == STREAMS


@pytest.mark.parametrize("poll_ms", [0.0, 2.0])
async def test_a_read_after_one_that_found_entries_blocks_only_without_polling(
    redis: RedisClient, keys: StreamKeys, poll_ms: float
) -> None:
    """A read of N streams that blocks costs Redis per stream named on every wake (~0.8 ms at
    1,000 streams). With `poll_interval_ms`, reads are sent without BLOCK while one found
    entries within the last block time (more are probably on their way), and block after a
    quiet spell."""
    models = [f"m{i}" for i in range(20)]
    await fill(redis, keys, models)
    consumer = EventConsumer(
        redis, keys=keys, group="ctl", block_ms=20, start_id="0", poll_interval_ms=poll_ms
    )
    assert consumer._packed is not None  # a single Redis: the packed read
    packed = consumer._packed.packed
    blocks: list[int | None] = []

    def spy(key: object, streams: dict[str, str], block: int | None) -> bytes:
        if streams is consumer._streams and ">" in streams.values():
            blocks.append(block)
        return packed(key, streams, block)

    consumer._packed.packed = spy  # type: ignore[method-assign]
    got = await read_until(consumer, len(models))  # own history first, then new entries
    assert len(got) == len(models)
    blocks.clear()
    await fill(redis, keys, models[:3])
    assert len(await read_until(consumer, 3)) == 3
    await fill(redis, keys, models[:3])
    assert len(await read_until(consumer, 3)) == 3
    await asyncio.sleep(0.05)  # no read found anything for longer than the block time
    await fill(redis, keys, models[:3])
    assert len(await read_until(consumer, 3)) == 3
    # The first two reads came right after reads that found entries (the entries were there
    # already); the last after a quiet spell longer than the block time: it may block.
    assert blocks == ([None, None, 20] if poll_ms else [20, 20, 20])
