"""Shared by `surgescale demo` and `surgescale bench e2e`: options -> config -> runs -> report.

`add_options(parser)` declares the flags both commands take; `build_config(args)` turns them into
a `DemoConfig` (the default burst scenario, or a trace replay); `run_all(config, arms)` runs the
arms one after the other inside a Redis that is found or started (`ensure_redis`), and
`finish(records, out)` writes the report and prints the summary table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sim.demo import objects
from sim.demo.record import RunRecord
from sim.demo.scenario import (
    Scenario,
    arrivals,
    default_sizes_path,
    from_trace,
    load_sizes,
)
from sim.demo.stack import Arm, DemoConfig, run_arm
from sim.demo.summary import summarize
from sim.load.trace import TraceError, read_trace
from sim.localredis.server import ensure_redis

log = logging.getLogger(__name__)

DEFAULT_SPEED = 10.0


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--speed",
        type=float,
        default=DEFAULT_SPEED,
        help="divide cold starts, node boots and every control-loop period by this "
        f"(default {DEFAULT_SPEED:g})",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="length of the load in seconds (default scenario: 115; a trace: 120)",
    )
    p.add_argument("--trace", type=Path, default=None, help="replay this Azure CSV or JSONL trace")
    p.add_argument(
        "--redis-url",
        default=None,
        help="Redis to use (default: REDIS_URL, :6379, or a private one)",
    )
    p.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="use this API server instead of starting the simulated cluster",
    )
    p.add_argument("--out", type=Path, default=None, help="report directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the request schedule")
    p.add_argument("--burst-rps", type=float, default=None, help="requests/s during the burst")
    p.add_argument("--base-rps", type=float, default=None, help="requests/s when quiet")
    p.add_argument(
        "--late-max-wait",
        type=float,
        default=30.0,
        metavar="S",
        help="the gateways' bound on a late request's wait (default 30)",
    )


def build_config(args: argparse.Namespace, *, live: bool) -> DemoConfig:
    if args.speed <= 0:
        raise SystemExit("--speed must be > 0")
    if not args.late_max_wait >= 0:
        raise SystemExit("--late-max-wait must be >= 0")
    out = args.out or Path(f"surgescale-demo-{dt.datetime.now():%Y%m%d-%H%M%S}")
    setup = objects.ModelSetup()
    if args.trace is not None:
        duration = args.duration or 120.0
        try:
            trace = read_trace(args.trace)
        except (OSError, TraceError) as exc:
            raise SystemExit(f"--trace {args.trace}: {exc}") from exc
        schedule = from_trace(trace, duration_s=duration)
        if not schedule:
            raise SystemExit(f"--trace {args.trace}: no requests in the first {duration:g} s")
        return DemoConfig(
            setup=setup,
            speed=args.speed,
            schedule=tuple(schedule),
            duration_s=duration,
            phases=((0.0, "trace"),),
            redis_url="",
            kubeconfig=args.kubeconfig,
            work_dir=out,
            live=live,
            seed=args.seed,
            late_max_wait_s=args.late_max_wait,
        )
    scenario = Scenario(seed=args.seed)
    if args.base_rps is not None:
        scenario = replace(scenario, base_rps=args.base_rps)
    if args.burst_rps is not None:
        scenario = replace(scenario, burst_rps=args.burst_rps)
    if args.duration is not None:
        scenario = scenario.scaled_duration(args.duration / scenario.duration_s)
    sizes_path = default_sizes_path()
    sizes = load_sizes(sizes_path) if sizes_path.exists() else []
    return DemoConfig(
        setup=setup,
        speed=args.speed,
        schedule=tuple(arrivals(scenario, sizes)),
        duration_s=scenario.duration_s,
        load_step_at=scenario.load_step_at,
        burst_end_at=scenario.burst_end_at,
        phases=(
            (0.0, "quiet"),
            (scenario.load_step_at, "burst"),
            (scenario.burst_end_at, "decay"),
            (scenario.burst_end_at + scenario.decay_s, "quiet"),
        ),
        redis_url="",
        kubeconfig=args.kubeconfig,
        work_dir=out,
        live=live,
        seed=args.seed,
        late_max_wait_s=args.late_max_wait,
    )


async def run_all(
    config: DemoConfig,
    arms: Sequence[Arm],
    *,
    redis_url: str | None,
    console: Console,
) -> list[RunRecord]:
    """Run each arm in turn (a fresh cluster, gateway and key prefix each time)."""
    records: list[RunRecord] = []
    with ensure_redis(redis_url) as url:
        config = replace(config, redis_url=url)
        for arm in arms:
            console.print(f"[bold]▶ {arm.label}[/bold]: starting the loop on loopback ...")
            record = await run_arm(config, arm, console=console)
            records.append(record)
            s = summarize(record)
            console.print(
                f"  {arm.label}: {s.requests} requests, {s.failed} failed, "
                f"SLO attainment {100 * s.slo_attainment:.1f} %"
            )
    return records


def summary_table(records: Sequence[RunRecord]) -> Table:
    from sim.demo.report import summary_rows  # matplotlib loads only when a report is drawn

    summaries = [summarize(r) for r in records]
    table = Table(title="summary")
    table.add_column("")
    for s in summaries:
        table.add_column(s.label, justify="right")
    for label, cells in summary_rows(summaries):
        table.add_row(label, *cells)
    return table


def finish(records: Sequence[RunRecord], out: Path, console: Console) -> Path:
    from sim.demo.report import write_report

    page = write_report(records, out)
    console.print(summary_table(records))
    return page
