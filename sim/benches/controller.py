"""`surgescale bench controller`: reaction latency of the controller under background event load.

Set-up (four processes on this machine, real Redis, real HTTP):
- the simulated Kubernetes API server (`sim.cluster`) runs in its own process (this module with
  `--apiserver`), so the status writes it takes (about 100/s with many models) do not delay the
  measuring loop; our CRD, a model Deployment scaled to zero and its InferenceScaler
  (minReplicas 0, concurrencyPerReplica 1, priorRequestSeconds 1000: one queued request already
  needs a replica; scale to zero after 0.3 s idle) are created in it over HTTP;
- this process runs the trial driver and takes t0;
- the controller runs as its own process (`python -m controller`), as in production;
- a load generator process emits background events through `EventProducer` at a fixed rate,
  stamped when emitted: full request lifecycles (enqueue, dispatch, first_token, complete) on the
  N-1 other models (`--models N`), plus 20% `first_token` events on the measured model (so its
  scaler is being re-evaluated all the time, as under real traffic).

A trial: wait until the Deployment is at zero, emit one `enqueue` for the model (t0, just before
`emit`), and take t1 when the store of the simulated API server applies the scale PATCH (a
synchronous store listener in that process, which reports the time on its stdout; both take
CLOCK_MONOTONIC, one clock for every process of the machine). Then the request is
cancelled, the controller scales back to zero after the idle period and the next trial starts
after a random 50 to 150 ms. Reported per load level: p50/p99/max of t1 - t0, the generator's
achieved rate and the controller's consumed rate (from its /metrics). The highest sustained rate
is searched by raising the load until p99 passes 100 ms (or the generator cannot go faster,
which is then said). Last line: JSON with `reaction_p50_ms`, `reaction_p99_ms` (at 10k/s),
`max_events_per_s`, and at 10k/s the generator's achieved rate, the controller's consumed rate and
CPU, this process's own event-loop lag (`bench_loop_lag_max_ms`: it flushes the trial's
enqueue) and the API server process's (`apiserver_loop_lag_max_ms`: its store times t1), so a
lagging bench shows as such rather than as controller time. The controller runs with its own
defaults: Lease settings (3 s duration, 0.5 s retry) and the 1 s tick (until session 8 the bench
ran a 50 ms tick so that the scale-to-zero between trials came sooner; at 1,000 models that was
20 samplings of every model a second, 20x production's, and 0.86 against 0.66 of a core).

Redis: its keys live under `bench-<random>:`, deleted at the end even when the bench is stopped
by SIGTERM/SIGINT (they cancel the run, so the clean-up runs); keys of runs killed harder
(SIGKILL) are swept by the next run (no stream entry for 10 minutes); the streams are bounded
(`StreamLimits`) while it runs, and the report says what was left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from controller import crd
from sim.benches.cleanup import cancel_on_signals, delete_prefix, leftover, sweep_stale
from sim.cluster import ClusterOptions, start_cluster
from sim.localredis.server import ensure_redis, free_port
from surgescale.events import Event, EventProducer, EventType, StreamKeys, close, connect

MODEL = "bench-model"
NS = "default"
DEPLOYMENT = "bench-model"
REPO = Path(__file__).resolve().parents[2]


# --- load generator (its own process) -------------------------------------------------------


def _background_events(n_bg_models: int = 4) -> list[Event]:
    """A cycle of background events (at least 1,000, and one lifecycle on every background
    model): 80% lifecycles on the other models, 20% `first_token` on the target."""
    out: list[Event] = []
    ts = int(time.time() * 1000)
    i = 0
    size = max(1000, 5 * n_bg_models)
    while len(out) < size:
        model = f"bg-{i % n_bg_models}"
        rid = f"bg{i}"
        out.append(
            Event(type=EventType.ENQUEUE, model=model, gateway="bg", ts_ms=ts, request_id=rid)
        )
        out.append(
            Event(
                type=EventType.DISPATCH,
                model=model,
                gateway="bg",
                ts_ms=ts,
                request_id=rid,
                queue_ms=3.0,
                pod="p",
            )
        )
        out.append(
            Event(
                type=EventType.FIRST_TOKEN,
                model=MODEL,
                gateway="bg",
                ts_ms=ts,
                request_id=rid,
                ttft_ms=80.0 + i % 40,
            )
        )
        out.append(
            Event(
                type=EventType.FIRST_TOKEN,
                model=model,
                gateway="bg",
                ts_ms=ts,
                request_id=rid,
                ttft_ms=90.0,
            )
        )
        out.append(
            Event(
                type=EventType.COMPLETE,
                model=model,
                gateway="bg",
                ts_ms=ts,
                request_id=rid,
                status=200,
                output_tokens=100,
                ttft_ms=90.0,
                tpot_ms=12.0,
                e2e_ms=1300.0,
                queue_ms=3.0,
            )
        )
        i += 1
    return out


async def _loadgen(redis_url: str, prefix: str, rate: float, n_bg_models: int) -> None:
    redis = connect(redis_url)
    producer = EventProducer(redis, keys=StreamKeys(prefix), batch_limit=5_000)
    await producer.start()
    events = _background_events(n_bg_models)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    started = loop.time()
    sent = 0
    n = len(events)
    parent = os.getppid()
    while not stop.is_set() and os.getppid() == parent:  # never outlive the bench
        due = int(rate * (loop.time() - started))
        backlog = producer.stats.buffered
        if due > sent and backlog < 50_000:  # do not build an ever-growing buffer
            # Stamped now, as a gateway does: with the cycle's build time every event would
            # look later and later to the controller (late, then stale: not real traffic).
            ts_ms = int(time.time() * 1000)
            for k in range(sent, due):
                producer.emit(msgspec.structs.replace(events[k % n], ts_ms=ts_ms))
            sent = due
        elif due > sent:
            sent = due  # could not keep up: skip (counted as not achieved)
        await asyncio.sleep(0.002)
    elapsed = loop.time() - started
    flushed = producer.stats.flushed
    await producer.close(timeout=1.0)
    await close(redis)
    with contextlib.suppress(BrokenPipeError):  # the bench may be gone already
        print(json.dumps({"achieved": flushed / elapsed if elapsed > 0 else 0.0}), flush=True)


# --- the simulated API server (its own process) ------------------------------------------


async def _apiserver(kubeconfig: Path) -> None:
    """Serve the simulated Kubernetes API in this process and report on stdout, one line each:
    `ready URL` once it listens; `R T REPLICAS` when the store applies a new replica count of
    the measured Deployment (T = CLOCK_MONOTONIC seconds, shared by every process of the
    machine, taken in the store's synchronous listener); `L MAX_MS` every second, this
    process's own event-loop lag over that second."""
    cluster = await start_cluster(ClusterOptions(speed=1.0, full_gc_every_s=300.0))
    out = sys.stdout
    last = [0]

    def on_change(event: Any) -> None:
        if event.rt.kind != "Deployment" or event.obj["metadata"]["name"] != DEPLOYMENT:
            return
        replicas = int((event.obj.get("spec") or {}).get("replicas") or 0)
        if replicas != last[0]:
            last[0] = replicas
            out.write(f"R {time.monotonic():.6f} {replicas}\n")
            out.flush()

    cluster.store.subscribe(on_change)
    cluster.write_kubeconfig(kubeconfig)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    out.write(f"ready {cluster.url}\n")
    out.flush()
    parent = os.getppid()
    worst, started = 0.0, loop.time()
    with contextlib.suppress(BrokenPipeError):
        while not stop.is_set() and os.getppid() == parent:  # never outlive the bench
            before = loop.time()
            await asyncio.sleep(0.005)
            worst = max(worst, loop.time() - before - 0.005)
            if loop.time() - started >= 1.0:
                out.write(f"L {worst * 1000.0:.2f}\n")
                out.flush()
                worst, started = 0.0, loop.time()
    await cluster.stop()


# --- the measuring side ---------------------------------------------------------------------


@dataclass
class Level:
    target_rate: float
    achieved_rate: float
    consumed_rate: float
    latencies_ms: list[float]
    timeouts: int
    inside_ms: tuple[float, float]
    """The controller's own histogram (batch arrival to PATCH sent): p50, p99 bucket bounds."""
    controller_cpu: float
    """CPU seconds per second the controller process used during the level (1.0 = one core)."""
    rss_mb: float = 0.0
    """The controller's resident memory at the end of the level (MiB)."""
    bench_lag_ms: tuple[float, float] = (0.0, 0.0)
    """This process's own event-loop lag during the level (p99, max): it takes t0 and flushes
    the trial's enqueue, so a late loop here would show as reaction time."""
    server_lag_max_ms: float = 0.0
    """The API server process's largest event-loop lag during the level: its store times t1
    (and takes the controller's status writes), so a late loop there would show too."""

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        if not xs:
            return float("inf")
        k = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
        return xs[k]


class LoopLag:
    """How late this process's event loop runs a 5 ms sleep (it hosts the API server and the
    watcher: if it lags, t1 is late and the bench, not the controller, is measured)."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.005)
            self.samples.append(max(loop.time() - before - 0.005, 0.0) * 1000.0)

    def take(self) -> tuple[float, float]:
        """(p99, max) lag in ms since the last take."""
        xs, self.samples = sorted(self.samples), []
        if not xs:
            return (0.0, 0.0)
        return (xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))], xs[-1])


class Watcher:
    """The moments the API server (its own process) stored a new replica count of the
    Deployment, read from its stdout; and that process's own event-loop lag."""

    def __init__(self) -> None:
        self.replicas = 0
        self.changed = asyncio.Event()
        self.changes: list[tuple[float, int]] = []
        self.server_lag_ms: list[float] = []
        self.url = asyncio.get_running_loop().create_future()

    async def follow(self, stream: asyncio.StreamReader) -> None:
        """Read the API server's report lines until it closes its stdout."""
        while line := await stream.readline():
            kind, _, rest = line.decode().strip().partition(" ")
            if kind == "R":
                t, replicas = rest.split()
                self.changes.append((float(t), int(replicas)))
                self.replicas = int(replicas)
                self.changed.set()
            elif kind == "L":
                self.server_lag_ms.append(float(rest))
            elif kind == "ready" and not self.url.done():
                self.url.set_result(rest)
        if not self.url.done():
            self.url.set_exception(RuntimeError("the simulated API server process ended"))

    def take_server_lag(self) -> float:
        """The API server process's largest loop lag (ms) since the last take."""
        worst = max(self.server_lag_ms, default=0.0)
        self.server_lag_ms = []
        return worst

    async def until(self, predicate: Any, timeout: float) -> float | None:
        """Wait until the replica count satisfies `predicate`; the API server's time of that
        change (CLOCK_MONOTONIC, comparable with `time.monotonic()` here)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.replicas):
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return self.changes[-1][0] if self.changes else time.monotonic()


def _background_objects(i: int) -> list[tuple[str, dict[str, Any]]]:
    """A background model's Deployment and InferenceScaler. The Deployment is not opted in to
    scaling (`surgescale.io/scalable` unset), so the controller observes and decides for it in
    full but writes only its status: the simulated cluster does not run thousands of pods in
    the measuring process."""
    name = f"bg-{i}"
    return [
        (
            f"/apis/apps/v1/namespaces/{NS}/deployments",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": NS},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "vllm", "image": "vllm"}]},
                    },
                },
            },
        ),
        (
            f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{NS}/{crd.PLURAL}",
            {
                "apiVersion": f"{crd.GROUP}/{crd.VERSION}",
                "kind": crd.KIND,
                "metadata": {"name": name, "namespace": NS},
                "spec": {
                    "model": name,
                    "scaleTargetRef": {"name": name},
                    "minReplicas": 0,
                    "maxReplicas": 4,
                    "target": {"concurrencyPerReplica": 8},
                },
            },
        ),
    ]


async def _apply_background(url: str, n_bg_models: int) -> None:
    """Create the background models' objects, 16 requests at a time."""
    gate = asyncio.Semaphore(16)
    async with aiohttp.ClientSession(base_url=url) as http:

        async def post(path: str, body: dict[str, Any]) -> None:
            async with gate, http.post(path, json=body) as resp:
                if resp.status >= 300:
                    raise RuntimeError(f"POST {path}: {resp.status} {await resp.text()}")

        for kind in (0, 1):  # Deployments first, so the scalers find them
            await asyncio.gather(*(post(*_background_objects(i)[kind]) for i in range(n_bg_models)))


async def _apply(url: str) -> None:
    async with aiohttp.ClientSession(base_url=url) as http:
        steps = [
            ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd.crd_manifest()),
            (
                f"/apis/apps/v1/namespaces/{NS}/deployments",
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {
                        "name": DEPLOYMENT,
                        "namespace": NS,
                        "labels": {"surgescale.io/scalable": "true"},  # opted in to scaling
                    },
                    "spec": {
                        "replicas": 0,
                        "selector": {"matchLabels": {"app": DEPLOYMENT}},
                        "template": {
                            "metadata": {
                                "labels": {"app": DEPLOYMENT},
                                "annotations": {"surgescale.io/model": MODEL},
                            },
                            "spec": {
                                "containers": [
                                    {
                                        "name": "vllm",
                                        "image": "vllm",
                                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                                    }
                                ]
                            },
                        },
                    },
                },
            ),
            (
                f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{NS}/{crd.PLURAL}",
                {
                    "apiVersion": f"{crd.GROUP}/{crd.VERSION}",
                    "kind": crd.KIND,
                    "metadata": {"name": DEPLOYMENT, "namespace": NS},
                    "spec": {
                        "model": MODEL,
                        "scaleTargetRef": {"name": DEPLOYMENT},
                        "minReplicas": 0,
                        "maxReplicas": 2,
                        "target": {"concurrencyPerReplica": 1, "priorRequestSeconds": 1000},
                        "scaleToZero": {"idleSeconds": 0.3},
                        "scaleDown": {"delaySeconds": 0},
                    },
                },
            ),
        ]
        for path, body in steps:
            async with http.post(path, json=body) as resp:
                if resp.status >= 300:
                    raise RuntimeError(f"POST {path}: {resp.status} {await resp.text()}")
            await asyncio.sleep(0.2)


async def _scrape(http_port: int) -> str:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{http_port}/metrics") as resp,
        ):
            return await resp.text()
    except aiohttp.ClientError:
        return ""


def _buckets(text: str) -> dict[float, float]:
    """Cumulative counts of the controller's decision-latency histogram for the model."""
    out: dict[float, float] = {}
    head = "surgescale_controller_decision_latency_seconds_bucket{"
    for line in text.splitlines():
        if line.startswith(head) and f'model="{MODEL}"' in line and 'direction="up"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def _models_decided(text: str) -> set[str]:
    """The models the controller has made decisions for (its decisions counter's labels)."""
    head = "surgescale_controller_decisions_total{"
    return {
        line.split('model="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith(head) and 'model="' in line
    }


def _bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Upper bound (ms) of the bucket holding the q-quantile of the observations in between."""
    deltas = sorted((le, after.get(le, 0.0) - before.get(le, 0.0)) for le in after)
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return float("nan")
    for le, count in deltas:
        if count >= q * total:
            return le * 1000.0
    return float("inf")


async def _wait_caught_up(http_port: int, timeout: float = 120.0) -> float:
    """Wait until the controller has consumed the backlog of an earlier level (its event counter
    nearly stops: only snapshots and trials arrive); the seconds it took."""
    started = time.perf_counter()
    last = await _events_consumed(http_port)
    while time.perf_counter() - started < timeout:
        await asyncio.sleep(0.5)
        now = await _events_consumed(http_port)
        if now - last < 50:
            break
        last = now
    return time.perf_counter() - started


def _rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc; 0 where unavailable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, IndexError, ValueError):
        pass
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc; 0 where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


async def _events_consumed(http_port: int) -> float:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{http_port}/metrics") as resp,
        ):
            text = await resp.text()
    except aiohttp.ClientError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("surgescale_controller_events_total "):
            return float(line.split()[1])
    return 0.0


async def _measure_level(
    *,
    rate: float,
    trials: int,
    redis_url: str,
    prefix: str,
    producer: EventProducer,
    watcher: Watcher,
    http_port: int,
    controller_pid: int,
    gw: dict[str, int],
    bg_models: int,
    lag: LoopLag,
) -> Level:
    await _wait_caught_up(http_port)
    gen: asyncio.subprocess.Process | None = None
    if rate > 0:
        gen = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sim.benches.controller",
            "--loadgen",
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
            "--rate",
            str(rate),
            "--models",
            str(bg_models + 1),
            stdout=asyncio.subprocess.PIPE,
            cwd=str(REPO),
        )
        await asyncio.sleep(1.5)  # let the load settle
    consumed0, t_start = await _events_consumed(http_port), time.perf_counter()
    cpu0 = _cpu_seconds(controller_pid)
    lag.take()
    watcher.take_server_lag()
    hist0 = _buckets(await _scrape(http_port))
    lat: list[float] = []
    timeouts = 0
    for i in range(trials):
        if await watcher.until(lambda r: r == 0, 10.0) is None:
            timeouts += 1
            continue
        await asyncio.sleep(random.uniform(0.05, 0.15))
        rid = f"trial-{uuid.uuid4().hex[:8]}-{i}"
        ev = Event(
            type=EventType.ENQUEUE,
            model=MODEL,
            gateway="bench",
            ts_ms=int(time.time() * 1000),
            request_id=rid,
        )
        t0 = time.monotonic()
        gw["queue"] = 1
        producer.emit(ev)
        t1 = await watcher.until(lambda r: r > 0, 5.0)
        gw["queue"] = 0
        producer.emit(
            Event(
                type=EventType.CANCEL,
                model=MODEL,
                gateway="bench",
                ts_ms=int(time.time() * 1000),
                request_id=rid,
            )
        )
        if t1 is None:
            timeouts += 1
        else:
            lat.append((t1 - t0) * 1000.0)
    elapsed = time.perf_counter() - t_start
    bench_lag = lag.take()
    server_lag = watcher.take_server_lag()
    consumed = (await _events_consumed(http_port) - consumed0) / elapsed
    cpu = (_cpu_seconds(controller_pid) - cpu0) / elapsed
    hist1 = _buckets(await _scrape(http_port))
    inside = (_bucket_quantile(hist0, hist1, 0.5), _bucket_quantile(hist0, hist1, 0.99))
    achieved = 0.0
    if gen is not None:
        gen.send_signal(signal.SIGTERM)
        out, _ = await gen.communicate()
        with contextlib.suppress(Exception):
            achieved = float(json.loads(out.decode().strip().splitlines()[-1])["achieved"])
    return Level(
        rate,
        achieved,
        consumed,
        lat,
        timeouts,
        inside,
        cpu,
        _rss_mb(controller_pid),
        bench_lag,
        server_lag,
    )


async def _snapshots(producer: EventProducer, gw: dict[str, int]) -> None:
    seq = 0
    while True:
        seq += 1
        producer.emit(
            Event(
                type=EventType.SNAPSHOT,
                model=MODEL,
                gateway="bench",
                ts_ms=int(time.time() * 1000),
                queue_depth=gw["queue"],
                in_flight=0,
                seq=seq,
                interval_ms=250,
            )
        )
        await asyncio.sleep(0.25)


def _row(level: Level) -> str:
    return (
        f"{level.target_rate:>10,.0f} {level.achieved_rate:>10,.0f} {level.consumed_rate:>10,.0f} "
        f"{len(level.latencies_ms):>6} {level.pct(0.5):>8.1f} {level.pct(0.99):>8.1f} "
        f"{max(level.latencies_ms, default=float('nan')):>8.1f} {level.timeouts:>4} "
        f"{level.inside_ms[0]:>7.1f} {level.inside_ms[1]:>7.1f} {level.controller_cpu:>7.0%} "
        f"{level.rss_mb:>7.0f} {level.bench_lag_ms[1]:>7.1f} {level.server_lag_max_ms:>7.1f}"
    )


async def _run(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    """The bench, its Redis keys deleted whatever happens (and what is left reported)."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    admin = connect(redis_url, timeout=30.0)
    swept = await sweep_stale(admin, like="bench-")
    result: dict[str, Any] = {}
    try:
        with cancel_on_signals():
            result = await _run_levels(args, redis_url, prefix)
    finally:
        left = (-1, -1)
        with contextlib.suppress(Exception):
            await delete_prefix(admin, prefix)
            left = await leftover(admin, prefix)
        print(f"left behind in Redis: {left[0]} keys, {left[1]} bytes", flush=True)
        await close(admin)
    return {**result, "redis_keys_left": left[0], "stale_keys_swept": swept}


async def _run_levels(args: argparse.Namespace, redis_url: str, prefix: str) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="surgescale-bench-"))
    kubeconfig = tmp / "kubeconfig"
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sim.benches.controller",
        "--apiserver",
        str(kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        cwd=str(REPO),
    )
    assert server.stdout is not None
    watcher = Watcher()
    following = asyncio.create_task(watcher.follow(server.stdout))
    url = await asyncio.wait_for(watcher.url, 60.0)
    await _apply(url)
    bg_models = max(args.models - 1, 0)
    await _apply_background(url, bg_models)
    http_port = free_port()
    profile = ["-m", "cProfile", "-o", args.profile_controller] if args.profile_controller else []
    ctl = await asyncio.create_subprocess_exec(
        sys.executable,
        *profile,
        "-m",
        "controller",
        "--kubeconfig",
        str(kubeconfig),
        "--redis-url",
        redis_url,
        "--namespace",
        NS,
        "--stream-prefix",
        prefix,
        "--http-host",
        "127.0.0.1",
        "--http-port",
        str(http_port),
        "--identity",
        "bench-controller",
        "--log-level",
        "WARNING",
        *args.controller_arg,
        cwd=str(REPO),
    )
    redis = connect(redis_url)
    producer = EventProducer(redis, keys=StreamKeys(prefix))
    await producer.start()
    gw = {"queue": 0}
    snaps = asyncio.create_task(_snapshots(producer, gw))
    lag = LoopLag()
    lagging = asyncio.create_task(lag.run())
    levels: list[Level] = []
    try:
        # Warm-up: wait for leadership and the first wake, not measured.
        await asyncio.sleep(1.0)
        await _measure_level(
            rate=0,
            trials=3,
            redis_url=redis_url,
            prefix=prefix,
            producer=producer,
            watcher=watcher,
            http_port=http_port,
            controller_pid=ctl.pid,
            gw=gw,
            bg_models=bg_models,
            lag=lag,
        )
        print(
            f"controller reaction latency, {args.models} models, {args.trials} trials per level, "
            f"{os.cpu_count()} CPUs; "
            "t0 = emit of the enqueue, t1 = the API server stores the PATCHed replicas"
        )
        print(
            f"{'target ev/s':>10} {'achieved':>10} {'consumed':>10} {'trials':>6} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'max ms':>8} {'lost':>4} {'ctl p50':>7} {'ctl p99':>7} {'ctl cpu':>7} "
            f"{'rss MB':>7} {'lag ms':>7} {'api lag':>7}"
        )

        async def level(rate: float) -> Level:
            lv = await _measure_level(
                rate=rate,
                trials=args.trials,
                redis_url=redis_url,
                prefix=prefix,
                producer=producer,
                watcher=watcher,
                http_port=http_port,
                controller_pid=ctl.pid,
                gw=gw,
                bg_models=bg_models,
                lag=lag,
            )
            levels.append(lv)
            print(_row(lv), flush=True)
            return lv

        for rate in args.rates:
            await level(rate)

        # Search for the highest rate with p99 <= 100 ms: upwards while it holds, then
        # geometric bisection between the best passing and the lowest failing rate.
        def passes(lv: Level) -> bool:
            return lv.pct(0.99) <= 100.0 and lv.timeouts == 0

        best = max((lv.achieved_rate for lv in levels if passes(lv)), default=0.0)
        failing = [lv.target_rate for lv in levels if not passes(lv)]
        lo = max((lv.target_rate for lv in levels if passes(lv)), default=0.0)
        hi = min((r for r in failing if r > lo), default=None)
        limited_by_generator = False
        steps = 0
        while not args.no_search and steps < args.search_steps:
            steps += 1
            if hi is None:
                rate = max(lo * 1.5, 1_000.0)
                if rate > args.search_max:
                    break
            else:
                rate = round((lo * hi) ** 0.5, -3) if lo > 0 else hi / 4
                if hi - lo <= 0.15 * hi or rate in (lo, hi):
                    break
            lv = await level(rate)
            if passes(lv):
                best = max(best, lv.achieved_rate)
                lo = rate
                if lv.achieved_rate < 0.9 * rate:
                    limited_by_generator = True
                    break
            else:
                hi = rate
        at10k = next((lv for lv in levels if lv.target_rate == 10_000), levels[0])
        decided = _models_decided(await _scrape(http_port))
        return {
            "models": args.models,
            "models_decided": len(decided),
            "rss_mb": round(max(lv.rss_mb for lv in levels), 1),
            "reaction_p50_ms": round(at10k.pct(0.5), 2),
            "reaction_p99_ms": round(at10k.pct(0.99), 2),
            "max_events_per_s": round(best),
            "achieved_events_per_s": round(at10k.achieved_rate),
            "consumed_events_per_s": round(at10k.consumed_rate),
            "controller_cpu": round(at10k.controller_cpu, 3),
            "bench_loop_lag_max_ms": round(at10k.bench_lag_ms[1], 1),
            "apiserver_loop_lag_max_ms": round(at10k.server_lag_max_ms, 1),
            "max_limited_by_generator": limited_by_generator,
            "levels": [
                {
                    "target": lv.target_rate,
                    "achieved": round(lv.achieved_rate),
                    "consumed": round(lv.consumed_rate),
                    "p50_ms": round(lv.pct(0.5), 2),
                    "p99_ms": round(lv.pct(0.99), 2),
                    "trials": len(lv.latencies_ms),
                    "lost": lv.timeouts,
                    "controller_cpu": round(lv.controller_cpu, 3),
                    "rss_mb": round(lv.rss_mb, 1),
                    "slowest_ms": [round(x, 1) for x in sorted(lv.latencies_ms)[-3:]],
                    "bench_loop_lag_p99_ms": round(lv.bench_lag_ms[0], 1),
                    "bench_loop_lag_max_ms": round(lv.bench_lag_ms[1], 1),
                    "apiserver_loop_lag_max_ms": round(lv.server_lag_max_ms, 1),
                }
                for lv in levels
            ],
        }
    finally:
        snaps.cancel()
        lagging.cancel()
        ctl.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(ctl.wait(), 10)
        except TimeoutError:
            ctl.kill()
        await producer.close()
        await close(redis)
        server.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(server.wait(), 10)
        except TimeoutError:
            server.kill()
        following.cancel()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="surgescale bench controller", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--trials", type=int, default=60, help="trials per load level (>= 50 for p99)"
    )
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[0, 10_000, 50_000],
        help="background event rates to measure (events/s)",
    )
    parser.add_argument(
        "--models",
        type=int,
        default=5,
        help="InferenceScalers the controller runs: the measured one and N-1 background models "
        "the load is spread over",
    )
    parser.add_argument(
        "--profile-controller",
        metavar="FILE",
        default=None,
        help="run the controller under cProfile and write its profile to FILE",
    )
    parser.add_argument(
        "--controller-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra argument for the controller (repeat it: --controller-arg=--max-evals-per-s "
        "--controller-arg=250)",
    )
    parser.add_argument("--search-max", type=float, default=400_000, help="stop the search here")
    parser.add_argument("--no-search", action="store_true", help="only the given rates")
    parser.add_argument(
        "--search-steps", type=int, default=4, help="extra levels to find the highest rate"
    )
    parser.add_argument(
        "--redis-url", default=None, help="Redis (default: REDIS_URL, local, or a private one)"
    )
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--apiserver", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.apiserver is not None:
        asyncio.run(_apiserver(args.apiserver))
        return 0
    if args.loadgen:
        asyncio.run(_loadgen(args.redis_url, args.prefix, args.rate, max(args.models - 1, 1)))
        return 0
    with ensure_redis(args.redis_url) as url:
        try:
            result = asyncio.run(_run(args, url))
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("interrupted; Redis keys cleaned up", flush=True)
            return 130
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
