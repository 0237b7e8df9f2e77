"""Run policies on a scenario: the registry of policies, one run each, in parallel processes.

`POLICIES` names every policy the evaluator knows. `evaluate(scenario, names, jobs=...)` runs
them (the oracle's planning first where `oracle` or `static-peak` asks for it) and returns one
`PolicyRun` per policy: its summary row (`sim.evaluate.metrics`) and the time series the report
plots. Runs are independent and deterministic under the scenario's seed, so they can go to
worker processes (`jobs`); the results do not depend on how they were spread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from sim.evaluate.hpa import hpa_cpu, hpa_memory, keda_prometheus
from sim.evaluate.kpa import Kpa
from sim.evaluate.metrics import Burst, find_bursts, percentile, summarize
from sim.evaluate.oracle import (
    Fixed,
    OracleConfig,
    Schedule,
    Scheduled,
    bucket_count,
    fill_gaps,
    finalize,
    plan,
    plan_buckets,
)
from sim.evaluate.ours import Ours
from sim.evaluate.pods import EngineFactory, engine_factory
from sim.evaluate.world import Autoscaler, RunResult, Scenario, World

POLICIES: tuple[str, ...] = (
    "ours",
    "hpa-memory",
    "hpa-cpu",
    "keda-prometheus",
    "kpa",
    "static-peak",
    "oracle",
)
DEFAULT_POLICIES: tuple[str, ...] = (
    "ours",
    "hpa-memory",
    "keda-prometheus",
    "kpa",
    "static-peak",
    "oracle",
)
_SIMPLE: dict[str, Callable[[], Autoscaler]] = {
    "ours": Ours,
    "hpa-memory": hpa_memory,
    "hpa-cpu": hpa_cpu,
    "keda-prometheus": keda_prometheus,
    "kpa": Kpa,
}


class UnknownPolicyError(ValueError):
    """A policy name that is not in `POLICIES`."""


@dataclass(slots=True)
class PolicyRun:
    """One policy's figures and the series the report plots."""

    summary: dict[str, Any]
    times: list[float] = field(default_factory=list)
    desired: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)
    queue: list[int] = field(default_factory=list)
    arrival_rate: list[float] = field(default_factory=list)
    ttft_p95: list[float | None] = field(default_factory=list)


def check_names(names: Sequence[str]) -> list[str]:
    out = []
    for name in names:
        if name not in POLICIES:
            raise UnknownPolicyError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
        if name not in out:
            out.append(name)
    return out


def run_one(
    scenario: Scenario, autoscaler: object, factory: EngineFactory | None = None
) -> RunResult:
    """One run of one autoscaler (any object with the `Autoscaler` shape)."""
    engines = factory or engine_factory(scenario.profile)
    world = World(scenario, engine_factory=engines, autoscaler=autoscaler)  # type: ignore[arg-type]
    return world.run()


def _series(result: RunResult, summary: dict[str, Any]) -> PolicyRun:
    sc = result.scenario
    run = PolicyRun(summary=summary)
    step = sc.sample_s
    buckets: dict[int, list[float]] = {}
    for req in result.requests:
        buckets.setdefault(int(req.arrival // step), []).append(
            math.inf if req.ttft is None else req.ttft
        )
    for s in result.samples:
        run.times.append(s.t)
        run.desired.append(s.desired)
        run.ready.append(s.ready)
        run.nodes.append(s.nodes_ready + s.nodes_booting)
        run.queue.append(s.queue)
        run.arrival_rate.append(s.arrivals / step)
        values = sorted(buckets.get(int(s.t // step) - 1, []))
        p95 = percentile(values, 95) if values else None
        if values and p95 is None:
            p95 = math.inf
        run.ttft_p95.append(p95)
    return run


def _run_named(
    scenario: Scenario, name: str, bursts: list[Burst], schedule: Schedule | None
) -> PolicyRun:
    if name in _SIMPLE:
        autoscaler: object = _SIMPLE[name]()
    elif name == "oracle":
        assert schedule is not None
        autoscaler = Scheduled(schedule)
    elif name == "static-peak":
        assert schedule is not None
        autoscaler = Fixed(max(schedule.peak, 1))
    else:
        raise UnknownPolicyError(name)
    cpu = time.process_time()
    result = run_one(scenario, autoscaler)
    summary = summarize(result, bursts, reactive=name in _SIMPLE)
    summary["cpu_s"] = time.process_time() - cpu
    return _series(result, summary)


def _runner(scenario: Scenario) -> Callable[[Scenario, object], RunResult]:
    factory = engine_factory(scenario.profile)
    return lambda sc, a: run_one(sc, a, factory)


def oracle_schedule(scenario: Scenario, config: OracleConfig | None = None) -> Schedule:
    """Plan the oracle's schedule for `scenario` in this process."""
    return plan(scenario, run=_runner(scenario), config=config)[0]


def _plan_chunk(
    scenario: Scenario, first: int, stop: int, config: OracleConfig
) -> tuple[list[int], float]:
    cpu = time.process_time()
    chosen = plan_buckets(scenario, first=first, stop=stop, run=_runner(scenario), config=config)
    return chosen, time.process_time() - cpu


def _planned(scenario: Scenario, chosen: list[int], config: OracleConfig) -> Schedule:
    """The planned schedule before the full-run refinement (static-peak's source)."""
    b = config.bucket_s
    return Schedule(b, tuple(fill_gaps(chosen, bucket_s=b, load_s=scenario.model_load_s)))


def _oracle_run(
    scenario: Scenario,
    chosen: list[int],
    bursts: list[Burst],
    config: OracleConfig,
    planning_cpu: float,
) -> PolicyRun:
    """Refine the planned schedule; the last refinement replay is the oracle's run."""
    cpu = time.process_time()
    schedule, replay = finalize(scenario, chosen, run=_runner(scenario), config=config)
    planning_cpu += time.process_time() - cpu
    if replay is not None:
        run = _series(replay, summarize(replay, bursts, reactive=False))
        run.summary["cpu_s"] = 0.0  # counted in planning_cpu_s
    else:
        run = _run_named(scenario, "oracle", bursts, schedule)
    run.summary["planning_cpu_s"] = planning_cpu
    run.summary["oracle_schedule"] = list(schedule.replicas)
    return run


def _static_peak_run(
    scenario: Scenario, chosen: list[int], bursts: list[Burst], config: OracleConfig, cpu: float
) -> PolicyRun:
    schedule = _planned(scenario, chosen, config)
    run = _run_named(scenario, "static-peak", bursts, schedule)
    run.summary["planning_cpu_s"] = cpu
    run.summary["oracle_schedule"] = list(schedule.replicas)
    return run


_LONGEST_FIRST = ("ours", "hpa-memory", "hpa-cpu", "keda-prometheus", "kpa")


@dataclass(slots=True)
class Evaluation:
    scenario: Scenario
    runs: list[PolicyRun]
    bursts: list[Burst]
    wall_s: float

    @property
    def simulated_s(self) -> float:
        return float(sum(r.summary["sim_s"] for r in self.runs))

    @property
    def cpu_s(self) -> float:
        """CPU seconds of all runs, the oracle's planning counted once (the oracle's figure
        includes the planning ranges static-peak also reports)."""
        total = sum(r.summary.get("cpu_s", 0.0) for r in self.runs)
        planning = [float(r.summary.get("planning_cpu_s", 0.0)) for r in self.runs]
        return float(total + max(planning, default=0.0))


def steady_start(scenario: Scenario, config: OracleConfig | None = None) -> Scenario:
    """The scenario with `initial_replicas` set to what the first bucket needs (at least 1)."""
    cfg = config or OracleConfig()
    first = plan_buckets(scenario, first=0, stop=1, run=_runner(scenario), config=cfg)
    replicas = min(max(first[0] if first else 1, 1, scenario.min_replicas), scenario.max_replicas)
    return replace(scenario, initial_replicas=replicas)


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    parts = max(min(parts, n), 1)
    size = -(-n // parts)
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def evaluate(
    scenario: Scenario,
    names: Sequence[str],
    *,
    jobs: int = 1,
    oracle: OracleConfig | None = None,
) -> Evaluation:
    """Run every named policy on `scenario`; results in the order of `names`.

    With `jobs > 1` the runs and the oracle's planning (split into ranges of buckets, which
    give the same answers as one pass) share a pool of worker processes.
    """
    wanted = check_names(names)
    cfg = oracle or OracleConfig()
    bursts = find_bursts(scenario.requests)
    clairvoyant = [n for n in wanted if n in ("oracle", "static-peak")]
    simple = [n for n in wanted if n not in clairvoyant]
    n_buckets = bucket_count(scenario, cfg)
    started = time.perf_counter()
    results: dict[str, PolicyRun] = {}
    if jobs <= 1:
        if clairvoyant:
            chosen, planning_cpu = _plan_chunk(scenario, 0, n_buckets, cfg)
            if "oracle" in clairvoyant:
                results["oracle"] = _oracle_run(scenario, chosen, bursts, cfg, planning_cpu)
            if "static-peak" in clairvoyant:
                results["static-peak"] = _static_peak_run(
                    scenario, chosen, bursts, cfg, planning_cpu
                )
        for name in simple:
            results[name] = _run_named(scenario, name, bursts, None)
    else:
        ordered = sorted(simple, key=_LONGEST_FIRST.index)
        # The longest run first, then the planning ranges (the oracle's critical path), then the
        # oracle's refinement and static-peak as soon as the plan is known, then the rest.
        head, rest = (ordered[:1], ordered[1:]) if clairvoyant else (ordered, [])
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures: dict[str, Future[PolicyRun]] = {
                n: pool.submit(_run_named, scenario, n, bursts, None) for n in head
            }
            if clairvoyant:
                chunks = [
                    pool.submit(_plan_chunk, scenario, a, b, cfg)
                    for a, b in _chunks(n_buckets, jobs)
                ]
                joined: list[int] = []
                joined_cpu = 0.0
                for chunk in chunks:
                    part, part_cpu = chunk.result()
                    joined.extend(part)
                    joined_cpu += part_cpu
                if "oracle" in clairvoyant:
                    futures["oracle"] = pool.submit(
                        _oracle_run, scenario, joined, bursts, cfg, joined_cpu
                    )
                if "static-peak" in clairvoyant:
                    futures["static-peak"] = pool.submit(
                        _static_peak_run, scenario, joined, bursts, cfg, joined_cpu
                    )
            for name in rest:
                futures[name] = pool.submit(_run_named, scenario, name, bursts, None)
            for name, future in futures.items():
                results[name] = future.result()
    wall = time.perf_counter() - started
    return Evaluation(
        scenario=scenario, runs=[results[n] for n in wanted], bursts=bursts, wall_s=wall
    )
