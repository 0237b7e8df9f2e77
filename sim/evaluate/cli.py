"""`surgescale sim evaluate`: replay a trace in virtual time under several autoscalers.

    surgescale sim evaluate --trace FILE --policies ours,hpa-memory,keda-prometheus,kpa,\\
        static-peak,oracle --out DIR [--rate-scale X] [--seed N] [--slo-ttft S] \\
        [--slo-ttft-per-1k-tokens S] [--slo-tpot-ms MS] [--model-load S] [--node-boot S] \\
        [--jobs N] ...
    surgescale sim evaluate --matrix default --out DIR [--policies ...] [--jobs N]

Prints the markdown table(s) and, as its last line, one JSON object with `speedup_x` (simulated
seconds per wall second, all policies together, the oracle's planning included) and `summary`
(the path of `DIR/summary.json`). Exit status 2 on bad input, with a message naming it; in a
matrix, an entry that cannot run is refused with a message and the others run (`sim.evaluate.
matrix`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields, replace
from pathlib import Path

import orjson

from sim.evaluate.oracle import OracleConfig
from sim.evaluate.report import markdown_table, write_plots, write_summary
from sim.evaluate.runner import (
    DEFAULT_POLICIES,
    POLICIES,
    Evaluation,
    UnknownPolicyError,
    check_names,
    evaluate,
)
from sim.evaluate.trace import TraceError, rate_scale, read_trace
from sim.evaluate.world import Scenario
from surgescale.slo import Slo

log = logging.getLogger(__name__)


def default_trace() -> Path:
    """The conv trace in the load generator's default directory: `$SURGESCALE_TRACES_DIR`, else
    the copy packaged in `sim/data/traces/azure2023`."""
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
        "--matrix",
        default=None,
        help="'default', 'fixed32' or a JSON file of entries: run a scenario matrix (see docs/evaluate.md)",
    )
    p.add_argument(
        "--rate-scale", type=_positive, default=1.0, help="play the trace X times faster"
    )
    p.add_argument("--duration", type=_positive, default=None, help="cut the trace at S seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slo-ttft", type=_positive, default=1.0, help="TTFT deadline base, seconds")
    p.add_argument(
        "--slo-ttft-per-1k-tokens",
        type=_non_negative,
        default=0.0,
        help="extra TTFT allowed per 1,000 prompt tokens, seconds",
    )
    p.add_argument(
        "--slo-tpot-ms", type=_positive, default=None, help="TPOT objective, ms (default: none)"
    )
    p.add_argument("--model-load", type=_non_negative, default=60.0, help="pod cold start, s")
    p.add_argument("--node-boot", type=_non_negative, default=120.0, help="GPU node boot, s")
    p.add_argument("--gpus-per-node", type=_count, default=8)
    p.add_argument("--gpus-per-replica", type=_count, default=1)
    p.add_argument(
        "--pod-concurrency",
        type=_count,
        default=None,
        help="per-pod cap and ours' fixed concurrencyPerReplica (default: the live defaults, "
        "the engine's max_num_seqs as the cap and a concurrency learned from the TPOT objective)",
    )
    p.add_argument("--min-replicas", type=_count, default=0)
    p.add_argument(
        "--max-replicas",
        type=_count,
        default=None,
        help="bound for every policy (default: twice the peak the oracle needs on this trace)",
    )
    p.add_argument(
        "--initial-replicas",
        type=_count,
        default=None,
        help="ready replicas at t=0 (default: the fleet the oracle holds at t=0)",
    )
    p.add_argument("--profile", default="llama3-8b-h200", help="sim.engine profile")
    p.add_argument("--oracle-bucket", type=_positive, default=30.0, help="oracle bucket, s")
    p.add_argument("--oracle-target", type=_positive, default=0.99, help="per-bucket attainment")
    p.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 4), help="processes")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def _fail(message: str) -> int:
    print(f"surgescale sim evaluate: {message}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        names = [n.strip() for n in args.policies.split(",") if n.strip()]
        if not names:
            raise UnknownPolicyError("--policies is empty")
        check_names(names)
        if args.oracle_target > 1:
            raise ValueError("--oracle-target must be <= 1")
    except (UnknownPolicyError, ValueError) as exc:
        return _fail(str(exc))
    oracle = OracleConfig(bucket_s=args.oracle_bucket, target=args.oracle_target)
    if args.matrix is not None:
        return _matrix(args, names, oracle)
    trace_path = args.trace or default_trace()
    try:
        trace = read_trace(trace_path, max_duration_s=args.duration)
        trace = rate_scale(trace, args.rate_scale)
        if args.gpus_per_replica < 1 or args.gpus_per_node < args.gpus_per_replica:
            raise ValueError("--gpus-per-replica must be >= 1 and <= --gpus-per-node")
        if args.pod_concurrency is not None and args.pod_concurrency < 1:
            raise ValueError("--pod-concurrency must be >= 1")
        if args.max_replicas is not None and args.max_replicas < max(args.min_replicas, 1):
            raise ValueError("--max-replicas must be >= max(1, --min-replicas)")
        from sim.engine import get_profile

        profile = get_profile(args.profile)
        slo = Slo.checked(
            ttft_base_s=args.slo_ttft,
            ttft_per_input_token_s=args.slo_ttft_per_1k_tokens / 1000.0,
            tpot_s=None if args.slo_tpot_ms is None else args.slo_tpot_ms / 1000.0,
        )
    except (TraceError, UnknownPolicyError, ValueError) as exc:
        return _fail(str(exc))
    if not trace.requests:
        return _fail("the trace has no requests")
    bound = args.max_replicas
    scenario = Scenario(
        name=trace.name,
        requests=trace.requests,
        slo=slo,
        model_load_s=args.model_load,
        node_boot_s=args.node_boot,
        gpus_per_node=args.gpus_per_node,
        gpus_per_replica=args.gpus_per_replica,
        pod_concurrency=args.pod_concurrency or profile.max_num_seqs,
        fixed_concurrency=args.pod_concurrency is not None,
        profile=args.profile,
        min_replicas=args.min_replicas,
        max_replicas=bound if bound is not None else max(args.min_replicas, 1),
        initial_replicas=max(args.initial_replicas or 1, args.min_replicas),
        seed=args.seed,
    )
    if bound is not None:
        scenario = replace(scenario, initial_replicas=min(scenario.initial_replicas, bound))
    evaluation = evaluate(
        scenario,
        names,
        jobs=max(args.jobs, 1),
        oracle=oracle,
        derive_bound=bound is None,
        steady=args.initial_replicas is None,
    )
    _write_outputs(
        evaluation,
        args.out,
        names,
        oracle,
        trace=str(trace_path),
        rate=args.rate_scale,
        plots=not args.no_plots,
    )
    print(markdown_table([r.summary for r in evaluation.runs]))
    print(
        orjson.dumps(_figures([evaluation], args.out / "summary.json", names, args.jobs)).decode()
    )
    return 0


def _write_outputs(
    evaluation: Evaluation,
    out: Path,
    names: list[str],
    oracle: OracleConfig,
    *,
    trace: str,
    rate: float,
    plots: bool,
) -> None:
    scenario = evaluation.scenario
    write_summary(evaluation, out)
    settings = {
        f.name: getattr(scenario, f.name)
        for f in fields(scenario)
        if f.name not in ("requests", "slo")
    }
    settings.update(
        trace=trace,
        rate_scale=rate,
        requests=len(scenario.requests),
        duration_s=scenario.duration_s,
        policies=names,
        slo_ttft_s=scenario.slo.ttft_base_s,
        slo_ttft_per_input_token_s=scenario.slo.ttft_per_input_token_s,
        slo_tpot_s=scenario.slo.tpot_s,
        oracle_bucket_s=oracle.bucket_s,
        oracle_target=oracle.target,
        oracle_warmup_s=oracle.warmup_s,
    )
    (out / "scenario.json").write_bytes(orjson.dumps(settings, option=orjson.OPT_INDENT_2))
    print(
        f"{scenario.name}: {len(scenario.requests)} requests over {scenario.duration_s:.0f} s "
        f"(rate x{rate:g}, seed {scenario.seed}, {scenario.initial_replicas} replicas ready at "
        f"the start, max {scenario.max_replicas} replicas)"
    )
    for path in write_plots(evaluation, out) if plots else []:
        print(f"plot: {path}")


def _figures(
    evaluations: list[Evaluation], summary: Path, names: list[str], jobs: int
) -> dict[str, object]:
    simulated = sum(e.simulated_s for e in evaluations)
    wall = sum(e.wall_s for e in evaluations)
    cpu = sum(e.cpu_s for e in evaluations)
    return {
        "speedup_x": round(simulated / wall, 1) if wall > 0 else None,
        "summary": str(summary),
        "simulated_s": round(simulated, 1),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "speedup_cpu_x": round(simulated / cpu, 1) if cpu > 0 else None,
        "trace_s": round(sum(e.scenario.duration_s for e in evaluations), 1),
        "policies": names,
        "jobs": max(jobs, 1),
        "scenarios": len(evaluations),
    }


def _matrix(args: argparse.Namespace, names: list[str], oracle: OracleConfig) -> int:
    from sim.evaluate import matrix
    from sim.load.trace import default_traces_dir

    try:
        entries, refused = matrix.load(args.matrix)
    except matrix.Refused as exc:
        return _fail(str(exc))
    for item in refused:
        print(
            f"surgescale sim evaluate: refused matrix entry {item['entry']}: {item['reason']}",
            file=sys.stderr,
        )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    evaluations: list[Evaluation] = []
    rows: list[dict[str, object]] = []
    sections: list[str] = []
    traces = default_traces_dir()
    for entry in entries:
        try:
            scenario = matrix.build(
                entry, traces_dir=traces, duration_s=args.duration, seed=args.seed
            )
        except (matrix.Refused, ValueError) as exc:
            refused.append({"entry": entry.name, "reason": str(exc)})
            print(
                f"surgescale sim evaluate: refused matrix entry {entry.name}: {exc}",
                file=sys.stderr,
            )
            continue
        try:
            evaluation = evaluate(
                scenario,
                names,
                jobs=max(args.jobs, 1),
                oracle=oracle,
                derive_bound=entry.max_replicas is None,
                steady=True,
            )
        except Exception as exc:  # one entry failing must not lose the others
            log.exception("matrix entry %s failed", entry.name)
            refused.append({"entry": entry.name, "reason": f"failed: {exc!r}"})
            print(
                f"surgescale sim evaluate: refused matrix entry {entry.name}: failed: {exc!r}",
                file=sys.stderr,
            )
            continue
        evaluations.append(evaluation)
        _write_outputs(
            evaluation,
            out / entry.name,
            names,
            oracle,
            trace=entry.trace,
            rate=entry.rate_scale,
            plots=not args.no_plots,
        )
        table = markdown_table([r.summary for r in evaluation.runs])
        print(table)
        sections.append(f"## {entry.name}\n\n{table}\n")
        rows.extend(r.summary for r in evaluation.runs)
    summary = out / "summary.json"
    summary.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    (out / "refused.json").write_bytes(orjson.dumps(refused, option=orjson.OPT_INDENT_2))
    overall = matrix.summary_table(rows)
    (out / "summary.md").write_text("\n".join(sections) + "\n## Summary\n\n" + overall + "\n")
    print(overall)
    print(orjson.dumps(_figures(evaluations, summary, names, args.jobs)).decode())
    return 0 if evaluations else 2
