"""Takeover of a shard's models (`controller.takeover`) against real Redis: events of shards not
held are not applied, a rebuild re-reads the streams, events arriving during it are held back and
applied once after it, and a shard lost meanwhile is not marked ready."""

from __future__ import annotations

import asyncio
import time

from controller.fleet import Rotation, eval_interval, tick_due
from controller.schedule import EvalGate
from controller.shards import shard_of
from controller.state import StateStore
from controller.takeover import ModelGate
from surgescale.events import Event, EventProducer, EventType, RedisClient, StreamKeys
from surgescale.events.replay import read_since

SHARDS = 4


def _two_models() -> tuple[str, str]:
    """Two model names in different shards."""
    first = "m-0"
    other = next(
        f"m-{k}" for k in range(1, 100) if shard_of(f"m-{k}", SHARDS) != shard_of(first, SHARDS)
    )
    return first, other


def _enqueue(model: str, i: int) -> Event:
    return Event(
        type=EventType.ENQUEUE,
        model=model,
        gateway="gw",
        ts_ms=int(time.time() * 1000),
        request_id=f"r{i}",
    )


async def test_rebuild_replays_the_stream_and_applies_held_events_once(
    redis: RedisClient, keys: StreamKeys
) -> None:
    mine, theirs = _two_models()
    producer = EventProducer(redis, keys=keys)
    await producer.start()
    for i in range(5):
        producer.emit(_enqueue(mine, i))
    await producer.flush()
    store = StateStore()
    go = asyncio.Event()

    async def replay(model: str, since: int) -> list[Event]:
        await go.wait()  # the takeover's read is under way while live events arrive
        return await read_since(redis, keys, model, since)

    gate = ModelGate(shards=SHARDS, store=store, replay=replay, window_s=60.0)
    # Not held: nothing applied.
    assert gate.admit([_enqueue(mine, 9), _enqueue(theirs, 9)]) == []
    assert gate.dropped == 2
    shard = gate.shard(mine)
    rebuilding = asyncio.create_task(gate.rebuild(shard, [mine, theirs]))
    await asyncio.sleep(0)
    assert not gate.ready(shard)
    producer.emit(_enqueue(mine, 5))
    await producer.flush()
    # The consumer delivers that event (as stamped by the producer) during the rebuild.
    delivered = (await read_since(redis, keys, mine, 0))[-1:]
    assert delivered[0].eseq is not None
    assert gate.admit(delivered) == []  # held back
    go.set()
    assert await rebuilding
    assert gate.ready(shard)
    # Five from the stream and the sixth both from the stream's tail and held back: the
    # producer's ids make it count once.
    assert store.models[mine].queue_depth == 6
    assert theirs not in store.models  # another shard's model is not rebuilt
    assert gate.admit([_enqueue(theirs, 1)]) == []
    await producer.close()


async def test_a_shard_lost_while_rebuilding_is_not_ready(
    redis: RedisClient, keys: StreamKeys
) -> None:
    mine, _ = _two_models()
    store = StateStore()
    release = asyncio.Event()

    async def slow_replay(model: str, since: int) -> list[Event]:
        await release.wait()
        return await read_since(redis, keys, model, since)

    gate = ModelGate(shards=SHARDS, store=store, replay=slow_replay, window_s=60.0)
    shard = gate.shard(mine)
    rebuilding = asyncio.create_task(gate.rebuild(shard, [mine]))
    await asyncio.sleep(0)
    gate.lost(shard)
    release.set()
    assert not await rebuilding
    assert not gate.ready(shard)
    assert gate.admit([_enqueue(mine, 1)]) == []


def test_one_shard_admits_everything() -> None:
    gate = ModelGate(shards=1, store=StateStore(), replay=read_nothing, window_s=60.0)
    events = [_enqueue("a", 1), _enqueue("b", 2)]
    assert gate.admit(events) is events
    assert gate.ready(0)


async def read_nothing(model: str, since: int) -> list[Event]:
    return []


def test_evaluation_budget_stretches_the_interval_with_the_number_of_models() -> None:
    assert eval_interval(10, 0.05, 1000.0) == 0.05
    assert eval_interval(1000, 0.05, 1000.0) == 1.0
    assert eval_interval(1000, 0.05, float("inf")) == 0.05


class _Scheduled:
    def cancel(self) -> None:
        pass


def test_the_tick_skips_fresh_and_scheduled_scalers() -> None:
    gate = EvalGate()
    assert tick_due(gate, 10.0, tick_s=1.0, interval_s=0.05)  # never evaluated
    gate.last_eval = 9.8
    assert not tick_due(gate, 10.0, tick_s=1.0, interval_s=0.05)  # within half a tick
    assert tick_due(gate, 10.6, tick_s=1.0, interval_s=0.05)
    assert not tick_due(gate, 10.6, tick_s=1.0, interval_s=2.0)  # within its interval
    gate.timer = _Scheduled()
    assert not tick_due(gate, 20.0, tick_s=1.0, interval_s=0.05)  # a trailing one is due


def test_rotation_gives_every_item_its_turn() -> None:
    items = list(range(10))
    rotation = Rotation(lambda: items, lambda: 4)
    seen = [rotation() for _ in range(3)]
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert Rotation(lambda: items, lambda: 20)() == items


def test_the_transport_fence_knows_what_each_write_is_for() -> None:
    from controller.actuator import ScaleTarget, TargetKind
    from controller.fencing import written

    scale = written("/apis/apps/v1/namespaces/ns/deployments/llama/scale")
    assert scale is not None
    assert scale.scale == ScaleTarget(TargetKind.DEPLOYMENT, "llama", "ns")
    pool = written("/apis/karpenter.sh/v1/nodepools/gpu/scale")
    assert pool is not None
    assert pool.scale == ScaleTarget(TargetKind.NODEPOOL, "gpu")
    status = written("/apis/surgescale.io/v1alpha1/namespaces/ns/inferencescalers/llama/status")
    assert status is not None
    assert status.scaler == ("ns", "llama")
    pod = written("/api/v1/namespaces/ns/pods/llama-5d8c-x2")
    assert pod is not None
    assert pod.pod == ("ns", "llama-5d8c-x2")
    assert written("/apis/coordination.k8s.io/v1/namespaces/ns/leases/l") is None
    assert written("/api/v1/namespaces/ns/events") is None
