"""`surgescale bench events`: how fast the event pipeline is, measured against a real Redis.

Three figures, each printed in a table and, last, as one JSON line:
- throughput at saturation: a producer process emits as fast as it can while one consumer
  process reads (XREADGROUP) and acks; events/s through the consumer, and CPU seconds per
  million events on each side;
- latency at a steady 1,000 events/s: emit → delivered to the consumer, p50/p99 (one process,
  one clock);
- the encoding choice: one JSON field (msgspec) per entry against one stream field per event field.

`--models N` spreads the events over N model streams. `--redis-cluster` runs the throughput and
latency figures a second time against a Redis Cluster (`--redis-cluster-url`, else a private local
3-master cluster started for the run) and adds them to the JSON line as `cluster_*` keys beside
the single-Redis ones.

Its keys live under `bench-<random>:`; they are deleted at the end even when the run is stopped
by SIGTERM/SIGINT (both cancel the run, so the clean-up runs), keys of earlier runs killed harder
(SIGKILL) are swept at start (no stream entry for 10 minutes), and the report says what is left.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import statistics
import time
import uuid
from typing import Any

import orjson

from sim.benches.cleanup import cancel_on_signals, delete_prefix, leftover, sweep_stale
from sim.localredis.cluster import ensure_redis_cluster
from sim.localredis.server import ensure_redis
from surgescale.events.client import RedisClient, close, connect
from surgescale.events.consumer import EventConsumer
from surgescale.events.keys import StreamKeys
from surgescale.events.producer import EventProducer, StreamLimits
from surgescale.events.schema import Event, EventType, decode, encode, to_dict
from surgescale.stats import percentile


def _event(n: int, model: str = "bench") -> Event:
    return Event(
        type=EventType.COMPLETE,
        model=model,
        gateway="bench-gw",
        ts_ms=1_700_000_000_000 + n,
        request_id=f"req-{n}",
        prompt_tokens=512,
        output_tokens=128,
        pod="pod-1",
        status=200,
        ttft_ms=120.5,
        tpot_ms=11.2,
        e2e_ms=1500.0,
    )


def _use_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass


def _models(count: int) -> list[str]:
    return ["bench"] if count <= 1 else [f"bench-{i}" for i in range(count)]


def _consumer_proc(url: str, prefix: str, total: int, out: Any) -> None:
    _use_uvloop()

    async def run() -> tuple[float, float, float]:
        client = connect(url)
        consumer = EventConsumer(
            client, group="bench", consumer="c", keys=StreamKeys(prefix), count=2_000, block_ms=50
        )
        got = 0
        first = 0.0
        cpu0 = time.process_time()
        async for batch in consumer.batches():
            if not first:
                first = time.perf_counter()
            got += len(batch.deliveries)
            await batch.ack()
            if got >= total:
                break
        wall = time.perf_counter() - first
        cpu = time.process_time() - cpu0
        await close(client)
        return wall, cpu, float(got)

    out.put(asyncio.run(run()))


async def _throughput(url: str, prefix: str, total: int, models: list[str]) -> dict[str, float]:
    keys = StreamKeys(prefix)
    client = connect(url)
    # Register the streams before the consumer starts so it does not wait for discovery.
    await client.sadd(keys.registry, *(keys.stream(m) for m in models))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_consumer_proc, args=(url, prefix, total, queue))
    proc.start()
    try:
        return await _drive(client, keys, total, proc, queue, models)
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        await close(client)


async def _drive(
    client: RedisClient, keys: StreamKeys, total: int, proc: Any, queue: Any, models: list[str]
) -> dict[str, float]:
    await asyncio.sleep(1.0)  # let the consumer start and create its group
    producer = EventProducer(
        client,
        keys=keys,
        limits=StreamLimits(max_events=total + 10_000),
        buffer_limit=total + 10,
    )
    await producer.start()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    spread = len(models)
    try:
        for n in range(total):
            producer.emit(_event(n, models[n % spread]))
            if n % 2_000 == 1_999:
                await asyncio.sleep(0)
        await producer.flush(timeout=120)
    except asyncio.CancelledError:
        # Stopped (SIGTERM): stop writing now, so the clean-up after us is the last word.
        await producer.close(timeout=0)
        raise
    produce_wall = time.perf_counter() - t0
    produce_cpu = time.process_time() - cpu0
    await producer.close()
    wall, cpu, got = await asyncio.get_running_loop().run_in_executor(None, queue.get, True, 180)
    proc.join(10)
    return {
        "events": got,
        "throughput_eps": got / wall,
        "producer_eps": total / produce_wall,
        "consumer_cpu_s_per_million": cpu / got * 1e6,
        "producer_cpu_s_per_million": produce_cpu / total * 1e6,
        "producer_dropped": float(producer.stats.dropped),
    }


async def _latency(
    url: str, prefix: str, rate: float, seconds: float, models: list[str]
) -> dict[str, float]:
    keys = StreamKeys(prefix)
    client = connect(url)
    await client.sadd(keys.registry, *(keys.stream(m) for m in models))
    consumer = EventConsumer(
        client, group="bench", consumer="c", keys=keys, block_ms=1_000, start_id="$"
    )
    await consumer.discover()
    sent: dict[str, float] = {}
    lat: list[float] = []
    total = int(rate * seconds)

    async def consume() -> None:
        async for batch in consumer.batches():
            now = time.perf_counter()
            for d in batch.deliveries:
                lat.append((now - sent[d.event.request_id]) * 1000.0)
            await batch.ack()
            if len(lat) >= total:
                return

    reader = asyncio.create_task(consume())
    producer_client = connect(url)
    producer = EventProducer(producer_client, keys=keys)
    await producer.start()
    start = time.perf_counter()
    try:
        for n in range(total):
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            ev = _event(n, models[n % len(models)])
            sent[ev.request_id] = time.perf_counter()
            producer.emit(ev)
        await asyncio.wait_for(reader, 30)
    except asyncio.CancelledError:
        await producer.close(timeout=0)  # stopped: write nothing more (see `_drive`)
        raise
    finally:
        reader.cancel()
        await producer.close()
        await close(producer_client)
        await close(client)
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    if p50 is None or p99 is None:
        raise RuntimeError("no event was delivered")
    return {
        "latency_rate_eps": rate,
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "latency_max_ms": max(lat),
        "flushes": float(producer.stats.flushes),
    }


def _encoding(n: int) -> dict[str, float]:
    events = [_event(i) for i in range(n)]
    t0 = time.perf_counter()
    entries = [encode(e) for e in events]
    t1 = time.perf_counter()
    for entry in entries:
        decode(entry)
    t2 = time.perf_counter()
    native = [
        {k.encode(): (v if isinstance(v, str) else str(v)).encode() for k, v in to_dict(e).items()}
        for e in events
    ]
    t3 = time.perf_counter()
    for entry in native:
        data = {k.decode(): v.decode() for k, v in entry.items()}
        Event(
            type=EventType(data["type"]),
            model=data["model"],
            gateway=data["gateway"],
            ts_ms=int(data["ts_ms"]),
            request_id=data["request_id"],
            prompt_tokens=int(data["prompt_tokens"]),
            output_tokens=int(data["output_tokens"]),
            pod=data["pod"],
            status=int(data["status"]),
            ttft_ms=float(data["ttft_ms"]),
            tpot_ms=float(data["tpot_ms"]),
            e2e_ms=float(data["e2e_ms"]),
        )
    t4 = time.perf_counter()
    json_bytes = statistics.mean(len(e[b"e"]) + 1 for e in entries)
    native_bytes = statistics.mean(sum(len(k) + len(v) for k, v in e.items()) for e in native)
    return {
        "json_field_encode_us": (t1 - t0) / n * 1e6,
        "json_field_decode_us": (t2 - t1) / n * 1e6,
        "native_fields_encode_us": (t3 - t2) / n * 1e6,
        "native_fields_decode_us": (t4 - t3) / n * 1e6,
        "json_entry_bytes": json_bytes,
        "native_entry_bytes": native_bytes,
    }


async def _bench(url: str, args: argparse.Namespace) -> dict[str, float]:
    """Both runs, under prefixes deleted whatever happens; adds what was left behind."""
    prefixes = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    admin = connect(url, timeout=30.0)
    swept = await sweep_stale(admin, like="bench-")
    try:
        with cancel_on_signals():
            models = _models(args.models)
            thr = await _throughput(url, prefixes[0], args.events, models)
            lat = await _latency(url, prefixes[1], args.rate, args.seconds, models)
    finally:
        left_keys = left_bytes = 0
        with contextlib.suppress(Exception):
            for prefix in prefixes:
                await delete_prefix(admin, prefix)
                keys, size = await leftover(admin, prefix)
                left_keys, left_bytes = left_keys + keys, left_bytes + size
            print(f"left behind in Redis: {left_keys} keys, {left_bytes} bytes", flush=True)
        await close(admin)
    return {
        **thr,
        **lat,
        "redis_keys_left": float(left_keys),
        "redis_bytes_left": float(left_bytes),
        "stale_keys_swept": float(swept),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="surgescale bench events", description=__doc__)
    parser.add_argument("--events", type=int, default=300_000, help="events for the throughput run")
    parser.add_argument("--rate", type=float, default=1_000.0, help="events/s for the latency run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument(
        "--models", type=int, default=1, help="model streams the events spread over"
    )
    parser.add_argument("--redis-url", default=None, help="Redis to use (default: find or start)")
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="also measure against a Redis Cluster (cluster_* keys)",
    )
    parser.add_argument(
        "--redis-cluster-url",
        default=None,
        help="the Redis Cluster (redis+cluster://host:port); default: start a local 3-master one",
    )
    args = parser.parse_args(argv)
    _use_uvloop()
    with ensure_redis(args.redis_url) as url:
        enc = _encoding(50_000)
        try:
            thr = lat = asyncio.run(_bench(url, args))
            cluster: dict[str, float] = {}
            if args.redis_cluster or args.redis_cluster_url:
                with ensure_redis_cluster(args.redis_cluster_url) as cluster_url:
                    cluster = asyncio.run(_bench(cluster_url, args))
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("interrupted; keys cleaned up", flush=True)
            return 130
    figures: dict[str, Any] = {**thr, **enc, "models": float(args.models)}
    figures.update({f"cluster_{k}": v for k, v in cluster.items()})
    rows = [
        ("throughput (consumer, events/s)", f"{thr['throughput_eps']:,.0f}", ">= 100,000"),
        ("producer emit+flush (events/s)", f"{thr['producer_eps']:,.0f}", ""),
        ("consumer CPU s / 1M events", f"{thr['consumer_cpu_s_per_million']:.2f}", ""),
        ("producer CPU s / 1M events", f"{thr['producer_cpu_s_per_million']:.2f}", ""),
        (f"latency p50 @ {args.rate:.0f}/s (ms)", f"{lat['latency_p50_ms']:.3f}", ""),
        (f"latency p99 @ {args.rate:.0f}/s (ms)", f"{lat['latency_p99_ms']:.3f}", "<= 2"),
        ("left behind in Redis (keys)", f"{thr['redis_keys_left']:.0f}", "0"),
        *(
            [
                ("cluster: throughput (events/s)", f"{cluster['throughput_eps']:,.0f}", ""),
                ("cluster: producer (events/s)", f"{cluster['producer_eps']:,.0f}", ""),
                (
                    "cluster: consumer CPU s / 1M",
                    f"{cluster['consumer_cpu_s_per_million']:.2f}",
                    "",
                ),
                (
                    f"cluster: latency p50 @ {args.rate:.0f}/s",
                    f"{cluster['latency_p50_ms']:.3f}",
                    "",
                ),
                (
                    f"cluster: latency p99 @ {args.rate:.0f}/s",
                    f"{cluster['latency_p99_ms']:.3f}",
                    "",
                ),
                ("cluster: left behind (keys)", f"{cluster['redis_keys_left']:.0f}", "0"),
            ]
            if cluster
            else []
        ),
        (
            "encode/decode, one JSON field (msgspec) (µs)",
            f"{enc['json_field_encode_us']:.2f} / {enc['json_field_decode_us']:.2f}",
            "",
        ),
        (
            "encode/decode, native fields (µs)",
            f"{enc['native_fields_encode_us']:.2f} / {enc['native_fields_decode_us']:.2f}",
            "",
        ),
    ]
    print(f"{'figure':<40} {'value':>18}  target")
    for name, value, target in rows:
        print(f"{name:<40} {value:>18}  {target}")
    print(
        orjson.dumps(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
        ).decode()
    )
    return 0
