"""`surgescale bench gateway`: what the gateway costs, next to a minimal pass-through proxy.

Four processes: simulated vLLM pods (`sim.pod.runtime.start_pod`) plus an *instant* upstream
(answers every token at once: no engine steps to quantize the first byte), one gateway worker
(`gateway.server.run_worker`, uvloop, events on, shared pod capacity on), a bare aiohttp
pass-through proxy to the instant upstream (uvloop; the least any Python proxy does), and this
load generator. Phases:

1. **added TTFT**: open-loop streaming `/v1/completions` at `--rate` requests/s (Poisson
   arrivals) to the instant upstream, rotating direct, through-gateway and through-bare-proxy
   requests (each round of three in a random order) so all three are measured in the same
   moments and see the same load; TTFT is send to first token chunk at the client. Added
   TTFT = gateway (or bare proxy) percentile minus direct percentile (p50, p99); the ratio of
   the two is the gateway's overhead relative to a plain proxy on the same machine in the same
   run (target: at most 1.5). The JSON gives each path's sample count and a 90 % bootstrap
   interval of each ratio (how far another run in the same conditions could put it), and how
   late the gateway's events reached Redis (the event linger's cost to the controller).
2. **chunks/s per core**: `--streams` concurrent long streams through the gateway; streamed
   chunks counted at the client, divided by the gateway process's CPU seconds (from /proc).
   Phase 2b relays one chunk per read (lockstep upstream): CPU per chunk. Both run again
   through the bare proxy to the same upstreams, so the gateway's chunk rate is also a share
   of what a plain Python proxy does on this machine in this run (`chunks_per_core_vs_bare_proxy`).
3. **requests/s**: closed-loop short non-streamed requests through the gateway at `--concurrency`;
   completed requests per wall second, and per gateway CPU second.

Prints a table, then one JSON line with `added_ttft_p50_ms`, `added_ttft_p99_ms`,
`bare_proxy_added_ttft_p50_ms`, `bare_proxy_added_ttft_p99_ms`, `added_ttft_ratio_p50`,
`added_ttft_ratio_p99`, `chunks_per_s_per_core`, `bare_proxy_chunks_per_s_per_core`,
`chunks_per_core_vs_bare_proxy`, `requests_per_s` (and the underlying figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway.server import run_worker
from gateway.settings import GatewaySettings
from sim.localredis.server import ensure_redis, free_port
from surgescale.stats import percentile

MODEL = "bench-model"
INSTANT = "bench-instant"
"""The model served by the instant upstream (phase 1)."""
LOCKSTEP = "bench-lockstep"
"""The model served by the lockstep upstream (phase 2b), which lives in the load generator."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="surgescale bench gateway", description=__doc__.split("\n")[0])
    p.add_argument("--pods", type=int, default=2, help="simulated pods (default 2)")
    p.add_argument("--rate", type=float, default=200.0, help="phase 1 requests/s (default 200)")
    p.add_argument(
        "--seconds",
        type=float,
        default=40.0,
        help="phase 1 duration (default 40: ~2,600 samples per path, so a p99 rests on ~26)",
    )
    p.add_argument("--tokens", type=int, default=4, help="phase 1 output tokens (default 4)")
    p.add_argument("--streams", type=int, default=64, help="phase 2 concurrent streams")
    p.add_argument("--stream-tokens", type=int, default=512, help="phase 2 tokens per stream")
    p.add_argument("--throughput-seconds", type=float, default=6.0, help="phase 2/3 duration")
    p.add_argument("--concurrency", type=int, default=64, help="phase 3 concurrent requests")
    p.add_argument(
        "--warm-connections", type=int, default=96, help="connections opened per target first"
    )
    p.add_argument("--redis-url", help="events target (default: find or start one; 'none': off)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness increment for all three processes (negative needs privileges; on a busy "
        "shared machine it keeps neighbours' CPU load out of the latency figures)",
    )
    return p


# ------------------------------------------------------------------ processes
def _pods_main(n: int, out: Any) -> None:
    import uvloop

    from sim.pod.runtime import PodOptions, start_pod

    async def run() -> None:
        pods = [await start_pod(PodOptions(model=MODEL, seed=i)) for i in range(n)]
        instant = web.AppRunner(_instant_app(), access_log=None)
        await instant.setup()
        site = web.TCPSite(instant, "127.0.0.1", 0, backlog=1024)
        await site.start()
        host, port = instant.addresses[0][:2]
        out.put(([p.url for p in pods], f"http://{host}:{port}"))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await instant.cleanup()
        for pod in pods:
            await pod.stop()

    uvloop.run(run())


def _upstream_app(
    completions: Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]],
) -> web.Application:
    """An upstream the gateway can health-check (`/health`) serving `completions`."""

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/v1/completions", completions)
    return app


def _instant_app() -> web.Application:
    """An OpenAI-style upstream that writes every token at once (streams and plain answers)."""

    async def completions(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        tokens = int(body.get("max_tokens") or 1)
        if not body.get("stream"):
            return web.Response(body=_PLAIN, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_TOKEN)  # the first byte, at once
        rest = _TOKEN * (tokens - 1)
        if (body.get("stream_options") or {}).get("include_usage"):
            rest += _USAGE % tokens
        await resp.write(rest + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    return _upstream_app(completions)


_TOKEN = b'data: {"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":"x"}]}\n\n'
_USAGE = (
    b'data: {"id":"cmpl-1","object":"text_completion","choices":[],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":%d,"total_tokens":0}}\n\n'
)
_PLAIN = (
    b'{"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":"x"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)


def _bare_proxy_main(upstream: str, port: int, pods: list[str], lockstep: str) -> None:
    """A minimal aiohttp pass-through proxy (uvloop): the yardstick of every phase.

    `/v1/completions` goes to `upstream` (the instant one, phase 1); `/pods/v1/completions` to
    the simulated pods in turn (phase 2) and `/lockstep/v1/completions` to `lockstep` (phase
    2b), so its chunk figures are measured against the same upstreams as the gateway's."""
    import itertools

    import uvloop

    async def run() -> None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )

        async def forward(request: web.Request, to: str) -> web.StreamResponse:
            body = await request.read()
            headers = {"Content-Type": "application/json"}
            async with session.post(to + "/v1/completions", data=body, headers=headers) as up:
                resp = web.StreamResponse(
                    status=up.status, headers={"Content-Type": up.content_type}
                )
                await resp.prepare(request)
                # A load generator's worker cancelled at the end of a phase hangs up mid-stream.
                with contextlib.suppress(ConnectionResetError, aiohttp.ClientPayloadError):
                    async for data in up.content.iter_any():
                        await resp.write(data)
                    await resp.write_eof()
                return resp

        turn = itertools.cycle(pods)
        app = web.Application()
        app.router.add_post("/v1/completions", lambda r: forward(r, upstream))
        app.router.add_post("/pods/v1/completions", lambda r: forward(r, next(turn)))
        app.router.add_post("/lockstep/v1/completions", lambda r: forward(r, lockstep))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()
        await session.close()

    uvloop.run(run())


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError as exc:
        raise SystemExit(f"cannot read CPU time of pid {pid} from /proc: {exc}") from exc
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


@contextlib.contextmanager
def _process(target: Any, *args: Any) -> Iterator[BaseProcess]:
    proc: BaseProcess = multiprocessing.get_context("fork").Process(
        target=target, args=args, daemon=True
    )
    proc.start()
    try:
        yield proc
    finally:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()


# ----------------------------------------------------------------- the load
@dataclass
class Sample:
    via: str
    """"direct", "gateway" or "bare" (the bare proxy)."""
    ttft: float
    total: float
    ok: bool


async def _one_stream(http: aiohttp.ClientSession, url: str, tokens: int, via: str) -> Sample:
    body = {"model": INSTANT, "prompt": "benchmark", "max_tokens": tokens, "stream": True}
    start = time.perf_counter()
    ttft = 0.0
    try:
        async with asyncio.timeout(15), http.post(url + "/v1/completions", json=body) as resp:
            if resp.status != 200:
                await resp.read()
                return Sample(via, 0.0, 0.0, False)
            async for data in resp.content.iter_any():
                if not ttft and b'"text"' in data:
                    ttft = time.perf_counter() - start
    except (aiohttp.ClientError, TimeoutError):
        return Sample(via, 0.0, 0.0, False)
    return Sample(via, ttft, time.perf_counter() - start, ttft > 0)


async def _added_ttft(
    http: aiohttp.ClientSession, *, targets: dict[str, str], args: argparse.Namespace
) -> list[Sample]:
    rng = random.Random(args.seed)
    total = int(args.rate * args.seconds)
    tasks: list[asyncio.Task[Sample]] = []
    start = time.perf_counter()
    at = 0.0
    order: list[str] = []
    for _ in range(total):
        at += rng.expovariate(args.rate)
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if not order:  # each round of three in its own order: no path always follows another
            order = rng.sample(_ORDER, len(_ORDER))
        via = order.pop()
        tasks.append(asyncio.create_task(_one_stream(http, targets[via], args.tokens, via)))
    samples = await asyncio.gather(*tasks)
    warm = int(args.rate * 1.0)  # the first second warms connections and caches
    return list(samples[warm:])


_ORDER = ("direct", "gateway", "bare")
_CAP = 1024
"""The gateway's per-pod cap: far above the load, so phase 1 never queues."""


async def _window(
    pid: int,
    args: argparse.Namespace,
    worker: Callable[[], Coroutine[Any, Any, None]],
    counters: Callable[[], tuple[int, int]],
) -> tuple[float, float, int, int]:
    """Run `args.streams` copies of `worker` for `args.throughput_seconds`: the gateway's CPU
    seconds, the wall seconds and the workers' `counters()` (chunks, relay writes) of that
    window, read at its end, before the workers are stopped."""
    cpu0, wall0 = _cpu_seconds(pid), time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(args.streams)]
    await asyncio.sleep(args.throughput_seconds)
    cpu, wall = _cpu_seconds(pid) - cpu0, time.perf_counter() - wall0
    counted, written = counters()
    await _stop(workers)
    return cpu, wall, counted, written


async def _chunks(
    http: aiohttp.ClientSession, url: str, pid: int, args: argparse.Namespace
) -> dict[str, float]:
    """Phase 2 through the proxy at `url` (a completions endpoint; process `pid`)."""
    body = {"model": MODEL, "prompt": "x", "max_tokens": args.stream_tokens, "stream": True}
    chunks = writes = 0

    async def worker() -> None:
        nonlocal chunks, writes
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.post(url, json=body) as resp:
                    # One HTTP chunk of the gateway's answer per write of its relay loop.
                    async for data, end in resp.content.iter_chunks():
                        chunks += data.count(b"data:")
                        writes += end

    cpu, wall, counted, written = await _window(pid, args, worker, lambda: (chunks, writes))
    return {
        "chunks": counted,
        "chunks_per_s": counted / wall,
        "gateway_cpu_util": cpu / wall,
        "chunks_per_s_per_core": counted / cpu if cpu > 0 else 0.0,
        # How many SSE events each relay write carried (more when the gateway or the pods
        # fall behind and reads batch), and the gateway's CPU per write: a per-iteration cost
        # the machine's load moves much less than the chunk rate.
        "chunks_per_relay_write": counted / written if written else 0.0,
        "gateway_cpu_per_relay_write_us": cpu / written * 1e6 if written else 0.0,
    }


async def _lockstep(
    http: aiohttp.ClientSession,
    url: str,
    pid: int,
    args: argparse.Namespace,
    streams: dict[str, asyncio.Queue[None]],
) -> dict[str, float]:
    """Phase 2b: the relay's CPU per chunk with exactly one chunk per read. The upstream (in
    this process, `_lockstep_app`) writes a stream's next token only once this client has
    received the previous one through the gateway, so no read of the gateway's ever batches
    two: the figure does not move with how busy the machine is (the chunk rate of phase 2
    does, through the batching)."""
    chunks = writes = 0
    ids = iter(range(1 << 62))

    async def worker() -> None:
        nonlocal chunks, writes
        while True:
            sid = f"s{next(ids)}"
            turns = streams[sid] = asyncio.Queue()
            turns.put_nowait(None)  # the first token may go
            body = {"model": LOCKSTEP, "prompt": sid, "max_tokens": args.stream_tokens}
            try:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.post(url, json={**body, "stream": True}) as resp:
                        async for data, end in resp.content.iter_chunks():
                            chunks += data.count(b"data:")
                            writes += end
                            if end:
                                turns.put_nowait(None)
            finally:
                streams.pop(sid, None)

    cpu, wall, counted, written = await _window(pid, args, worker, lambda: (chunks, writes))
    return {
        "lockstep_chunks_per_s": counted / wall,
        "lockstep_chunks_per_relay_write": counted / written if written else 0.0,
        "lockstep_gateway_cpu_per_chunk_us": cpu / counted * 1e6 if counted else 0.0,
    }


async def _bare_chunks(
    http: aiohttp.ClientSession,
    bare: str,
    pid: int,
    args: argparse.Namespace,
    streams: dict[str, asyncio.Queue[None]],
) -> dict[str, float]:
    """Phases 2 and 2b through the bare proxy, to the same upstreams: what any Python proxy
    pays per chunk on this machine now, so the gateway's figures have a same-run yardstick."""
    await _warm(http, bare + "/pods", MODEL)
    plain = await _chunks(http, bare + "/pods/v1/completions", pid, args)
    lock = await _lockstep(http, bare + "/lockstep/v1/completions", pid, args, streams)
    return {
        "bare_proxy_chunks_per_s": plain["chunks_per_s"],
        "bare_proxy_cpu_util": plain["gateway_cpu_util"],
        "bare_proxy_chunks_per_s_per_core": plain["chunks_per_s_per_core"],
        "bare_proxy_chunks_per_relay_write": plain["chunks_per_relay_write"],
        "bare_proxy_cpu_per_relay_write_us": plain["gateway_cpu_per_relay_write_us"],
        "bare_proxy_lockstep_chunks_per_relay_write": lock["lockstep_chunks_per_relay_write"],
        "bare_proxy_lockstep_cpu_per_chunk_us": lock["lockstep_gateway_cpu_per_chunk_us"],
    }


def _lockstep_app(streams: dict[str, asyncio.Queue[None]]) -> web.Application:
    """The upstream of phase 2b: each stream's next token waits for its turn in `streams`
    (keyed by the prompt), given when the client has the previous one."""

    async def completions(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        turns = streams.get(str(body.get("prompt")))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        tokens = int(body.get("max_tokens") or 1)
        if turns is None:  # not one of ours (a warm-up): all at once
            await resp.write(_TOKEN * tokens + b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        # A load generator's worker cancelled at the end of a phase hangs up mid-stream.
        with contextlib.suppress(ConnectionResetError):
            for _ in range(tokens - 1):
                await turns.get()
                await resp.write(_TOKEN)
            await turns.get()
            usage = (body.get("stream_options") or {}).get("include_usage")
            await resp.write(_TOKEN + (_USAGE % tokens if usage else b"") + b"data: [DONE]\n\n")
            await resp.write_eof()
        return resp

    return _upstream_app(completions)


async def _requests(
    http: aiohttp.ClientSession, gateway: str, pid: int, args: argparse.Namespace
) -> dict[str, float]:
    body = {"model": MODEL, "prompt": "x", "max_tokens": 1}
    done = failed = 0

    async def worker() -> None:
        nonlocal done, failed
        while True:
            try:
                async with http.post(gateway + "/v1/completions", json=body) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                done += 1
            else:
                failed += 1

    cpu0, wall0 = _cpu_seconds(pid), time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
    await asyncio.sleep(args.throughput_seconds)
    cpu, wall = _cpu_seconds(pid) - cpu0, time.perf_counter() - wall0
    done_at_stop, failed_at_stop = done, failed
    await _stop(workers)
    done, failed = done_at_stop, failed_at_stop
    return {
        "requests_per_s": done / wall,
        "requests_failed": failed,
        "requests_per_s_per_core": done / cpu if cpu > 0 else 0.0,
    }


async def _loop_lag(out: list[float], period: float = 0.005) -> None:
    """How late this process's event loop wakes up: a saturated load generator shows here."""
    while True:
        start = time.perf_counter()
        await asyncio.sleep(period)
        out.append(time.perf_counter() - start - period)


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _warm(http: aiohttp.ClientSession, url: str, model: str) -> None:
    """One short request (failures ignored: warming only opens connections)."""
    body = {"model": model, "prompt": "x", "max_tokens": 2, "stream": True}
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with asyncio.timeout(10), http.post(url + "/v1/completions", json=body) as resp:
            await resp.read()


async def _wait_gateway(http: aiohttp.ClientSession, url: str, pods: int) -> None:
    wants = [
        f'surgescale_gateway_ready_pods{{model="{MODEL}"}} {float(pods)}',
        f'surgescale_gateway_ready_pods{{model="{INSTANT}"}} 1.0',
        f'surgescale_gateway_ready_pods{{model="{LOCKSTEP}"}} 1.0',
        f'surgescale_gateway_capacity_share_slots{{model="{INSTANT}"}} {float(_CAP)}',
    ]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url + "/metrics") as resp:
                text = await resp.text()
                sharing = "surgescale_gateway_capacity_share_slots" in text
                if all(w in text for w in wants[: 4 if sharing else 3]):
                    return
        await asyncio.sleep(0.1)
    raise SystemExit(f"the gateway at {url} did not see {pods} ready pods within 30 s")


async def _overhead_buckets(
    http: aiohttp.ClientSession, url: str, name: str = "surgescale_gateway_added_latency_seconds"
) -> dict[float, float]:
    """One of the gateway's histograms: upper bound (s) -> cumulative count."""
    from prometheus_client.parser import text_string_to_metric_families

    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                out[float(sample.labels["le"])] = sample.value
    return out


async def _counters(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The gateway's event counters: emitted, and flushes (writes to Redis)."""
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    out = {"emitted": 0.0, "flushes": 0.0}
    for line in text.splitlines():
        if line.startswith("surgescale_gateway_events_emitted_total "):
            out["emitted"] = float(line.split()[-1])
        elif line.startswith("surgescale_gateway_event_flushes_total "):
            out["flushes"] = float(line.split()[-1])
    return out


def _bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Quantile (ms) of the observations between two histogram snapshots, interpolated."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan")
    rank, lower, seen = q * total, 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower * 1000
            inside = cumulative - seen
            frac = (rank - seen) / inside if inside else 1.0
            return (lower + (bound - lower) * frac) * 1000
        lower, seen = bound, cumulative
    return lower * 1000


def _ratio_interval(
    direct: list[float],
    gateway: list[float],
    bare: list[float],
    q: float,
    seed: int,
    rounds: int = 400,
) -> list[float]:
    """90 % bootstrap interval of the added-TTFT ratio at quantile `q`: each path's samples
    resampled with replacement, the ratio recomputed, its 5th and 95th percentiles. How far the
    figure could move on another run of the same length in the same conditions (a p99 from ~12
    tail samples per path moves a lot); NaN when a path has no samples."""
    if not (direct and gateway and bare):
        return [float("nan"), float("nan")]
    rng = random.Random(seed)
    ratios: list[float] = []
    for _ in range(rounds):
        d, g, b = (
            _pct(rng.choices(values, k=len(values)), q) for values in (direct, gateway, bare)
        )
        if b > d:
            ratios.append((g - d) / (b - d))
    if not ratios:
        return [float("nan"), float("nan")]
    return [round(_pct(ratios, 0.05), 3), round(_pct(ratios, 0.95), 3)]


def _pct(values: list[float], q: float) -> float:
    """The project's percentile (`surgescale.stats`) at fraction `q`; NaN when there are none."""
    value = percentile(values, q * 100.0)
    return float("nan") if value is None else value


async def _run(
    args: argparse.Namespace,
    *,
    pods: list[str],
    targets: dict[str, str],
    pid: int,
    pods_pid: int,
    bare_pid: int,
    events: tuple[str, str] | None,
    lockstep: socket.socket,
) -> dict[str, Any]:
    """All phases; `events` is (Redis URL, prefix) of the gateway's events (None: off);
    `lockstep` the listening socket of phase 2b's upstream (served from here)."""
    import gc

    turns: dict[str, asyncio.Queue[None]] = {}
    upstream = web.AppRunner(_lockstep_app(turns), access_log=None, handler_cancellation=True)
    await upstream.setup()
    await web.SockSite(upstream, lockstep).start()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        gateway = targets["gateway"]
        await _wait_gateway(http, gateway, len(pods))
        # Open the connections phase 1 will need beforehand: a connect during the measurement
        # can hit a full accept queue (a 1 s SYN retry), which is not what is being measured.
        for _ in range(args.warm_connections // 16):
            await asyncio.gather(
                *[_warm(http, u, INSTANT) for u in targets.values() for _ in range(16)]
            )
        gc.collect()
        gc.freeze()
        lag: list[float] = []
        monitor = asyncio.create_task(_loop_lag(lag))
        buckets0 = await _overhead_buckets(http, gateway)
        ttft0 = await _overhead_buckets(http, gateway, "surgescale_gateway_ttft_seconds")
        events0 = await _counters(http, gateway)
        cpu0, wall0 = _cpu_seconds(pid), time.perf_counter()
        pods_cpu0, own_cpu0 = _cpu_seconds(pods_pid), time.process_time()
        bare_cpu0 = _cpu_seconds(bare_pid)
        since_ms = time.time_ns() // 1_000_000
        samples = await _added_ttft(http, targets=targets, args=args)
        wall = time.perf_counter() - wall0
        until_ms = time.time_ns() // 1_000_000 + 1_000  # the last events' linger
        gateway_cpu = _cpu_seconds(pid) - cpu0
        bare_cpu = _cpu_seconds(bare_pid) - bare_cpu0
        phase1_util = gateway_cpu / wall
        pods_util = (_cpu_seconds(pods_pid) - pods_cpu0) / wall
        own_util = (time.process_time() - own_cpu0) / wall
        monitor.cancel()
        buckets1 = await _overhead_buckets(http, gateway)
        ttft1 = await _overhead_buckets(http, gateway, "surgescale_gateway_ttft_seconds")
        events1 = await _counters(http, gateway)
        delays = await _event_delays(*events, since_ms, until_ms) if events else {}
        chunk_figures = await _chunks(http, gateway + "/v1/completions", pid, args)
        chunk_figures.update(await _lockstep(http, gateway + "/v1/completions", pid, args, turns))
        chunk_figures.update(await _bare_chunks(http, targets["bare"], bare_pid, args, turns))
        request_figures = await _requests(http, gateway, pid, args)
    await upstream.cleanup()
    good = [s for s in samples if s.ok]
    direct = [s for s in good if s.via == "direct"]
    via = [s for s in good if s.via == "gateway"]
    bare = [s for s in good if s.via == "bare"]
    out: dict[str, Any] = {}
    for name, q in (("p50", 0.50), ("p99", 0.99)):
        d_ttft, g_ttft = _pct([s.ttft for s in direct], q), _pct([s.ttft for s in via], q)
        b_ttft = _pct([s.ttft for s in bare], q)
        d_total, g_total = _pct([s.total for s in direct], q), _pct([s.total for s in via], q)
        out[f"direct_ttft_{name}_ms"] = d_ttft * 1000
        out[f"gateway_ttft_{name}_ms"] = g_ttft * 1000
        out[f"bare_proxy_ttft_{name}_ms"] = b_ttft * 1000
        out[f"added_ttft_{name}_ms"] = (g_ttft - d_ttft) * 1000
        out[f"bare_proxy_added_ttft_{name}_ms"] = (b_ttft - d_ttft) * 1000
        out[f"added_ttft_ratio_{name}"] = (
            (g_ttft - d_ttft) / (b_ttft - d_ttft) if b_ttft > d_ttft else float("nan")
        )
        out[f"direct_total_{name}_ms"] = d_total * 1000
        out[f"gateway_total_{name}_ms"] = g_total * 1000
    for name, q in (("p50", 0.50), ("p99", 0.99)):
        out[f"added_ttft_ratio_{name}_ci90"] = _ratio_interval(
            [s.ttft for s in direct], [s.ttft for s in via], [s.ttft for s in bare], q, args.seed
        )
    out["samples_direct"], out["samples_gateway"] = len(direct), len(via)
    out["samples_bare_proxy"] = len(bare)
    out["gateway_internal_p50_ms"] = _bucket_quantile(buckets0, buckets1, 0.50)
    out["gateway_internal_p99_ms"] = _bucket_quantile(buckets0, buckets1, 0.99)
    out["gateway_seen_ttft_p50_ms"] = _bucket_quantile(ttft0, ttft1, 0.50)
    out["client_loop_lag_p50_ms"] = _pct(lag, 0.5) * 1000
    out["client_loop_lag_p99_ms"] = _pct(lag, 0.99) * 1000
    out["load_average_1m"] = os.getloadavg()[0]
    out["nice"] = args.nice
    out["cpus"] = os.cpu_count() or 0
    out["phase1_requests"] = len(samples)
    out["phase1_failed"] = len(samples) - len(good)
    out["phase1_gateway_cpu_util"] = phase1_util
    # CPU per proxied request (from /proc; robust to a busy machine, unlike latency). The
    # gateway's includes its background work (snapshots, health checks, capacity sync).
    sent = [s for s in samples if s.via == "gateway"], [s for s in samples if s.via == "bare"]
    out["gateway_cpu_per_request_us"] = gateway_cpu / max(1, len(sent[0])) * 1e6
    out["bare_proxy_cpu_per_request_us"] = bare_cpu / max(1, len(sent[1])) * 1e6
    flushes = events1["flushes"] - events0["flushes"]
    out["phase1_events"] = events1["emitted"] - events0["emitted"]
    out["phase1_event_flushes"] = flushes
    out["phase1_pods_cpu_util"] = pods_util
    out["phase1_loadgen_cpu_util"] = own_util
    out.update(delays)
    out.update(chunk_figures)
    # The gateway's chunk figures as ratios to the bare proxy's in the same run: a share of
    # what this machine lets a Python proxy relay (the absolute rate moves with the machine).
    bare_rate = out["bare_proxy_chunks_per_s_per_core"]
    out["chunks_per_core_vs_bare_proxy"] = (
        out["chunks_per_s_per_core"] / bare_rate if bare_rate else float("nan")
    )
    bare_lock = out["bare_proxy_lockstep_cpu_per_chunk_us"]
    out["lockstep_cpu_per_chunk_ratio"] = (
        out["lockstep_gateway_cpu_per_chunk_us"] / bare_lock if bare_lock else float("nan")
    )
    out.update(request_figures)
    return out


async def _event_delays(url: str, prefix: str, since_ms: int, until_ms: int) -> dict[str, float]:
    """How late the phase-1 request events reached Redis: each stream entry's id (Redis's clock
    at the XADD) minus each event's `ts_ms` (the gateway's clock when it happened; one machine,
    one clock; both in whole ms, so +-1 ms). What the event linger costs the controller."""
    from surgescale.events import StreamKeys, close, connect
    from surgescale.events.schema import EventType, decode_entry

    client = connect(url)
    try:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(  # type: ignore[assignment]
            StreamKeys(prefix=prefix).stream(INSTANT), min=f"{since_ms}-0", max=f"{until_ms}-0"
        )
    finally:
        await close(client)
    every: list[float] = []
    enqueue: list[float] = []
    for entry_id, fields in entries:
        at = int(entry_id.split(b"-")[0])
        for event in decode_entry(fields)[0]:
            if event.request_id:
                every.append(float(at - event.ts_ms))
                if event.type is EventType.ENQUEUE:
                    enqueue.append(float(at - event.ts_ms))
    return {
        "event_delay_p50_ms": _pct(every, 0.5),
        "event_delay_p99_ms": _pct(every, 0.99),
        "event_delay_max_ms": max(every, default=float("nan")),
        "enqueue_delay_p99_ms": _pct(enqueue, 0.99),
    }


async def _forget_events(url: str, prefix: str) -> None:
    """Delete the benchmark's event streams."""
    from surgescale.events import close, connect

    client = connect(url)
    try:
        async for key in client.scan_iter(match=f"{prefix}:*"):
            await client.delete(key)
    finally:
        await close(client)


def _print_table(r: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"gateway benchmark: {args.pods} simulated pods and an instant upstream, one gateway "
        f"worker (uvloop, events on), a bare aiohttp proxy; "
        f"machine load average {r['load_average_1m']:.1f} on {r['cpus']} CPUs"
    )
    print(
        f"\n1. streaming at {args.rate:g} req/s, {args.tokens} tokens ({r['phase1_requests']} "
        f"measured, {r['phase1_failed']} failed; CPU: gateway {r['phase1_gateway_cpu_util']:.0%}, "
        f"pods {r['phase1_pods_cpu_util']:.0%}, load generator {r['phase1_loadgen_cpu_util']:.0%})"
    )
    print("   to the instant upstream (first byte at once), rotating the three paths")
    print(
        f"   {'':<10}{'direct':>10}{'gateway':>10}{'added':>10}{'bare':>10}{'added':>10}{'ratio':>8}"
    )
    for q in ("p50", "p99"):
        print(
            f"   TTFT {q:<5}{r[f'direct_ttft_{q}_ms']:>9.2f} {r[f'gateway_ttft_{q}_ms']:>9.2f} "
            f"{r[f'added_ttft_{q}_ms']:>9.2f} {r[f'bare_proxy_ttft_{q}_ms']:>9.2f} "
            f"{r[f'bare_proxy_added_ttft_{q}_ms']:>9.2f} {r[f'added_ttft_ratio_{q}']:>7.2f}  ms"
        )
    print(
        f"   samples: direct {r['samples_direct']}, gateway {r['samples_gateway']}, bare "
        f"{r['samples_bare_proxy']}; ratio 90% bootstrap interval p50 "
        f"{r['added_ttft_ratio_p50_ci90']}, p99 {r['added_ttft_ratio_p99_ci90']}"
    )
    if "event_delay_p50_ms" in r:
        print(
            f"   events reach Redis after: p50 {r['event_delay_p50_ms']:.0f} ms, p99 "
            f"{r['event_delay_p99_ms']:.0f} ms, max {r['event_delay_max_ms']:.0f} ms "
            f"(enqueue p99 {r['enqueue_delay_p99_ms']:.0f} ms)"
        )
    print(
        f"   the gateway's own time before the first byte (its histogram): "
        f"p50 {r['gateway_internal_p50_ms']:.2f} ms, p99 {r['gateway_internal_p99_ms']:.2f} ms"
    )
    print(
        f"   CPU per request: gateway {r['gateway_cpu_per_request_us']:.0f} us, bare proxy "
        f"{r['bare_proxy_cpu_per_request_us']:.0f} us; {r['phase1_events']:.0f} events in "
        f"{r['phase1_event_flushes']:.0f} writes to Redis"
    )
    print(
        f"   TTFT seen at the gateway p50 {r['gateway_seen_ttft_p50_ms']:.2f} ms; load generator "
        f"loop lag p50 {r['client_loop_lag_p50_ms']:.2f} ms, p99 {r['client_loop_lag_p99_ms']:.2f} ms"
    )
    for q in ("p50", "p99"):
        print(
            f"   total {q:<4}{r[f'direct_total_{q}_ms']:>9.2f} {r[f'gateway_total_{q}_ms']:>9.2f} "
            f"{r[f'gateway_total_{q}_ms'] - r[f'direct_total_{q}_ms']:>9.2f}  ms"
        )
    print(
        f"\n2. {args.streams} streams x {args.stream_tokens} tokens: {r['chunks_per_s']:,.0f} chunks/s "
        f"at {r['gateway_cpu_util']:.0%} of a core = {r['chunks_per_s_per_core']:,.0f} chunks/s per core"
    )
    print(
        f"   {r['chunks_per_relay_write']:.2f} chunks per relay write, "
        f"{r['gateway_cpu_per_relay_write_us']:.1f} us of gateway CPU per write"
    )
    print(
        f"   lockstep (one chunk per read): {r['lockstep_gateway_cpu_per_chunk_us']:.1f} us of "
        f"gateway CPU per chunk ({r['lockstep_chunks_per_relay_write']:.2f} chunks per write, "
        f"{r['lockstep_chunks_per_s']:,.0f} chunks/s)"
    )
    print(
        f"   bare proxy, same upstreams: {r['bare_proxy_chunks_per_s_per_core']:,.0f} chunks/s per "
        f"core ({r['bare_proxy_chunks_per_s']:,.0f} chunks/s at {r['bare_proxy_cpu_util']:.0%} of "
        f"a core), lockstep {r['bare_proxy_lockstep_cpu_per_chunk_us']:.1f} us per chunk; gateway "
        f"/ bare: {r['chunks_per_core_vs_bare_proxy']:.2f} of its chunk rate per core, "
        f"{r['lockstep_cpu_per_chunk_ratio']:.2f}x its lockstep CPU per chunk"
    )
    print(
        f"\n3. {args.concurrency} concurrent 1-token requests: {r['requests_per_s']:,.0f} req/s "
        f"({r['requests_per_s_per_core']:,.0f} per gateway core, {r['requests_failed']} failed)"
    )
    print()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    import uvloop

    if args.nice:
        try:
            os.nice(args.nice)  # inherited by the pods and gateway processes forked below
        except PermissionError as exc:
            raise SystemExit(f"--nice {args.nice}: {exc}") from exc

    with contextlib.ExitStack() as stack:
        redis_url: str | None
        if args.redis_url and args.redis_url.lower() == "none":
            redis_url = None
        else:
            redis_url = stack.enter_context(ensure_redis(args.redis_url))
        prefix = f"bench-gateway-{os.getpid()}"
        if redis_url is not None:  # runs after the gateway has stopped (LIFO)
            stack.callback(lambda: uvloop.run(_forget_events(str(redis_url), prefix)))
        queue: Any = multiprocessing.get_context("fork").Queue()
        pods_proc = stack.enter_context(_process(_pods_main, args.pods, queue))
        pods, instant = queue.get(timeout=60)
        port, bare_port = free_port(), free_port()
        lockstep = stack.enter_context(socket.socket())
        lockstep.bind(("127.0.0.1", 0))
        lockstep.listen(256)
        lockstep_url = f"http://127.0.0.1:{lockstep.getsockname()[1]}"
        settings = GatewaySettings(
            port=port,
            static_pods=[f"{MODEL}={u}" for u in pods]
            + [f"{INSTANT}={instant}", f"{LOCKSTEP}={lockstep_url}"],
            pod_concurrency=_CAP,
            max_queue_length=100_000,
            redis_url=redis_url,
            events_prefix=prefix,
            log_level="WARNING",
            health_interval_s=1.0,
            allow_unauthenticated=True,
        )
        gateway_proc = stack.enter_context(_process(run_worker, settings))
        bare_proc = stack.enter_context(
            _process(_bare_proxy_main, instant, bare_port, pods, lockstep_url)
        )
        assert gateway_proc.pid is not None
        assert pods_proc.pid is not None
        assert bare_proc.pid is not None
        targets = {
            "direct": instant,
            "gateway": f"http://127.0.0.1:{port}",
            "bare": f"http://127.0.0.1:{bare_port}",
        }
        result = uvloop.run(
            _run(
                args,
                pods=pods,
                targets=targets,
                pid=gateway_proc.pid,
                pods_pid=pods_proc.pid,
                bare_pid=bare_proc.pid,
                events=None if redis_url is None else (redis_url, prefix),
                lockstep=lockstep,
            )
        )
    _print_table(result, args)
    keys = (
        "added_ttft_p50_ms",
        "added_ttft_p99_ms",
        "bare_proxy_added_ttft_p50_ms",
        "bare_proxy_added_ttft_p99_ms",
        "added_ttft_ratio_p50",
        "added_ttft_ratio_p99",
        "chunks_per_s_per_core",
        "bare_proxy_chunks_per_s_per_core",
        "chunks_per_core_vs_bare_proxy",
        "requests_per_s",
    )
    ordered = {k: round(result[k], 3) for k in keys}
    ordered.update(
        {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items() if k not in keys}
    )
    print(json.dumps(ordered))
    return 0
