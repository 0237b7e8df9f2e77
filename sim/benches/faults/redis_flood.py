"""Fault `redis-flood`: events at the highest rate a producer reaches, against Redis's memory bound.

Injection: a flooder process (`sim.benches.faults.flooder`, the gateway's own producer factory)
writes full request lifecycles over two models (two streams) as fast as it can for 20 s (quick) or 60 s
(full), while the gateway serves 2 streaming requests/s and writes its own events to the same
Redis. The private Redis runs with the production manifest's `maxmemory` and `noeviction`
(read from manifests/base/redis/statefulset.yaml), so it refuses writes rather than grow past it.

Measured from Redis itself (`INFO memory`, `INFO errorstats` every 0.5 s):
`redis_peak_mb_under_flood` — the highest `used_memory` (target: at most
`redis_memory_bound_mb`, and it must have stopped growing: a figure still rising in the last
quarter of the flood is marked not reached); `redis_flood_oom_refusals` — writes Redis refused
with OOM (target 0: trimming, not refusal, must hold the bound); `redis_flood_failed_requests` —
steady requests that did not stream to `[DONE]` during the flood (target 0).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import yaml

from sim.benches.faults.context import FaultContext
from sim.benches.faults.load import Load
from sim.benches.faults.report import Figure, at_most, info, measured
from sim.benches.faults.stack import MODEL, StackOptions, running_stack
from sim.demo.procs import spawn
from surgescale.events import close, connect

NAME = "redis-flood"
TEMPLATE = (
    at_most("redis_peak_mb_under_flood", None, 400.0, "MB", fault=NAME),
    at_most("redis_flood_oom_refusals", None, 0, fault=NAME),
    at_most("redis_flood_failed_requests", None, 0, fault=NAME),
)
MANIFEST = Path(__file__).resolve().parents[3] / "manifests/base/redis/statefulset.yaml"
DEFAULT_BOUND_MB = 400


def manifest_maxmemory_mb(path: Path = MANIFEST) -> int:
    """The Redis `--maxmemory` of the production manifest, in MB (400 if it cannot be read)."""
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError):
        return DEFAULT_BOUND_MB
    for doc in docs:
        spec = ((doc or {}).get("spec") or {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []):
            args = [str(a) for a in container.get("args", []) + container.get("command", [])]
            if "--maxmemory" in args:
                value = args[args.index("--maxmemory") + 1].lower()
                units = {"gb": 1024, "mb": 1, "kb": 1 / 1024}
                for unit, factor in units.items():
                    if value.endswith(unit):
                        return int(float(value[: -len(unit)]) * factor)
                return int(int(value) / (1024 * 1024))
    return DEFAULT_BOUND_MB


async def _sample(url: str) -> tuple[float, int]:
    """(used_memory MB, OOM errors so far) from Redis, or (nan, -1) when it does not answer."""
    client = connect(url, timeout=2.0, connect_timeout=1.0)
    try:
        mem = await client.info("memory")
        errs = await client.info("errorstats")
        oom = errs.get("errorstat_OOM", {})
        count = int(oom.get("count", 0)) if isinstance(oom, dict) else 0
        return float(mem["used_memory"]) / (1024 * 1024), count
    except Exception:
        return float("nan"), -1
    finally:
        await close(client)


async def run(ctx: FaultContext) -> list[Figure]:
    bound = manifest_maxmemory_mb()
    seconds = ctx.scaled(20.0, 60.0)
    options = StackOptions(controllers=0, redis_maxmemory_mb=bound)
    samples: list[tuple[float, float, int]] = []
    async with (
        running_stack(options, ctx.work / NAME) as st,
        Load(url=st.gateway_url, model=MODEL, api_key=st.api_key, max_tokens=32) as load,
    ):
        load.steady(2.0)
        await asyncio.sleep(1.0)
        argv = [
            sys.executable,
            "-m", "sim.benches.faults.flooder",
            "--redis-url", st.redis.url,
            "--prefix", st.prefix,
            "--seconds", f"{seconds + 5:g}",
            "--model", MODEL, "--model", "flood-b",
        ]  # fmt: skip
        flooder = await spawn("flooder", argv, log_dir=st.work)
        st.children.add(flooder)
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < seconds:
                mb, oom = await _sample(st.redis.url)
                samples.append((time.monotonic() - t0, mb, oom))
                await asyncio.sleep(0.5)
        finally:
            await flooder.stop(grace_s=5.0)
        t_end = time.monotonic()
        load.stop_steady()
        await load.drain(20.0)
        failed = sum(1 for o in load.between(t0, t_end) if not o.ok)
        stats: dict[str, int] = {}
        for line in reversed(flooder.log_path.read_text(errors="replace").splitlines()):
            if line.startswith("{"):
                stats = json.loads(line)
                break
    good = [(t, mb, oom) for t, mb, oom in samples if mb == mb]
    peak = max((mb for _, mb, _ in good), default=float("nan"))
    oom_total = max((oom for _, _, oom in good), default=0)
    tail = [mb for t, mb, _ in good if t >= 0.75 * seconds]
    at_three_quarters = next((mb for t, mb, _ in good if t >= 0.75 * seconds), peak)
    growing = bool(tail) and max(tail) - at_three_quarters > 0.05 * bound
    censored = (TEMPLATE[0].key,) if growing and peak <= bound else ()
    return [
        *measured(
            [*(f if f.key != TEMPLATE[0].key else _bounded(f, bound) for f in TEMPLATE)],
            {
                "redis_peak_mb_under_flood": round(peak, 1),
                "redis_flood_oom_refusals": oom_total,
                "redis_flood_failed_requests": failed,
            },
            censored=censored,
        ),
        info("redis_memory_bound_mb", bound, "MB", fault=NAME),
        info("redis_flood_still_growing", 1 if growing else 0, fault=NAME),
        info("redis_flood_events_written", stats.get("flushed"), fault=NAME),
        info("redis_flood_events_dropped", stats.get("dropped"), fault=NAME),
        info("redis_flood_s", seconds, "s", fault=NAME),
    ]


def _bounded(f: Figure, bound: int) -> Figure:
    return at_most(f.key, None, float(bound), f.unit, fault=NAME)
