"""The demo's report: PNG plots (matplotlib, Agg) and one HTML page with the summary table.

`write_report(runs, out_dir)` takes one to three `RunRecord`s (ours, the KEDA-style baseline with
`--compare keda`, ours with FIFO dispatch with `--compare fifo`), draws each figure with one
column per run on shared axes (the TTFT distribution with every run on one axis), writes
`report.html` next to the PNGs plus `summary.json` and each run's raw record
(`run-<name>.json`, which `python -m sim.demo.report DIR` turns into a report again), and returns
the page's path. The numbers come from `sim.demo.summary`.
"""

from __future__ import annotations

import html
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import orjson
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sim.demo.record import RunRecord
from sim.demo.summary import (
    Summary,
    arrival_rate_series,
    grid,
    rolling_ttft,
    summarize,
    waiting_series,
)

PLOTS = ("capacity.png", "ttft.png", "ttft_cdf.png", "queue.png")
"""The figures every report holds, in page order."""

_COLORS = {
    "desired": "#1f77b4",
    "ready": "#2ca02c",
    "starting": "#ff7f0e",
    "nodes": "#9467bd",
    "demand": "#7f7f7f",
    "slo": "#d62728",
}


def _columns(runs: Sequence[RunRecord], title: str) -> tuple[Figure, list[Axes]]:
    fig, axes = plt.subplots(
        1, len(runs), figsize=(6.5 * len(runs), 4.2), sharey=True, squeeze=False
    )
    fig.suptitle(title)
    return fig, list(axes[0])


def _mark_burst(ax: Axes, run: RunRecord) -> None:
    if run.load_step_at is not None:
        end = run.burst_end_at if run.burst_end_at is not None else run.duration_s
        ax.axvspan(run.load_step_at, end, color="#000000", alpha=0.06, lw=0)


def plot_capacity(runs: Sequence[RunRecord], path: Path) -> None:
    fig, axes = _columns(runs, "Replicas and GPU nodes against demand")
    for ax, run in zip(axes, runs, strict=True):
        samples = list(run.cluster)
        if samples and samples[-1].t < run.duration_s:
            samples.append(replace(samples[-1], t=run.duration_s))
        t = [c.t for c in samples]
        _mark_burst(ax, run)
        ax.step(
            t,
            [c.replicas_desired for c in samples],
            where="post",
            color=_COLORS["desired"],
            label="replicas desired",
        )
        ax.step(
            t,
            [c.replicas_ready for c in samples],
            where="post",
            color=_COLORS["ready"],
            label="replicas ready",
        )
        ax.step(
            t,
            [c.replicas_starting for c in samples],
            where="post",
            color=_COLORS["starting"],
            ls=":",
            label="replicas starting",
        )
        ax.step(
            t,
            [c.nodes_ready for c in samples],
            where="post",
            color=_COLORS["nodes"],
            ls="--",
            label="nodes ready",
        )
        ax.step(
            t,
            [c.nodes_desired for c in samples],
            where="post",
            color=_COLORS["nodes"],
            ls=":",
            lw=1,
            label="nodes desired",
        )
        ax.set_xlabel("time (s)")
        ax.set_ylabel("count")
        ax.set_title(run.label)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        twin = ax.twinx()
        times = grid(run.duration_s, 0.5)
        twin.plot(
            times,
            arrival_rate_series(run.requests, times, window_s=5.0),
            color=_COLORS["demand"],
            alpha=0.6,
            lw=1,
            label="arrivals/s",
        )
        twin.set_ylabel("arrivals / s")
        twin.set_ylim(bottom=0)
        lines, labels = ax.get_legend_handles_labels()
        l2, lb2 = twin.get_legend_handles_labels()
        ax.legend(lines + l2, labels + lb2, loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ttft(runs: Sequence[RunRecord], path: Path) -> None:
    fig, axes = _columns(runs, "Time to first token (client side) and the SLO")
    for ax, run in zip(axes, runs, strict=True):
        _mark_burst(ax, run)
        pts = [(r.started_s, r.ttft_s) for r in run.requests if r.ttft_s is not None]
        ax.scatter(
            [p[0] for p in pts],
            [p[1] for p in pts],
            s=3,
            alpha=0.35,
            color=_COLORS["desired"],
            label="request TTFT",
        )
        times = grid(run.duration_s, 0.5)
        p95 = rolling_ttft(run.requests, times, window_s=5.0, q=95)
        ax.plot(
            times, [math_nan(v) for v in p95], color="#000000", lw=1.2, label="p95 (5 s window)"
        )
        ax.axhline(run.slo_s, color=_COLORS["slo"], ls="--", label=f"SLO {run.slo_s:g} s")
        failed = [r.started_s for r in run.requests if not r.ok]
        if failed:
            ax.scatter(
                failed,
                [run.slo_s] * len(failed),
                marker="x",
                color=_COLORS["slo"],
                s=12,
                label="failed",
            )
        ax.set_yscale("log")
        ax.set_xlabel("request sent at (s)")
        ax.set_ylabel("TTFT (s)")
        ax.set_title(run.label)
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ttft_cdf(runs: Sequence[RunRecord], path: Path) -> None:
    """The TTFT distribution of every run on one axis (failed requests never reach 1)."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    fig.suptitle("TTFT distribution (share of all requests sent with TTFT <= x)")
    for run in runs:
        ttfts = sorted(r.ttft_s for r in run.requests if r.ok and r.ttft_s is not None)
        total = max(1, len(run.requests))
        share = [(i + 1) / total for i in range(len(ttfts))]
        ax.step(ttfts, share, where="post", label=run.label)
    slos = sorted({run.slo_s for run in runs})
    for slo in slos:
        ax.axvline(slo, color=_COLORS["slo"], ls="--", label=f"SLO {slo:g} s")
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("TTFT (s)")
    ax.set_ylabel("share of requests")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def math_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def plot_queue(runs: Sequence[RunRecord], path: Path) -> None:
    fig, axes = _columns(runs, "Requests waiting for their first token (gateway + engine queues)")
    for ax, run in zip(axes, runs, strict=True):
        _mark_burst(ax, run)
        times = grid(run.duration_s)
        ax.plot(times, waiting_series(run.requests, times), color=_COLORS["starting"], lw=1)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("requests waiting")
        ax.set_title(run.label)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(value: float | None, unit: str = "s", digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}{(' ' + unit) if unit else ''}"


def summary_rows(summaries: Sequence[Summary]) -> list[tuple[str, list[str]]]:
    """(row label, one cell per run) for the summary table."""
    return [
        ("requests sent", [str(s.requests) for s in summaries]),
        ("completed / failed", [f"{s.ok} / {s.failed}" for s in summaries]),
        ("SLO attainment (TTFT)", [f"{100 * s.slo_attainment:.1f} %" for s in summaries]),
        ("TTFT p50", [_fmt(s.ttft_p50_s) for s in summaries]),
        ("TTFT p95", [_fmt(s.ttft_p95_s) for s in summaries]),
        ("TTFT p99", [_fmt(s.ttft_p99_s) for s in summaries]),
        ("TTFT p99 during the burst", [_fmt(s.burst_ttft_p99_s) for s in summaries]),
        ("GPU-minutes (pods)", [f"{s.gpu_minutes:.2f}" for s in summaries]),
        ("node-minutes", [f"{s.node_minutes:.2f}" for s in summaries]),
        ("max replicas / nodes", [f"{s.max_replicas} / {s.max_nodes}" for s in summaries]),
        ("load step → scale PATCH", [_fmt(s.reaction.patch_s, digits=3) for s in summaries]),
        ("load step → first new pod Ready", [_fmt(s.reaction.pod_ready_s) for s in summaries]),
        ("load step → first new node Ready", [_fmt(s.reaction.node_ready_s) for s in summaries]),
        ("load step → queue drained", [_fmt(s.reaction.drain_s) for s in summaries]),
    ]


def _decisions(run: RunRecord) -> str:
    """The run's scale changes as seen on the API server, with the autoscaler's reason."""
    rows = "".join(
        f"<tr><td>{c.t:.2f}</td><td>{html.escape(c.target)}</td><td>{c.old} → {c.new}</td>"
        f'<td class="reason">{html.escape(c.reason)}</td></tr>'
        for c in run.changes
    )
    return (
        f"<details><summary>{html.escape(run.label)}: {len(run.changes)} scale changes</summary>"
        "<table><thead><tr><th>t (s)</th><th>what</th><th>size</th><th>reason</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></details>"
    )


def _html(runs: Sequence[RunRecord], summaries: Sequence[Summary]) -> str:
    head = "".join(f"<th>{html.escape(s.label)}</th>" for s in summaries)
    body = "".join(
        "<tr><th>{}</th>{}</tr>".format(
            html.escape(label), "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        )
        for label, cells in summary_rows(summaries)
    )
    run = runs[0]
    notes = "".join(f"<li>{html.escape(n)}</li>" for r in runs for n in r.notes)
    figures = "".join(f'<figure><img src="{p}" alt="{p[:-4]}"></figure>' for p in PLOTS)
    decisions = "".join(_decisions(r) for r in runs)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>surgescale demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
tbody th {{ text-align: left; font-weight: normal; }}
img {{ max-width: 100%; }}
td.reason {{ text-align: left; font-family: monospace; font-size: 90%; }}
</style></head><body>
<h1>surgescale demo report</h1>
<p>Speed factor {run.speed:g} (cold starts, node boots and every control-loop period divided by
it; request serving runs in real time). TTFT SLO {run.slo_s:g} s. Times in seconds since the load
started; the shaded band is the burst.</p>
<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>
{figures}
<h2>Scale decisions</h2>
{decisions}
<h2>Notes</h2><ul>
<li>Waiting = requests sent without a first token yet (in the gateway's queue or a vLLM queue).</li>
<li>The queue is drained when the backlog above arrival rate x SLO is gone for good.</li>
<li>GPU-minutes count GPUs held by pods starting or Ready, in wall-clock minutes of this run.</li>
{notes}</ul>
</body></html>
"""


def write_report(runs: Sequence[RunRecord], out_dir: Path) -> Path:
    """Write PNGs, `report.html`, `summary.json` and the raw runs to `out_dir`; return the page."""
    if not runs:
        raise ValueError("no runs to report")
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_capacity(runs, out_dir / PLOTS[0])
    plot_ttft(runs, out_dir / PLOTS[1])
    plot_ttft_cdf(runs, out_dir / PLOTS[2])
    plot_queue(runs, out_dir / PLOTS[3])
    summaries = [summarize(r) for r in runs]
    for run in runs:
        (out_dir / f"run-{run.name}.json").write_bytes(run.to_json())
    (out_dir / "summary.json").write_bytes(
        orjson.dumps([asdict(s) for s in summaries], option=orjson.OPT_INDENT_2)
    )
    page = out_dir / "report.html"
    page.write_text(_html(runs, summaries), encoding="utf-8")
    return page


def main(argv: list[str]) -> int:
    """`python -m sim.demo.report DIR`: rebuild the report from the run-*.json files in DIR."""
    if len(argv) != 1:
        print("usage: python -m sim.demo.report DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    order = {"run-surgescale.json": 0, "run-keda.json": 1}
    files = sorted(out.glob("run-*.json"), key=lambda p: (order.get(p.name, 2), p.name))
    if not files:
        print(f"no run-*.json in {out}", file=sys.stderr)
        return 2
    print(write_report([RunRecord.from_json(p.read_bytes()) for p in files], out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
