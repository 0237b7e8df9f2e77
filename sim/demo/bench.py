"""`surgescale bench e2e`: the default burst under our controller and under the KEDA-style loop.

Runs the demo scenario twice in one go (`sim.demo.run`, no live view): once with surgescale's
controller (its gateway ordering the queue by deadline), once with the KEDA + Prometheus + HPA
loop (its periods divided by the same speed factor), each on a fresh simulated cluster; with
`--compare fifo` a third time, ours with the gateway's FIFO dispatch, to show the gain of the
deadline order alone. For each it measures, from the load step: the scale
PATCH (first replica increase on the API server), the first new pod Ready, the queue drained, and
the TTFT p99 of the requests sent during the burst. Prints a table, writes the report, and ends
with one JSON line: `ours_patch_s`, `baseline_patch_s`, `ours_pod_ready_s`,
`baseline_pod_ready_s`, `ours_node_ready_s`, `baseline_node_ready_s`, `ours_drain_s`,
`baseline_drain_s`, `ours_ttft_p99_s`, `baseline_ttft_p99_s`, the SLO attainments (`Slo`),
`ours_node_minutes`, `baseline_node_minutes`, `ours_gpu_minutes`, `baseline_gpu_minutes`,
`ours_failed`, `baseline_failed`, with `--compare fifo` `ours_fifo_slo_attainment` (and its
`ours_fifo_*` minutes and failures), `speed`, `report`. Times are wall seconds of the compressed run; multiply
the periods-bound ones by `speed` for their real-world size.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson
from rich.console import Console
from rich.table import Table

from sim.demo.procs import StartError
from sim.demo.run import add_options, build_config, run_all
from sim.demo.stack import Arm
from sim.demo.summary import Summary, summarize
from sim.localredis.server import RedisUnavailableError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="surgescale bench e2e",
        description="End to end: reaction to a load step under surgescale and a KEDA-style loop.",
    )
    add_options(p)
    p.add_argument(
        "--compare",
        choices=["fifo"],
        action="append",
        default=[],
        help="also run ours with the gateway's FIFO dispatch (the gain of the deadline order)",
    )
    return p


def _cell(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def figures(
    ours: Summary, base: Summary, *, speed: float, fifo: Summary | None = None
) -> dict[str, float | str | None]:
    out: dict[str, float | str | None] = {
        "ours_patch_s": ours.reaction.patch_s,
        "baseline_patch_s": base.reaction.patch_s,
        "ours_pod_ready_s": ours.reaction.pod_ready_s,
        "baseline_pod_ready_s": base.reaction.pod_ready_s,
        "ours_node_ready_s": ours.reaction.node_ready_s,
        "baseline_node_ready_s": base.reaction.node_ready_s,
        "ours_drain_s": ours.reaction.drain_s,
        "baseline_drain_s": base.reaction.drain_s,
        "ours_ttft_p99_s": ours.burst_ttft_p99_s,
        "baseline_ttft_p99_s": base.burst_ttft_p99_s,
        "ours_slo_attainment": ours.slo_attainment,
        "baseline_slo_attainment": base.slo_attainment,
        "ours_node_minutes": round(ours.node_minutes, 3),
        "baseline_node_minutes": round(base.node_minutes, 3),
        "ours_gpu_minutes": round(ours.gpu_minutes, 3),
        "baseline_gpu_minutes": round(base.gpu_minutes, 3),
        "ours_failed": ours.failed,
        "baseline_failed": base.failed,
    }
    if fifo is not None:
        out["ours_fifo_slo_attainment"] = fifo.slo_attainment
        out["ours_fifo_node_minutes"] = round(fifo.node_minutes, 3)
        out["ours_fifo_gpu_minutes"] = round(fifo.gpu_minutes, 3)
        out["ours_fifo_failed"] = fifo.failed
    out["speed"] = speed
    return out


def table(*runs: Summary) -> Table:
    t = Table(title="load step -> ... (wall seconds of the compressed run)")
    t.add_column("")
    for s in runs:
        t.add_column(s.label, justify="right")
    rows: list[tuple[str, list[float | None]]] = [
        ("scale PATCH", [s.reaction.patch_s for s in runs]),
        ("first new pod Ready", [s.reaction.pod_ready_s for s in runs]),
        ("first new node Ready", [s.reaction.node_ready_s for s in runs]),
        ("queue drained", [s.reaction.drain_s for s in runs]),
        ("TTFT p50", [s.ttft_p50_s for s in runs]),
        ("TTFT p95", [s.ttft_p95_s for s in runs]),
        ("TTFT p99", [s.ttft_p99_s for s in runs]),
        ("TTFT p99 during the burst", [s.burst_ttft_p99_s for s in runs]),
    ]
    for label, cells in rows:
        t.add_row(label, *(_cell(v) for v in cells))
    t.add_row("SLO attainment", *(f"{100 * s.slo_attainment:.1f} %" for s in runs))
    t.add_row("GPU-minutes", *(f"{s.gpu_minutes:.2f}" for s in runs))
    t.add_row("node-minutes", *(f"{s.node_minutes:.2f}" for s in runs))
    t.add_row("requests (failed)", *(f"{s.requests} ({s.failed})" for s in runs))
    return t


async def _main(args: argparse.Namespace, console: Console) -> int:
    config = build_config(args, live=False)
    arms = [Arm.OURS, Arm.KEDA] + ([Arm.OURS_FIFO] if "fifo" in args.compare else [])
    records = await run_all(config, arms, redis_url=args.redis_url, console=console)
    from sim.demo.report import write_report  # matplotlib loads only now

    page = write_report(records, config.work_dir)
    summaries = [summarize(r) for r in records]
    ours, base = summaries[0], summaries[1]
    fifo = summaries[2] if len(summaries) > 2 else None
    console.print(table(*summaries))
    console.print(f"report: {page.resolve()}")
    out = figures(ours, base, speed=config.speed, fifo=fifo)
    out["report"] = str(page.resolve())
    print(orjson.dumps(out).decode(), flush=True)
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=False)
    try:
        return asyncio.run(_main(args, console))
    except KeyboardInterrupt:
        console.print("interrupted: every process was stopped.")
        return 130
    except (StartError, RedisUnavailableError) as exc:
        console.print(f"[red]bench failed:[/red] {exc}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
