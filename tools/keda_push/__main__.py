"""See the package docstring."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import grpc

from controller.keda import externalscaler_pb2 as pb
from controller.keda import externalscaler_pb2_grpc as pb_grpc
from controller.keda.scaler import QueueSignal, start_server
from sim.benches.cleanup import delete_prefix
from surgescale.events import Event, EventProducer, EventType, StreamKeys, close, connect
from surgescale.stats import percentile


def _event(kind: EventType, request_id: str = "", **fields: object) -> Event:
    now = int(time.time() * 1000)
    return Event(type=kind, model="m", gateway="g", ts_ms=now, request_id=request_id, **fields)  # type: ignore[arg-type]


async def _read(stream: grpc.aio.UnaryStreamCall[pb.ScaledObjectRef, pb.IsActiveResponse]) -> bool:
    reply = await stream.read()
    assert isinstance(reply, pb.IsActiveResponse), reply
    return reply.result


async def run(n: int) -> list[float]:
    keys = StreamKeys(prefix="bench-" + uuid.uuid4().hex[:8])
    redis = connect("redis://127.0.0.1:6379/0")
    producer = EventProducer(redis, keys=keys)
    await producer.start()
    producer.emit(_event(EventType.SNAPSHOT, queue_depth=0, in_flight=0, seq=1, interval_ms=60_000))
    await producer.flush()
    signal = QueueSignal(redis, models=["m"], keys=keys, identity="bench")
    reader = asyncio.create_task(signal.run())
    server, port = await start_server(signal, "127.0.0.1:0")
    await signal.reading.wait()
    latencies: list[float] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            ref = pb.ScaledObjectRef(name="so", namespace="ns", scalerMetadata={"model": "m"})
            stream = stub.StreamIsActive(ref)
            assert not await _read(stream)
            for i in range(n):
                start = time.perf_counter()
                producer.emit(_event(EventType.ENQUEUE, f"r{i}"))
                assert await _read(stream)
                latencies.append((time.perf_counter() - start) * 1000)
                producer.emit(_event(EventType.CANCEL, f"r{i}", reason="client_disconnect"))
                assert not await _read(stream)
                await asyncio.sleep(0.05)
            stream.cancel()
    finally:
        await server.stop(None)
        signal.stop()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await signal.close()
        await producer.close()
        await delete_prefix(redis, keys.prefix)
        await close(redis)
    return latencies


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    lat = asyncio.run(run(n))
    p50, p90 = percentile(lat, 50), percentile(lat, 90)
    if p50 is None or p90 is None:
        raise SystemExit("no push arrived")
    print(
        f"enqueue -> StreamIsActive(true) push, {n} rounds: "
        f"p50 {p50:.1f} ms, p90 {p90:.1f} ms, max {max(lat):.1f} ms"
    )


if __name__ == "__main__":
    main()
