"""`surgescale sim evaluate`: replay a trace in virtual time under several autoscalers.

    surgescale sim evaluate --trace FILE --policies ours,hpa-memory,keda-prometheus,kpa,\\
        static-peak,oracle --out DIR [--rate-scale X] [--seed N] [--slo-ttft S] \\
        [--model-load S] [--node-boot S] [--jobs N] ...

Prints the markdown table and, as its last line, one JSON object with `speedup_x` (simulated
seconds per wall second, all policies together, the oracle's planning included) and `summary`
(the path of `DIR/summary.json`). Exit status 2 on bad input, with a message naming it.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

import orjson

from sim.evaluate.oracle import OracleConfig
from sim.evaluate.report import markdown_table, write_plots, write_summary
from sim.evaluate.runner import (
    DEFAULT_POLICIES,
    POLICIES,
    UnknownPolicyError,
    evaluate,
    steady_start,
)
from sim.evaluate.trace import TraceError, rate_scale, read_trace
from sim.evaluate.world import Scenario
from surgescale.slo import Slo


def default_trace() -> Path:
    """The conv trace in the load generator's default directory: `$SURGESCALE_TRACES_DIR`, else
    `<repo>/../shared/data/traces/azure2023`, else the copy packaged in `sim/data`."""
    from sim.load.trace import default_traces_dir

    return default_traces_dir() / "AzureLLMInferenceTrace_conv.csv"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="surgescale sim evaluate",
        description="Virtual-time comparison of autoscaling policies on a request trace.",
    )
    p.add_argument("--trace", type=Path, default=None, help="Azure 2023 CSV or JSONL trace")
    p.add_argument(
        "--policies",
        default=",".join(DEFAULT_POLICIES),
        help=f"comma-separated, from: {', '.join(POLICIES)}",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--rate-scale", type=_positive, default=1.0, help="play the trace X times faster"
    )
    p.add_argument("--duration", type=_positive, default=None, help="cut the trace at S seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slo-ttft", type=_positive, default=1.0, help="TTFT SLO, seconds")
    p.add_argument("--model-load", type=_non_negative, default=60.0, help="pod cold start, s")
    p.add_argument("--node-boot", type=_non_negative, default=120.0, help="GPU node boot, s")
    p.add_argument("--gpus-per-node", type=_count, default=8)
    p.add_argument("--gpus-per-replica", type=_count, default=1)
    p.add_argument("--pod-concurrency", type=_count, default=32, help="per-pod concurrency cap")
    p.add_argument("--min-replicas", type=_count, default=0)
    p.add_argument("--max-replicas", type=_count, default=16)
    p.add_argument(
        "--initial-replicas",
        type=_count,
        default=None,
        help="ready replicas at t=0 (default: what the oracle needs for the first bucket)",
    )
    p.add_argument("--profile", default="llama3-8b-h200", help="sim.engine profile")
    p.add_argument("--oracle-bucket", type=_positive, default=30.0, help="oracle bucket, s")
    p.add_argument("--oracle-target", type=_positive, default=0.99, help="per-bucket attainment")
    p.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 4), help="processes")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    trace_path = args.trace or default_trace()
    try:
        names = [n.strip() for n in args.policies.split(",") if n.strip()]
        if not names:
            raise UnknownPolicyError("--policies is empty")
        trace = read_trace(trace_path, max_duration_s=args.duration)
        trace = rate_scale(trace, args.rate_scale)
        if args.gpus_per_replica < 1 or args.gpus_per_node < args.gpus_per_replica:
            raise ValueError("--gpus-per-replica must be >= 1 and <= --gpus-per-node")
        if args.pod_concurrency < 1:
            raise ValueError("--pod-concurrency must be >= 1")
        if args.max_replicas < max(args.min_replicas, 1):
            raise ValueError("--max-replicas must be >= max(1, --min-replicas)")
        if args.oracle_target > 1:
            raise ValueError("--oracle-target must be <= 1")
        from sim.engine import get_profile

        get_profile(args.profile)
    except (TraceError, UnknownPolicyError, ValueError) as exc:
        print(f"surgescale sim evaluate: {exc}", file=sys.stderr)
        return 2
    scenario = Scenario(
        name=trace.name,
        requests=trace.requests,
        slo=Slo.checked(ttft_base_s=args.slo_ttft),
        model_load_s=args.model_load,
        node_boot_s=args.node_boot,
        gpus_per_node=args.gpus_per_node,
        gpus_per_replica=args.gpus_per_replica,
        pod_concurrency=args.pod_concurrency,
        profile=args.profile,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        initial_replicas=min(max(args.initial_replicas or 1, args.min_replicas), args.max_replicas),
        seed=args.seed,
    )
    if not scenario.requests:
        print("surgescale sim evaluate: the trace has no requests", file=sys.stderr)
        return 2
    oracle = OracleConfig(bucket_s=args.oracle_bucket, target=args.oracle_target)
    if args.initial_replicas is None:
        scenario = steady_start(scenario, oracle)
    try:
        evaluation = evaluate(scenario, names, jobs=max(args.jobs, 1), oracle=oracle)
    except UnknownPolicyError as exc:
        print(f"surgescale sim evaluate: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out
    summary = write_summary(evaluation, out)
    settings = {f.name: getattr(scenario, f.name) for f in fields(scenario) if f.name != "requests"}
    settings.update(
        trace=str(trace_path),
        rate_scale=args.rate_scale,
        requests=len(scenario.requests),
        duration_s=scenario.duration_s,
        policies=names,
        oracle_bucket_s=oracle.bucket_s,
        oracle_target=oracle.target,
        oracle_warmup_s=oracle.warmup_s,
    )
    (out / "scenario.json").write_bytes(orjson.dumps(settings, option=orjson.OPT_INDENT_2))
    plots = [] if args.no_plots else write_plots(evaluation, out)
    rows = [r.summary for r in evaluation.runs]
    print(
        f"{scenario.name}: {len(scenario.requests)} requests over {scenario.duration_s:.0f} s "
        f"(rate x{args.rate_scale:g}, seed {args.seed}, {scenario.initial_replicas} replicas "
        "ready at the start)"
    )
    print(markdown_table(rows))
    for path in plots:
        print(f"plot: {path}")
    simulated = evaluation.simulated_s
    figures = {
        "speedup_x": round(simulated / evaluation.wall_s, 1) if evaluation.wall_s > 0 else None,
        "summary": str(summary),
        "simulated_s": round(simulated, 1),
        "wall_s": round(evaluation.wall_s, 2),
        "cpu_s": round(evaluation.cpu_s, 2),
        "speedup_cpu_x": round(simulated / evaluation.cpu_s, 1) if evaluation.cpu_s > 0 else None,
        "trace_s": round(scenario.duration_s, 1),
        "policies": names,
        "jobs": max(args.jobs, 1),
    }
    print(orjson.dumps(figures).decode())
    return 0
