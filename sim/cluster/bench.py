"""`surgescale bench cluster`: watch fan-out latency and whether lifecycles keep real time.

1. Watch fan-out: the API server runs in its own process (`surgescale sim cluster`); this
   process opens `--watchers` watch streams on ConfigMaps and PATCHes one ConfigMap `--writes`
   times; each event's latency is its arrival at a watcher minus the moment its write was sent.
2. Real time at scale: for each size (up to `--max-pods`, 10 one-GPU pods per node, so 1,000
   nodes at 10,000 pods) an in-process cluster at speed 1 is first populated (a Deployment of
   that many pods on a NodePool of that many nodes), then idles 3 s, then takes a timed
   scale-up of `--step-fraction` more pods onto a static NodePool scaled to fit them: its
   schedule is node boot + container start. A size keeps real time when the scale-up finishes
   within max(1 s, 10%) of schedule and the event loop's timer lag p99 stays under 100 ms.
Prints a table, and as its last line one JSON object with `watch_latency_p99_ms` and
`max_pods_realtime` (plus the details).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from surgescale.stats import percentile

from .cluster import ClusterOptions, NodePoolConfig, start_cluster

PODS_PER_NODE = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pct(values: list[float], q: float) -> float:
    """`surgescale.stats.percentile` (nearest rank, q in 0..100); NaN for no values."""
    value = percentile(values, q)
    return math.nan if value is None else value


async def watch_fanout(*, watchers: int, writes: int, interval_s: float) -> dict[str, Any]:
    port = _free_port()
    kubeconfig = Path(tempfile.mkdtemp()) / "kubeconfig"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "surgescale",
        "sim",
        "cluster",
        "--port",
        str(port),
        "--kubeconfig",
        str(kubeconfig),
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    sent: dict[int, float] = {}
    latencies: list[float] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{base}/healthz") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the simulated cluster did not come up")
            url = f"{base}/api/v1/namespaces/default/configmaps"
            async with http.post(url, json={"metadata": {"name": "bench"}, "data": {}}) as r:
                rv = (await r.json())["metadata"]["resourceVersion"]
            done = asyncio.Event()
            counts = [0] * watchers

            async def watcher(n: int) -> None:
                params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "600"}
                async with http.get(url, params=params) as resp:
                    async for line in resp.content:
                        now = time.perf_counter()
                        event = orjson.loads(line)
                        seq = int((event["object"].get("data") or {}).get("seq", -1))
                        if seq in sent:
                            latencies.append(now - sent[seq])
                            counts[n] += 1
                            if counts[n] == writes:
                                return
                        if done.is_set():
                            return

            tasks = [asyncio.create_task(watcher(n)) for n in range(watchers)]
            await asyncio.sleep(0.3)
            headers = {"Content-Type": "application/merge-patch+json"}
            for seq in range(writes):
                body = orjson.dumps({"data": {"seq": str(seq)}})
                sent[seq] = time.perf_counter()
                async with http.patch(f"{url}/bench", data=body, headers=headers) as r:
                    await r.read()
                await asyncio.sleep(interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks), 20)
            done.set()
            for t in tasks:
                t.cancel()
    finally:
        proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)
    ms = [x * 1000 for x in latencies]
    return {
        "watchers": watchers,
        "writes": writes,
        "events": len(ms),
        "expected_events": watchers * writes,
        "p50_ms": _pct(ms, 50),
        "p99_ms": _pct(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
    }


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "x",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ]
                },
            },
        },
    }


class _LagMonitor:
    """Samples how late a 50 ms timer fires: the event loop's responsiveness."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.05)
            self.samples.append((loop.time() - t - 0.05) * 1000)

    def start(self) -> None:
        self.samples = []
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> list[float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.samples


async def _wait_ready(cluster: Any, app: str, count: int, timeout: float) -> int:
    """Wait for the Deployment's readyReplicas (kept by its controller; no pod scans here)."""
    deploy_rt = cluster.resource("apps", "v1", "deployments")
    deadline = time.perf_counter() + timeout
    ready = 0
    while time.perf_counter() < deadline:
        deploy = cluster.store.get(deploy_rt, "default", app)
        ready = int((deploy.get("status") or {}).get("readyReplicas", 0))
        if ready >= count:
            break
        await asyncio.sleep(0.02)
    return ready


async def realtime(
    pods: int, *, boot_s: float, start_s: float, step: int, idle_s: float = 3.0
) -> dict[str, Any]:
    """Populate `pods` pods on pods/10 nodes, then time a scale-up against its schedule."""
    nodes = math.ceil(pods / PODS_PER_NODE)
    step_nodes = math.ceil(step / PODS_PER_NODE)
    cluster = await start_cluster(
        ClusterOptions(
            speed=1.0,
            full_gc_every_s=600.0,
            container_start_s=start_s,
            default_gpus_per_node=PODS_PER_NODE,
            nodepools=(
                NodePoolConfig(
                    name="base", gpus_per_node=PODS_PER_NODE, boot_seconds=0, replicas=nodes
                ),
                NodePoolConfig(
                    name="gpu", gpus_per_node=PODS_PER_NODE, boot_seconds=boot_s, replicas=0
                ),
            ),
        )
    )
    deploy_rt = cluster.resource("apps", "v1", "deployments")
    monitor = _LagMonitor()
    try:
        t0 = time.perf_counter()
        cluster.store.create(deploy_rt, _deployment("bulk", pods))
        populated = await _wait_ready(cluster, "bulk", pods, timeout=600)
        populate_s = time.perf_counter() - t0
        monitor.start()
        cpu0 = time.process_time()
        await asyncio.sleep(idle_s)
        idle_cpu = (time.process_time() - cpu0) / idle_s
        idle_lag = await monitor.stop()
        monitor.start()
        t1 = time.perf_counter()
        cpu1 = time.process_time()
        pool_rt = cluster.resource("karpenter.sh", "v1", "nodepools")
        pool = cluster.store.get(pool_rt, "", "gpu")
        pool = {**pool, "spec": {**pool["spec"], "replicas": step_nodes}}
        cluster.store.update(pool_rt, pool, check_rv=False)
        cluster.store.create(deploy_rt, _deployment("step", step))
        expected = boot_s + start_s
        ready = await _wait_ready(cluster, "step", step, timeout=expected + 120)
        elapsed = time.perf_counter() - t1
        step_cpu = time.process_time() - cpu1
        step_lag = await monitor.stop()
    finally:
        await monitor.stop()
        await cluster.stop(timeout=60)
    late = elapsed - expected
    lag_p99 = max(_pct(idle_lag, 99), _pct(step_lag, 99))
    keeps = (
        populated >= pods and ready >= step and late <= max(1.0, 0.1 * expected) and (lag_p99 < 100)
    )
    return {
        "pods": pods,
        "nodes": nodes,
        "populate_s": populate_s,
        "step_pods": step,
        "step_nodes": step_nodes,
        "expected_s": expected,
        "elapsed_s": elapsed,
        "late_s": late,
        "idle_lag_p99_ms": _pct(idle_lag, 99),
        "step_lag_p99_ms": _pct(step_lag, 99),
        "lag_max_ms": max(idle_lag + step_lag, default=math.nan),
        "idle_cpu_fraction": idle_cpu,
        "step_cpu_s": step_cpu,
        "realtime": keeps,
    }


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    fan = await watch_fanout(
        watchers=args.watchers, writes=args.writes, interval_s=args.interval_ms / 1000
    )
    print(
        f"watch fan-out: {fan['watchers']} watchers x {fan['writes']} writes -> "
        f"{fan['events']}/{fan['expected_events']} events; latency p50 {fan['p50_ms']:.2f} ms, "
        f"p99 {fan['p99_ms']:.2f} ms, max {fan['max_ms']:.2f} ms",
        flush=True,
    )
    sizes = [s for s in (1_000, 2_500, 5_000, 10_000) if s <= args.max_pods]
    if args.max_pods not in sizes:
        sizes.append(args.max_pods)
    rows = []
    print(
        f"{'pods':>7} {'nodes':>6} {'populate s':>10} {'step':>5} {'schedule s':>10} "
        f"{'took s':>7} {'late s':>7} {'idle lag p99':>12} {'step lag p99':>12} "
        f"{'lag max':>8} {'idle cpu':>8} {'step cpu':>8} realtime",
        flush=True,
    )
    for size in sizes:
        row = await realtime(
            size,
            boot_s=args.boot_s,
            start_s=args.start_s,
            step=max(PODS_PER_NODE, int(size * args.step_fraction)),
            idle_s=args.idle_s,
        )
        rows.append(row)
        print(
            f"{row['pods']:>7} {row['nodes']:>6} {row['populate_s']:>10.1f} "
            f"{row['step_pods']:>5} {row['expected_s']:>10.1f} {row['elapsed_s']:>7.2f} "
            f"{row['late_s']:>7.2f} {row['idle_lag_p99_ms']:>9.1f} ms "
            f"{row['step_lag_p99_ms']:>9.1f} ms {row['lag_max_ms']:>5.0f} ms "
            f"{row['idle_cpu_fraction']:>7.0%} {row['step_cpu_s']:>7.2f}s "
            f"{'yes' if row['realtime'] else 'NO'}",
            flush=True,
        )
    print(
        f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; timer lag "
        "includes time the OS gives to other processes)",
        flush=True,
    )
    best = max((r["pods"] for r in rows if r["realtime"]), default=0)
    return {
        "watch_latency_p99_ms": round(fan["p99_ms"], 3),
        "watch_latency_p50_ms": round(fan["p50_ms"], 3),
        "watch_events": fan["events"],
        "watchers": fan["watchers"],
        "max_pods_realtime": best,
        "scale": [
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows
        ],
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="surgescale bench cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--watchers", type=int, default=10)
    p.add_argument("--writes", type=int, default=1000)
    p.add_argument("--interval-ms", type=float, default=2.0, help="pause between writes")
    p.add_argument("--max-pods", type=int, default=10_000)
    p.add_argument("--boot-s", type=float, default=5.0, help="node boot time (s, speed 1)")
    p.add_argument("--start-s", type=float, default=2.0, help="container start time (s)")
    p.add_argument("--idle-s", type=float, default=3.0, help="idle time measured at each size")
    p.add_argument(
        "--step-fraction",
        type=float,
        default=0.02,
        help="size of the timed scale-up, as a fraction of the cluster's pods",
    )
    args = p.parse_args(argv)
    result = asyncio.run(_run(args))
    print(json.dumps(result))
    return 0 if result["watch_events"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
