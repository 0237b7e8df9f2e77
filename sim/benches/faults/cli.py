"""`surgescale bench faults`: run the fault groups, print a table and, last, one JSON line.

Each group runs with its own stack and a time bound (`--fault-timeout-s`); a group that fails to
start or overruns yields its figures as missing (`n/a`, counted as missed targets) and a note, and
the next group runs. The exit code is 0 whatever the figures say: this is a benchmark, and the
JSON line's `targets_met` is the verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from sim.benches.faults.context import FaultContext
from sim.benches.faults.report import Figure, info, summary, table

GROUPS: tuple[str, ...] = (
    "redis-outage",
    "duplicates",
    "rediscovery",
    "failover",
    "retry-after",
    "fuzz",
    "flood",
    "scale-down",
    "redis-flood",
)


def module_of(group: str) -> ModuleType:
    return importlib.import_module(f"sim.benches.faults.{group.replace('-', '_')}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="surgescale bench faults",
        description="Faults and hostile input against real processes on loopback (docs/faults.md).",
    )
    p.add_argument(
        "--only",
        default="",
        help=f"comma-separated groups to run (default all): {','.join(GROUPS)}",
    )
    p.add_argument("--quick", action="store_true", help="shorter faults, smaller floods")
    p.add_argument(
        "--fault-timeout-s",
        type=float,
        default=None,
        help="bound on one group, set-up included (default 120 quick, 300 full)",
    )
    p.add_argument("--work-dir", type=Path, default=None, help="logs of the children (kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-level", default="WARNING")
    return p


async def _run_group(group: str, ctx: FaultContext, timeout_s: float) -> list[Figure]:
    module = module_of(group)
    started = time.monotonic()
    try:
        figures: list[Figure] = await asyncio.wait_for(module.run(ctx), timeout_s)
    except Exception as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        print(f"[{group}] did not complete: {reason}", file=sys.stderr, flush=True)
        figures = list(module.TEMPLATE)
    took = time.monotonic() - started
    print(f"[{group}] done in {took:.0f}s", file=sys.stderr, flush=True)
    return [*figures, info(f"{group.replace('-', '_')}_run_s", round(took, 1), "s", fault=group)]


async def _main(args: argparse.Namespace, groups: list[str], work: Path) -> list[Figure]:
    ctx = FaultContext(quick=args.quick, work=work, seed=args.seed)
    timeout_s = args.fault_timeout_s or (120.0 if args.quick else 300.0)
    figures: list[Figure] = []
    for group in groups:
        print(f"[{group}] starting", file=sys.stderr, flush=True)
        figures.extend(await _run_group(group, ctx, timeout_s))
    return figures


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    groups = [g.strip() for g in args.only.split(",") if g.strip()] or list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        print(f"unknown fault group(s): {', '.join(unknown)}; known: {', '.join(GROUPS)}")
        return 2
    keep = args.work_dir is not None
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="surgescale-faults-"))
    started = time.monotonic()
    try:
        figures = asyncio.run(_main(args, groups, work))
    except KeyboardInterrupt:  # the stacks were torn down by their finally blocks
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"surgescale bench faults ({'quick' if args.quick else 'full'}), {os.cpu_count()} CPUs, "
        f"groups: {', '.join(groups)}"
    )
    print(table(figures))
    result = summary(
        figures,
        extra={
            "mode": "quick" if args.quick else "full",
            "groups": groups,
            "wall_s": round(time.monotonic() - started, 1),
        },
    )
    print(json.dumps(result), flush=True)
    return 0
