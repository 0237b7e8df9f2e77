"""`surgescale bench cluster`: watch fan-out latency and whether lifecycles keep real time.

1. Watch fan-out: the API server runs in its own process (`surgescale sim cluster`); this
   process opens `--watchers` watch streams on ConfigMaps and PATCHes one ConfigMap `--writes`
   times; each event's latency is its arrival at a watcher minus the moment its write was sent.
2. Real time at scale: for each size (up to `--max-pods`, 10 pods per node, so 1,000 nodes at
   10,000 pods), an in-process cluster at speed 1 gets a static NodePool and a Deployment of
   1-GPU pods; it measures how late the last pod turns Ready against the simulated schedule
   (node boot + container start) and the event loop's timer lag while it happens. A size keeps
   real time when it finishes within max(1 s, 10%) of schedule and the loop lag p99 is < 100 ms.
Prints a table, and as its last line one JSON object with `watch_latency_p99_ms` and
`max_pods_realtime` (plus the details).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from .cluster import ClusterOptions, NodePoolConfig, start_cluster
from .workloads import pod_is_ready

PODS_PER_NODE = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


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
        "p50_ms": _pct(ms, 0.5),
        "p99_ms": _pct(ms, 0.99),
        "max_ms": max(ms) if ms else math.nan,
    }


async def realtime(pods: int, *, boot_s: float, start_s: float) -> dict[str, Any]:
    nodes = math.ceil(pods / PODS_PER_NODE)
    cluster = await start_cluster(
        ClusterOptions(
            speed=1.0,
            container_start_s=start_s,
            default_gpus_per_node=PODS_PER_NODE,
            nodepools=(
                NodePoolConfig(
                    name="gpu", gpus_per_node=PODS_PER_NODE, boot_seconds=boot_s, replicas=nodes
                ),
            ),
        )
    )
    lags: list[float] = []
    stop = asyncio.Event()

    async def monitor() -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.05)
            lags.append(loop.time() - t - 0.05)

    mon = asyncio.create_task(monitor())
    deploy_rt = cluster.resource("apps", "v1", "deployments")
    pod_rt = cluster.resource("", "v1", "pods")
    t0 = time.perf_counter()
    cluster.store.create(
        deploy_rt,
        {
            "metadata": {"name": "bench", "namespace": "default"},
            "spec": {
                "replicas": pods,
                "selector": {"matchLabels": {"app": "bench"}},
                "template": {
                    "metadata": {"labels": {"app": "bench"}},
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
        },
    )
    expected = boot_s + start_s
    deadline = t0 + expected + 120
    ready = 0
    while time.perf_counter() < deadline:
        ready = sum(1 for p in cluster.store.items(pod_rt) if pod_is_ready(p))
        if ready >= pods:
            break
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - t0
    stop.set()
    await mon
    await cluster.stop(timeout=30)
    lag_ms = [x * 1000 for x in lags]
    late = elapsed - expected
    keeps = ready >= pods and late <= max(1.0, 0.1 * expected) and _pct(lag_ms, 0.99) < 100
    return {
        "pods": pods,
        "nodes": nodes,
        "ready": ready,
        "expected_s": expected,
        "elapsed_s": elapsed,
        "late_s": late,
        "loop_lag_p99_ms": _pct(lag_ms, 0.99),
        "loop_lag_max_ms": max(lag_ms) if lag_ms else math.nan,
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
        f"{'pods':>7} {'nodes':>6} {'ready':>7} {'schedule s':>10} {'took s':>8} "
        f"{'late s':>7} {'lag p99 ms':>10} {'lag max ms':>10} realtime",
        flush=True,
    )
    for size in sizes:
        row = await realtime(size, boot_s=args.boot_s, start_s=args.start_s)
        rows.append(row)
        print(
            f"{row['pods']:>7} {row['nodes']:>6} {row['ready']:>7} {row['expected_s']:>10.1f} "
            f"{row['elapsed_s']:>8.2f} {row['late_s']:>7.2f} {row['loop_lag_p99_ms']:>10.1f} "
            f"{row['loop_lag_max_ms']:>10.1f} {'yes' if row['realtime'] else 'NO'}",
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
    args = p.parse_args(argv)
    result = asyncio.run(_run(args))
    print(json.dumps(result))
    return 0 if result["watch_events"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
