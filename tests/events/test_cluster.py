"""The event pipeline on a Redis Cluster: streams spread over the masters, a slot migrated while
events flow (ASK, then MOVED), a master that fails and comes back empty, model filters."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable

import pytest

from sim.localredis.cluster import LocalCluster
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
from surgescale.events.client import TRANSPORT_ERRORS, is_cluster, is_cluster_url, plain_url
from tests.conftest import client_for


def ev(model: str, n: int) -> Event:
    return Event(type=EventType.ENQUEUE, model=model, gateway="gw-1", ts_ms=n, request_id=f"r{n}")


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Reader:
    """Runs a consumer in the background, acking, and keeps what it got per model."""

    def __init__(self, consumer: EventConsumer) -> None:
        self.consumer = consumer
        self.got: dict[str, list[int]] = {}
        self.ack_failures = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for batch in self.consumer.batches():
            for event in batch.events:
                self.got.setdefault(event.model, []).append(event.ts_ms)
            try:
                await batch.ack()
            except TRANSPORT_ERRORS:
                # As the controller and the KEDA scaler do: the consumer keeps a failed ack
                # (e.g. TTL exhausted while a slot moves) and sends it again before its next read.
                self.ack_failures += 1

    def count(self) -> int:
        return sum(len(v) for v in self.got.values())

    async def stop(self) -> None:
        self.consumer.stop()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def consumer_for(redis: RedisClient, keys: StreamKeys, **kw: object) -> EventConsumer:
    kw.setdefault("group", "controllers")
    kw.setdefault("consumer", "c1")
    kw.setdefault("block_ms", 50)
    kw.setdefault("discover_interval_s", 0.05)
    return EventConsumer(redis, keys=keys, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def cluster_client(redis_cluster_url: str, keys: StreamKeys) -> AsyncIterator[RedisClient]:
    async with client_for(redis_cluster_url, keys) as client:
        yield client


def models_on_every_node(cluster: LocalCluster, keys: StreamKeys, per_node: int) -> list[str]:
    """Model names whose streams fall on each master, `per_node` of each."""
    from redis.crc import key_slot

    by_node: dict[int, list[str]] = {i: [] for i in cluster.masters()}
    n = 0
    while min(len(v) for v in by_node.values()) < per_node:
        model = f"model-{n}"
        n += 1
        owner = cluster.owner(key_slot(keys.stream(model).encode()))
        if len(by_node[owner]) < per_node:
            by_node[owner].append(model)
    return [m for models in by_node.values() for m in models]


def test_cluster_urls_are_recognised() -> None:
    assert is_cluster_url("redis+cluster://127.0.0.1:7000")
    assert is_cluster_url("rediss+cluster://h:1")
    assert not is_cluster_url("redis://127.0.0.1:6379/0")
    assert plain_url("redis+cluster://u:p@h:7000") == "redis://u:p@h:7000"


async def test_connect_picks_the_client_by_url() -> None:
    cluster, single = connect("redis+cluster://127.0.0.1:7000"), connect("redis://127.0.0.1:6379/0")
    assert is_cluster(cluster)
    assert not is_cluster(single)
    await close(cluster)
    await close(single)


async def test_streams_on_every_master_are_read_in_per_slot_reads(
    local_cluster: LocalCluster, keys: StreamKeys
) -> None:
    models = models_on_every_node(local_cluster, keys, per_node=4)
    async with client_for(local_cluster.url, keys) as client:
        producer = EventProducer(client, keys=keys)
        await producer.start()
        for n in range(600):
            producer.emit(ev(models[n % len(models)], n))
        assert await producer.flush()
        reader = Reader(consumer_for(client, keys))
        try:
            await wait_for(lambda: reader.count() >= 600)
        finally:
            await reader.stop()
            await producer.close()
        assert set(reader.got) == set(models)
        for model in models:
            stamps = reader.got[model]
            assert stamps == sorted(stamps), model
            assert len(stamps) == 50
        assert reader.consumer.stats.slot_groups == len(models)  # one tag, one slot per model
        assert producer.stats.retried == 0


async def test_a_slot_migrated_while_events_flow_loses_nothing(
    local_cluster: LocalCluster, keys: StreamKeys
) -> None:
    """The stream (with its consumer group) moves to another master mid-flow: writes and reads
    are redirected (ASK while the slot is half-moved, MOVED after) and every event arrives."""
    async with client_for(local_cluster.url, keys) as client:
        stream = keys.stream("moving")
        slot = client.keyslot(stream)  # type: ignore[union-attr]
        source = local_cluster.owner(slot)
        target = next(i for i in local_cluster.masters() if i != source)
        producer = EventProducer(client, keys=keys)
        await producer.start()
        reader = Reader(consumer_for(client, keys))
        total = 1_500
        moved: list[int] = []

        def migrate() -> None:
            moved.append(local_cluster.migrate_slot(slot, target, pause_s=0.3))

        try:
            mover: threading.Thread | None = None
            for n in range(total):
                producer.emit(ev("moving", n))
                if n == 300:
                    mover = threading.Thread(target=migrate)
                    mover.start()
                await asyncio.sleep(0.001)
            assert mover is not None
            await asyncio.get_running_loop().run_in_executor(None, mover.join)
            assert await producer.flush(timeout=15.0)
            await wait_for(lambda: reader.count() >= total)
        finally:
            await reader.stop()
            await producer.close()
        assert moved == [1]
        assert local_cluster.owner(slot) == target
        assert sorted(reader.got["moving"]) == list(range(total))
        assert producer.stats.dropped == 0
        pending = await client.xpending(stream, "controllers")
        assert pending["pending"] == 0


async def test_a_failed_master_delays_its_models_events_until_its_replica_takes_over(
    local_cluster: LocalCluster, keys: StreamKeys
) -> None:
    """A master is stopped while events for models on every master flow: the other masters'
    models keep flowing; the failed master's events wait in the producer (counted as retried,
    none dropped) until its replica is promoted, then all arrive; no consumer group is lost."""
    from redis.crc import key_slot

    models = models_on_every_node(local_cluster, keys, per_node=2)
    down = local_cluster.masters()[1]
    on_down = {m for m in models if local_cluster.owner(key_slot(keys.stream(m).encode())) == down}
    client = connect(local_cluster.url, timeout=0.5, connect_timeout=0.3)
    producer = EventProducer(client, keys=keys)
    await producer.start()
    for m in models:  # every stream and group exists (and is replicated) before the failure
        producer.emit(ev(m, 0))
    assert await producer.flush()
    reader = Reader(consumer_for(client, keys))
    try:
        await wait_for(lambda: reader.count() >= len(models))
        await asyncio.get_running_loop().run_in_executor(None, local_cluster.stop_node, down)
        for n in range(1, 101):
            for m in models:
                producer.emit(ev(m, n))
            await asyncio.sleep(0.005)
        healthy = [m for m in models if m not in on_down]
        await wait_for(lambda: all(len(reader.got.get(m, [])) == 101 for m in healthy))
        await wait_for(lambda: all(len(reader.got[m]) >= 101 for m in on_down), timeout=30.0)
        await wait_for(lambda: producer.stats.buffered == 0)
    finally:
        await reader.stop()
        await producer.close()
        await close(client)
        if local_cluster.nodes[down].process is None:  # it comes back as a replica
            await asyncio.get_running_loop().run_in_executor(None, local_cluster.start_node, down)
    for m in on_down:  # its replica serves its slots now
        assert local_cluster.owner(key_slot(keys.stream(m).encode())) != down
    for m in models:
        assert sorted(set(reader.got[m])) == list(range(101)), m
        # The group survived the failover (nothing re-read from the start), and the producer
        # resent only the failed master's part (a healthy model's events written once).
        assert len(reader.got[m]) == 101, m
    assert producer.stats.retried > 0
    assert producer.stats.dropped == 0
    assert reader.consumer.stats.read_errors > 0


@pytest.fixture(params=["single", "cluster"])
async def any_client(
    request: pytest.FixtureRequest, keys: StreamKeys
) -> AsyncIterator[RedisClient]:
    url = request.getfixturevalue("redis_url" if request.param == "single" else "redis_cluster_url")
    async with client_for(url, keys) as client:
        yield client


async def test_more_slots_than_parallel_reads_take_turns_and_lose_nothing(
    cluster_client: RedisClient, keys: StreamKeys
) -> None:
    models = [f"m{i}" for i in range(7)]
    producer = EventProducer(cluster_client, keys=keys)
    await producer.start()
    reader = Reader(consumer_for(cluster_client, keys, max_parallel_reads=2))
    try:
        for n in range(700):
            producer.emit(ev(models[n % 7], n))
            if n % 50 == 0:
                await asyncio.sleep(0.01)
        assert await producer.flush()
        await wait_for(lambda: reader.count() >= 700)
    finally:
        await reader.stop()
        await producer.close()
    assert reader.consumer.stats.slot_groups == 7
    for model in models:
        assert reader.got[model] == sorted(reader.got[model])
        assert len(reader.got[model]) == 100


async def test_a_model_filter_limits_what_is_read_and_can_change_while_running(
    any_client: RedisClient, keys: StreamKeys
) -> None:
    cluster_client = any_client
    producer = EventProducer(cluster_client, keys=keys)
    await producer.start()
    for n in range(30):
        producer.emit(ev(("a", "b", "c")[n % 3], n))
    assert await producer.flush()
    mine = {"a"}
    consumer = consumer_for(cluster_client, keys, model_filter=lambda m: m in mine)
    reader = Reader(consumer)
    try:
        await wait_for(lambda: reader.count() >= 10)
        await asyncio.sleep(0.3)
        assert set(reader.got) == {"a"}
        assert consumer.models == ["a"]
        consumer.model_filter = lambda m: m in {"b", "c"}  # a takeover: b and c, a given away
        await wait_for(lambda: reader.count() >= 30)
        for n in range(30, 36):
            producer.emit(ev(("a", "b", "c")[n % 3], n))
        assert await producer.flush()
        await wait_for(lambda: reader.count() >= 34)
        await asyncio.sleep(0.3)
    finally:
        await reader.stop()
        await producer.close()
    assert len(reader.got["a"]) == 10  # nothing of a after it was given away
    assert len(reader.got["b"]) == 12
    assert len(reader.got["c"]) == 12
    assert sorted(consumer.models) == ["b", "c"]
