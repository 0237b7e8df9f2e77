"""`surgescale bench e2e`: the default burst under our controller and under the KEDA-style loop.

Runs the demo scenario twice in one go (`sim.demo.run`, no live view): once with surgescale's
controller, once with the KEDA + Prometheus + HPA loop (its periods divided by the same speed
factor), each on a fresh simulated cluster. For each it measures, from the load step: the scale
PATCH (first replica increase on the API server), the first new pod Ready, the queue drained, and
the TTFT p99 of the requests sent during the burst. Prints a table, writes the report, and ends
with one JSON line: `ours_patch_s`, `baseline_patch_s`, `ours_pod_ready_s`,
`baseline_pod_ready_s`, `ours_node_ready_s`, `baseline_node_ready_s`, `ours_drain_s`,
`baseline_drain_s`, `ours_ttft_p99_s`, `baseline_ttft_p99_s`, the SLO attainments, `speed`,
`report`. Times are wall seconds of the compressed run; multiply
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
from surgescale.events.localredis import RedisUnavailableError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="surgescale bench e2e",
        description="End to end: reaction to a load step under surgescale and a KEDA-style loop.",
    )
    add_options(p)
    return p


def _cell(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def figures(ours: Summary, base: Summary, *, speed: float) -> dict[str, float | str | None]:
    return {
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
        "speed": speed,
    }


def table(ours: Summary, base: Summary) -> Table:
    t = Table(title="load step -> ... (wall seconds of the compressed run)")
    t.add_column("")
    t.add_column(ours.label, justify="right")
    t.add_column(base.label, justify="right")
    rows = [
        ("scale PATCH", ours.reaction.patch_s, base.reaction.patch_s),
        ("first new pod Ready", ours.reaction.pod_ready_s, base.reaction.pod_ready_s),
        ("first new node Ready", ours.reaction.node_ready_s, base.reaction.node_ready_s),
        ("queue drained", ours.reaction.drain_s, base.reaction.drain_s),
        ("TTFT p99 during the burst", ours.burst_ttft_p99_s, base.burst_ttft_p99_s),
    ]
    for label, a, b in rows:
        t.add_row(label, _cell(a), _cell(b))
    t.add_row(
        "SLO attainment", f"{100 * ours.slo_attainment:.1f} %", f"{100 * base.slo_attainment:.1f} %"
    )
    t.add_row(
        "requests (failed)", f"{ours.requests} ({ours.failed})", f"{base.requests} ({base.failed})"
    )
    return t


async def _main(args: argparse.Namespace, console: Console) -> int:
    config = build_config(args, live=False)
    records = await run_all(config, [Arm.OURS, Arm.KEDA], redis_url=args.redis_url, console=console)
    from sim.demo.report import write_report  # matplotlib loads only now

    page = write_report(records, config.work_dir)
    ours, base = (summarize(r) for r in records)
    console.print(table(ours, base))
    console.print(f"report: {page.resolve()}")
    out = figures(ours, base, speed=config.speed)
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
