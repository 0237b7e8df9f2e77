"""The evaluator's outputs: `summary.json`, `summary.csv`, `summary.md` and the PNG plots.

- `summary.json`: a list with one object per policy (`policy`, `billed_gpu_hours`, `gpu_hours`,
  `slo_attainment`, `ttft_attainment`, `tpot_attainment` 0..1, `ttft_p50_s`, `ttft_p95_s`,
  `ttft_p99_s`, `scale_events`, and the rest of
  `sim.evaluate.metrics.summarize`); percentiles that fall on a request never served are null;
- `summary.csv`: the same rows;
- `summary.md`: the markdown table (also printed by the command);
- `replicas.png` (ready replicas of every policy against the arrival rate), `ttft.png` (TTFT p95
  per sample period, log scale, with the SLO's base line), `pareto.png` (SLO attainment against
  billed GPU-hours, one point per policy, and the Pareto front).

Matplotlib runs on its Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from sim.evaluate.runner import Evaluation

TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("policy", "policy", "s"),
    ("billed_gpu_hours", "billed GPU-h", "2f"),
    ("slo_attainment", "within SLO", "pct"),
    ("ttft_attainment", "TTFT met", "pct"),
    ("tpot_attainment", "TPOT met", "pct"),
    ("ttft_p50_s", "TTFT p50 s", "3f"),
    ("ttft_p95_s", "TTFT p95 s", "3f"),
    ("ttft_p99_s", "TTFT p99 s", "3f"),
    ("tpot_p95_s", "TPOT p95 ms", "ms"),
    ("gpu_hours", "pod GPU-h", "2f"),
    ("node_hours", "node-h", "2f"),
    ("scale_events", "scale ev.", "d"),
    ("peak_replicas", "peak repl.", "d"),
    ("reaction_s", "reaction s", "1f"),
)
CSV_SKIP = ("reactions_s", "oracle_schedule")


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "ms":
        return f"{1000 * value:.1f}"
    if kind == "d":
        return str(int(value))
    if kind == "s":
        return str(value)
    return format(value, "." + kind)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary rows as a GitHub markdown table."""
    head = "| " + " | ".join(title for _, title, _ in TABLE_COLUMNS) + " |"
    sep = "|" + "|".join("---" if k == "s" else "---:" for _, _, k in TABLE_COLUMNS) + "|"
    lines = [head, sep]
    for row in rows:
        cells = [_fmt(row.get(key), kind) for key, _, kind in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary(evaluation: Evaluation, out: Path) -> Path:
    """Write summary.json, summary.csv and summary.md; return the JSON path."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [r.summary for r in evaluation.runs]
    path = out / "summary.json"
    path.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    keys: list[str] = []
    for row in rows:
        for key in row:
            if key not in keys and key not in CSV_SKIP:
                keys.append(key)
    with (out / "summary.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in keys})
    sc = evaluation.scenario
    title = (
        f"## {sc.name}: {len(sc.requests)} requests over {sc.duration_s:.0f} s, "
        f"TTFT SLO {sc.slo_ttft_s:g} s, model load {sc.model_load_s:g} s, "
        f"node boot {sc.node_boot_s:g} s\n\n"
    )
    (out / "summary.md").write_text(title + markdown_table(rows) + "\n")
    return path


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, attainment) points no other point beats on both, cheapest first."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def write_pareto(rows: Sequence[dict[str, Any]], path: Path, *, title: str) -> Path:
    """Within SLO against billed GPU-hours, one point per policy (policies on the same point
    share one label), with the Pareto front; from summary rows, so it can be redrawn later."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[float, float], list[str]] = {}
    for row in rows:
        x, y = float(row["billed_gpu_hours"]), 100 * float(row["slo_attainment"])
        groups.setdefault((round(x, 4), round(y, 4)), []).append(str(row["policy"]))
    fig, ax = plt.subplots(figsize=(7, 5))
    for (x, y), names in groups.items():
        ax.scatter(x, y, s=60)
        ax.annotate(
            "\n".join(names), (x, y), textcoords="offset points", xytext=(5, 5), fontsize="small"
        )
    front = pareto_front(list(groups))
    if front:
        ax.step(*zip(*front, strict=True), where="post", color="0.5", linestyle=":")
    ax.set_xlabel("billed GPU-hours (node-hours x GPUs per node; lower is cheaper)")
    ax.set_ylabel("within SLO, % of requests")
    ax.set_title(f"{title}: SLO against billed cost (dotted: Pareto front)")
    ax.margins(x=0.15, y=0.1)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_plots(evaluation: Evaluation, out: Path) -> list[Path]:
    """Write the three PNG plots; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    sc = evaluation.scenario
    runs = evaluation.runs
    paths: list[Path] = []

    fig, ax = plt.subplots(figsize=(12, 5))
    rate_ax = ax.twinx()
    if runs:
        first = runs[0]
        rate_ax.fill_between(
            first.times, first.arrival_rate, step="post", color="0.85", label="arrivals/s"
        )
    rate_ax.set_ylabel("arrivals per second")
    for run in runs:
        ax.step(run.times, run.ready, where="post", label=run.summary["policy"], linewidth=1.2)
    ax.set_zorder(rate_ax.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("ready replicas")
    ax.set_title(f"{sc.name}: ready replicas against demand")
    ax.legend(loc="upper left", fontsize="small", ncol=2)
    fig.tight_layout()
    paths.append(out / "replicas.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(12, 5))
    for run in runs:
        values = [math.nan if v is None else (1e4 if math.isinf(v) else v) for v in run.ttft_p95]
        ax.plot(run.times, values, label=run.summary["policy"], linewidth=1.0)
    ax.axhline(sc.slo_ttft_s, color="red", linestyle="--", label="SLO")
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"TTFT p95 per {sc.sample_s:g} s (s)")
    ax.set_title(f"{sc.name}: TTFT over time")
    ax.legend(loc="upper left", fontsize="small", ncol=2)
    fig.tight_layout()
    paths.append(out / "ttft.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    paths.append(write_pareto([r.summary for r in runs], out / "pareto.png", title=sc.name))
    return paths
