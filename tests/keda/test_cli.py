"""`surgescale keda-scaler` as a process, and the committed gRPC stubs being current."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from controller.keda import externalscaler_pb2 as pb
from controller.keda import externalscaler_pb2_grpc as pb_grpc
from sim.localredis.server import free_port
from surgescale.events import Event, EventProducer, EventType, RedisClient, StreamKeys

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_match_the_proto() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.keda_stubs", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_no_model_is_a_usage_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURGESCALE_KEDA_")}
    proc = subprocess.run(
        [sys.executable, "-m", "surgescale", "keda-scaler"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "name at least one model" in proc.stderr


async def test_process_serves_and_stops_on_sigterm(
    redis_url: str, keys: StreamKeys, redis: RedisClient
) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "surgescale",
        "keda-scaler",
        "--model",
        "m1",
        "--redis-url",
        redis_url,
        "--stream-prefix",
        keys.prefix,
        "--listen",
        f"127.0.0.1:{port}",
        "--identity",
        f"cli-{keys.prefix}",
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    producer = EventProducer(redis, keys=keys)
    await producer.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            stub = pb_grpc.ExternalScalerStub(channel)
            meta = {"model": "m1", "scalerAddress": f"127.0.0.1:{port}"}
            stream = stub.StreamIsActive(
                pb.ScaledObjectRef(name="so", namespace="ns", scalerMetadata=meta)
            )
            first = await asyncio.wait_for(stream.read(), 30)
            assert isinstance(first, pb.IsActiveResponse)
            assert first.result is False

            async def enqueue_until_pushed() -> pb.IsActiveResponse:
                # The process may still be discovering the stream: enqueue until it hears one.
                read = asyncio.ensure_future(stream.read())
                n = 0
                while not read.done():
                    n += 1
                    producer.emit(
                        Event(
                            type=EventType.ENQUEUE,
                            model="m1",
                            gateway="g",
                            ts_ms=int(time.time() * 1000),
                            request_id=f"r{n}",
                        )
                    )
                    await asyncio.wait([read], timeout=0.5)
                result = read.result()
                assert isinstance(result, pb.IsActiveResponse)
                return result

            pushed = await asyncio.wait_for(enqueue_until_pushed(), 30)
            assert pushed.result is True
            stream.cancel()
    finally:
        await producer.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    groups = await redis.xinfo_groups(keys.stream("m1"))
    assert not [g for g in groups if str(g["name"]).find("surgescale-keda-") >= 0]
