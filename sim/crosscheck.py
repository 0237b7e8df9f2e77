"""Cross-check: the evaluator against the live loop on one short scenario.

    python -m sim.crosscheck [--speed 10] [--duration 60] [--seed 0] [--out DIR]

Runs the demo's `surgescale` arm live (`sim.demo.run.run_all`: simulated cluster, simulated pods,
gateway, controller, Redis, load replay — in real time with lifecycle delays divided by the speed
factor), then runs the evaluator on the same request schedule with the same compressed timings
(`scenario_from_demo`), and compares TTFT p95 (agreement: within 15%) and the desired replica
count over time (mean absolute difference per second, and the largest). Prints a table and, last,
one JSON object with `ttft_p95_live_s`, `ttft_p95_sim_s`, `ttft_p95_rel_diff`,
`replicas_mean_abs_diff`, `replicas_max_abs_diff`, `agree`.

The live run needs the machine to itself to be a fair reference: CPU contention inflates its
TTFT (the simulated pods keep time with the event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from controller.state import StateSettings
from sim.demo.commands import controller_long_window_s
from sim.evaluate.metrics import served_percentile
from sim.evaluate.ours import Ours, OursConfig
from sim.evaluate.pods import engine_factory
from sim.evaluate.world import RunResult, Scenario, World
from surgescale.slo import Slo

if TYPE_CHECKING:
    from sim.demo.record import RunRecord
    from sim.demo.stack import DemoConfig


def scenario_from_demo(config: DemoConfig) -> tuple[Scenario, OursConfig]:
    """The evaluator's scenario and controller cadence for a demo configuration."""
    setup = config.setup
    speed = config.speed
    requests = tuple(config.schedule)
    scenario = Scenario(
        name="crosscheck",
        requests=requests,
        slo=Slo(ttft_base_s=setup.slo_s),
        model_load_s=setup.model_load_s / speed,
        node_boot_s=setup.node_boot_s / speed,
        gpus_per_node=setup.gpus_per_node,
        gpus_per_replica=setup.gpus_per_replica,
        pod_concurrency=config.ours_pod_concurrency or setup.max_num_seqs,
        profile=setup.profile,
        model=setup.model,
        min_replicas=setup.min_replicas,
        max_replicas=setup.max_replicas,
        initial_replicas=setup.initial_replicas,
        seed=config.seed,
        tail_s=max(config.duration_s - (requests[-1].arrival_s if requests else 0.0), 0.0),
        sample_s=0.5,
    )
    ours = OursConfig(
        scale_down_delay_s=setup.scale_down_delay_s / speed,
        scale_down_period_s=setup.scale_down_period_s / speed,
        # the live controller's command line (`sim.demo.commands.controller_argv`)
        state=StateSettings(long_window_s=controller_long_window_s(speed)),
    )
    return scenario, ours


def simulate(config: DemoConfig) -> RunResult:
    """The evaluator's run of the demo's scenario (ours)."""
    scenario, ours = scenario_from_demo(config)
    factory = engine_factory(scenario.profile, max_num_seqs=config.setup.max_num_seqs)
    return World(scenario, engine_factory=factory, autoscaler=Ours(ours)).run()


def _step_series(points: list[tuple[float, int]], times: list[float]) -> list[int]:
    out = []
    j = 0
    value = points[0][1] if points else 0
    for t in times:
        while j < len(points) and points[j][0] <= t:
            value = points[j][1]
            j += 1
        out.append(value)
    return out


def compare(record: RunRecord, result: RunResult, *, tolerance: float = 0.15) -> dict[str, Any]:
    """TTFT p95 and desired replicas over time, live against simulated."""
    live_ttft = [r.ttft_s if (r.ok and r.ttft_s is not None) else math.inf for r in record.requests]
    sim_ttft = [math.inf if r.ttft is None else r.ttft for r in result.requests]
    live_p95 = served_percentile(live_ttft, 95)
    sim_p95 = served_percentile(sim_ttft, 95)
    rel = (
        abs(sim_p95 - live_p95) / live_p95
        if live_p95 is not None and sim_p95 is not None and live_p95 > 0
        else None
    )
    end = record.duration_s
    times = [float(t) for t in range(int(end) + 1)]
    live = _step_series([(s.t, s.replicas_desired) for s in record.cluster], times)
    sim = _step_series(list(result.replica_changes), times)
    diffs = [abs(a - b) for a, b in zip(live, sim, strict=True)]
    mean_diff = sum(diffs) / len(diffs) if diffs else 0.0
    slo = result.scenario.slo_ttft_s
    return {
        "requests_live": len(record.requests),
        "requests_sim": len(result.requests),
        "slo_attainment_live": sum(1 for t in live_ttft if t <= slo) / max(len(live_ttft), 1),
        "slo_attainment_sim": sum(1 for t in sim_ttft if t <= slo) / max(len(sim_ttft), 1),
        "ttft_p95_live_s": live_p95,
        "ttft_p95_sim_s": sim_p95,
        "ttft_p95_rel_diff": rel,
        "replicas_live_max": max(live, default=0),
        "replicas_sim_max": max(sim, default=0),
        "replicas_mean_abs_diff": mean_diff,
        "replicas_max_abs_diff": max(diffs, default=0),
        "agree": rel is not None and rel <= tolerance and mean_diff <= 0.5,
        "replicas_live": live,
        "replicas_sim": sim,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.crosscheck", description=__doc__)
    p.add_argument("--speed", type=float, default=10.0)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("crosscheck"))
    return p


async def _live(config: DemoConfig, redis_url: str | None = None) -> RunRecord:
    from rich.console import Console

    from sim.demo.run import run_all
    from sim.demo.stack import Arm

    records = await run_all(config, [Arm.OURS], redis_url=redis_url, console=Console(stderr=True))
    return records[0]


def demo_config(*, speed: float, duration_s: float, seed: int, out: Path) -> DemoConfig:
    """The demo's default burst scenario, compressed by `speed` and cut to `duration_s`."""
    from sim.demo.run import add_options, build_config

    demo_args = argparse.ArgumentParser()
    add_options(demo_args)
    ns = demo_args.parse_args(
        [
            "--speed",
            str(speed),
            "--duration",
            str(duration_s),
            "--seed",
            str(seed),
            "--out",
            str(out),
        ]
    )
    return replace(build_config(ns, live=False), live=False)


def crosscheck(config: DemoConfig, *, redis_url: str | None = None) -> dict[str, Any]:
    """Run the live `surgescale` arm, then the evaluator on the same scenario; compare them."""
    record = asyncio.run(_live(config, redis_url))
    return compare(record, simulate(config))


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    config = demo_config(speed=args.speed, duration_s=args.duration, seed=args.seed, out=args.out)
    figures = crosscheck(config)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "crosscheck.json").write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    print(f"{'':28} {'live':>10} {'evaluator':>10}")
    print(f"{'requests':28} {figures['requests_live']:>10} {figures['requests_sim']:>10}")
    for key, label in (("ttft_p95", "TTFT p95 (s)"),):
        live, sim = figures[f"{key}_live_s"], figures[f"{key}_sim_s"]
        print(
            f"{label:28} {live if live is None else round(live, 3)!s:>10} "
            f"{sim if sim is None else round(sim, 3)!s:>10}"
        )
    print(
        f"{'max desired replicas':28} {figures['replicas_live_max']:>10} "
        f"{figures['replicas_sim_max']:>10}"
    )
    print("desired replicas per second (live):", "".join(str(v) for v in figures["replicas_live"]))
    print("desired replicas per second (sim): ", "".join(str(v) for v in figures["replicas_sim"]))
    short = {k: v for k, v in figures.items() if not k.startswith("replicas_") or "diff" in k}
    print(orjson.dumps(short).decode())
    return 0 if figures["agree"] else 1


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
