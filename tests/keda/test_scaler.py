"""The KEDA external scaler over real Redis, asked by a real gRPC client on loopback.

Events are written to Redis by the real producer, as the gateway writes them; the scaler reads
them with its own consumer group. KEDA's side is played by the generated async stub.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from controller.keda import externalscaler_pb2 as pb
from controller.keda import externalscaler_pb2_grpc as pb_grpc
from controller.keda.scaler import QueueSignal, start_server
from surgescale.events import Event, EventProducer, EventType, RedisClient, StreamKeys

MODEL = "llama3-8b"
WAIT_S = 10.0
"""Upper bound for the awaited pushes (a failure bound, not a speed assertion)."""


@dataclass
class Scaler:
    stub: pb_grpc.ExternalScalerAsyncStub
    producer: EventProducer
    signal: QueueSignal

    def emit(self, kind: EventType, request_id: str = "", **fields: Any) -> None:
        self.producer.emit(
            Event(
                type=kind,
                model=fields.pop("model", MODEL),
                gateway=fields.pop("gateway", "gw-1"),
                ts_ms=int(time.time() * 1000),
                request_id=request_id,
                **fields,
            )
        )


def ref(**metadata: str) -> pb.ScaledObjectRef:
    meta = {"scalerAddress": "surgescale-keda:9090", "model": MODEL, **metadata}
    return pb.ScaledObjectRef(name="llama3-8b", namespace="models", scalerMetadata=meta)


@pytest.fixture
async def scaler(redis: RedisClient, keys: StreamKeys) -> AsyncIterator[Scaler]:
    producer = EventProducer(redis, keys=keys)
    await producer.start()
    # The stream exists before the scaler starts (a gateway has been running).
    producer.emit(
        Event(
            type=EventType.SNAPSHOT,
            model=MODEL,
            gateway="gw-1",
            ts_ms=int(time.time() * 1000),
            queue_depth=0,
            in_flight=0,
            seq=1,
            interval_ms=60_000,  # this stand-in sends one; a silent gateway is forgotten
        )
    )
    await producer.flush()
    signal = QueueSignal(
        redis, models=[MODEL, "other"], keys=keys, identity=f"test-{uuid.uuid4().hex[:8]}"
    )
    reader = asyncio.create_task(signal.run())
    server, port = await start_server(signal, "127.0.0.1:0", heartbeat_s=0.5)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        await asyncio.wait_for(signal.reading.wait(), WAIT_S)
        yield Scaler(pb_grpc.ExternalScalerStub(channel), producer, signal)
    finally:
        signal.stop()
        reader.cancel()
        for step, awaitable in (
            ("close the channel", channel.close()),
            ("stop the server", server.stop(grace=None)),
            ("stop the reader", asyncio.gather(reader, return_exceptions=True)),
            ("close the signal", signal.close()),
            ("close the producer", producer.close()),
        ):
            try:
                await asyncio.wait_for(awaitable, WAIT_S)
            except TimeoutError:
                pytest.fail(f"teardown: could not {step} within {WAIT_S}s")


async def _metric(s: Scaler, **metadata: str) -> float:
    reply = await s.stub.GetMetrics(
        pb.GetMetricsRequest(scaledObjectRef=ref(**metadata), metricName="s0-surgescale-llama3-8b")
    )
    (value,) = reply.metricValues
    assert value.metricName == "s0-surgescale-llama3-8b"
    assert value.metricValue == round(value.metricValueFloat)
    return value.metricValueFloat


async def _until_metric(s: Scaler, expected: float, **metadata: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        value = await _metric(s, **metadata)
        if value == expected:
            return
        if loop.time() > deadline:
            pytest.fail(f"metric {metadata} stayed {value}, expected {expected}")
        await asyncio.sleep(0.02)


async def test_enqueue_pushes_active_and_metrics_follow_the_queue(scaler: Scaler) -> None:
    assert not (await scaler.stub.IsActive(ref())).result
    stream = scaler.stub.StreamIsActive(ref())
    first = await asyncio.wait_for(stream.read(), WAIT_S)
    assert isinstance(first, pb.IsActiveResponse)
    assert first.result is False  # the current state, at once
    assert await _metric(scaler) == 0.0

    scaler.emit(EventType.ENQUEUE, "r1", prompt_tokens=10)  # a request queued at zero replicas
    pushed = await asyncio.wait_for(stream.read(), WAIT_S)
    assert isinstance(pushed, pb.IsActiveResponse)
    assert pushed.result is True
    assert (await scaler.stub.IsActive(ref())).result
    assert await _metric(scaler) == 1.0
    assert await _metric(scaler, metric="queue") == 1.0

    scaler.emit(EventType.ENQUEUE, "r2", prompt_tokens=10)
    await _until_metric(scaler, 2.0, metric="queue")
    scaler.emit(EventType.DISPATCH, "r1", pod="http://10.0.0.1:8000", queue_ms=5.0)
    await _until_metric(scaler, 1.0, metric="queue")  # r2 waits, r1 runs
    assert await _metric(scaler) == 2.0  # load: queued + in flight
    # Above the activation threshold only: 2 in the system, threshold 2 -> not active.
    assert not (await scaler.stub.IsActive(ref(activationLoad="2"))).result

    scaler.emit(EventType.DISPATCH, "r2", pod="http://10.0.0.1:8000", queue_ms=7.0)
    scaler.emit(EventType.COMPLETE, "r1", pod="http://10.0.0.1:8000", status=200, e2e_ms=50.0)
    scaler.emit(EventType.COMPLETE, "r2", pod="http://10.0.0.1:8000", status=200, e2e_ms=60.0)
    idle = await asyncio.wait_for(stream.read(), WAIT_S)
    assert isinstance(idle, pb.IsActiveResponse)
    assert idle.result is False  # the load went away: pushed too
    assert await _metric(scaler) == 0.0
    stream.cancel()
    # Another model's events never moved this one.
    scaler.emit(EventType.ENQUEUE, "x1", model="other")
    await _until_metric(scaler, 1.0, model="other")
    assert await _metric(scaler) == 0.0


async def test_metric_spec_names_the_model_and_the_target(scaler: Scaler) -> None:
    reply = await scaler.stub.GetMetricSpec(ref(targetPerReplica="24"))
    (spec,) = reply.metricSpecs
    assert spec.metricName == "surgescale-llama3-8b"
    assert spec.targetSizeFloat == 24.0
    assert spec.targetSize == 24
    default = (await scaler.stub.GetMetricSpec(ref())).metricSpecs[0]
    assert default.targetSizeFloat == 32.0


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"model": ""}, "needs `model`"),
        ({"model": "no-such-model"}, "'no-such-model' is not served by this scaler"),
        ({"metric": "ttft"}, "metric 'ttft' is not one of load, queue"),
        ({"targetPerReplica": "many"}, "targetPerReplica must be a number"),
        ({"targetPerReplica": "0"}, "targetPerReplica must be a finite number > 0"),
        ({"activationLoad": "-1"}, "activationLoad must be a finite number >= 0"),
    ],
)
async def test_bad_metadata_is_invalid_argument_on_every_call(
    scaler: Scaler, metadata: dict[str, str], message: str
) -> None:
    bad = ref(**metadata)
    calls: list[Awaitable[object]] = [
        scaler.stub.IsActive(bad),
        scaler.stub.GetMetricSpec(bad),
        scaler.stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=bad, metricName="m")),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert message in str(info.value.details())
        assert "ScaledObject models/llama3-8b" in str(info.value.details())
    stream = scaler.stub.StreamIsActive(bad)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream.read()
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_missing_model_key(scaler: Scaler) -> None:
    bare = pb.ScaledObjectRef(name="x", namespace="y", scalerMetadata={"scalerAddress": "a:1"})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await scaler.stub.IsActive(bare)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "trigger metadata needs `model`" in str(info.value.details())


async def test_a_gateway_gone_silent_is_forgotten_and_pushed_inactive(scaler: Scaler) -> None:
    stream = scaler.stub.StreamIsActive(ref())
    first = await asyncio.wait_for(stream.read(), WAIT_S)
    assert isinstance(first, pb.IsActiveResponse)
    assert first.result is False
    # A second gateway with a 100 ms snapshot period queues a request, then goes silent (crashed:
    # its queue went with it). After a few of its periods it is dropped, and so is its load.
    scaler.emit(
        EventType.SNAPSHOT, queue_depth=0, in_flight=0, seq=1, interval_ms=100, gateway="gw-2"
    )
    scaler.emit(EventType.ENQUEUE, "z1", gateway="gw-2")
    active = await asyncio.wait_for(stream.read(), WAIT_S)
    assert isinstance(active, pb.IsActiveResponse)
    assert active.result is True
    gone = await asyncio.wait_for(stream.read(), WAIT_S)
    assert isinstance(gone, pb.IsActiveResponse)
    assert gone.result is False
    assert await _metric(scaler) == 0.0
    stream.cancel()
