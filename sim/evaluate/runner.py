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

from sim.evaluate.capacity import (
    capacity_buffer,
    capacity_none,
    capacity_placeholder,
    capacity_static,
)
from sim.evaluate.hpa_arms import (
    hpa_cpu,
    hpa_memory,
    keda_prometheus,
    keda_prometheus_1pod60s,
    keda_prometheus_service,
)
from sim.evaluate.kpa_arm import Kpa
from sim.evaluate.metrics import Burst, attainment_counts, find_bursts, summarize
from sim.evaluate.oracle import (
    Fixed,
    OracleConfig,
    Schedule,
    Scheduled,
    bucket_count,
    fill_gaps,
    finalize,
    infeasible,
    plan,
    plan_buckets,
)
from sim.evaluate.ours import Ours, ours_fifo, ours_variant
from sim.evaluate.pods import EngineFactory, engine_factory
from sim.evaluate.world import Autoscaler, RunResult, Scenario, World
from surgescale.stats import percentile

POLICIES: tuple[str, ...] = (
    "ours",
    "ours-fifo",
    "hpa-memory",
    "hpa-cpu",
    "keda-prometheus",
    "keda-prometheus-1pod60s",
    "keda-prometheus-service",
    "kpa",
    "static-peak",
    "oracle",
    "ours-capacity-static",
    "ours-capacity-none",
    "ours-capacity-placeholder",
    "ours-capacity-buffer",
)
DEFAULT_POLICIES: tuple[str, ...] = (
    "ours",
    "hpa-memory",
    "keda-prometheus",
    "kpa",
    "static-peak",
    "oracle",
)
TPOTCAP_FLOORS: tuple[int, ...] = (1, 4, 8, 16, 32, 64)
"""The floors of the `ours-tpotcap<N>` variants: the gateway caps each pod at the learned TPOT
concurrency, never below N (`OursConfig.pod_cap_floor`)."""
EXPERIMENTS: dict[str, Callable[[], Autoscaler]] = {
    **{
        f"ours-tpotcap{f}": ours_variant(f"ours-tpotcap{f}", pod_cap_floor=f)
        for f in TPOTCAP_FLOORS
    },
    **{f"ours-prefill{k}": ours_variant(f"ours-prefill{k}", prefill_limit=k) for k in (0, 1, 2, 4)},
    **{
        f"ours-prefill1-dec{n}": ours_variant(
            f"ours-prefill1-dec{n}", prefill_limit=1, prefill_min_decoding=n
        )
        for n in (1, 2, 4)
    },
    **{
        f"ours-prefilltok{b}": ours_variant(f"ours-prefilltok{b}", prefill_token_budget=b)
        for b in (8192, 16384)
    },
    "ours-tpotcap4-tok8192": ours_variant(
        "ours-tpotcap4-tok8192", pod_cap_floor=4, prefill_token_budget=8192
    ),
    "ours-tpotcap4-prefill1": ours_variant(
        "ours-tpotcap4-prefill1", pod_cap_floor=4, prefill_limit=1
    ),
}
"""Variants of `ours` measured for issue #14 and kept for the record (docs/evaluate.md, "The
gateway's per-pod cap from the TPOT objective"): accepted by `--policies`, not in `POLICIES`
(so not swept by the tests that run every policy)."""
_SIMPLE: dict[str, Callable[[], Autoscaler]] = {
    "ours": Ours,
    "ours-fifo": ours_fifo,
    **EXPERIMENTS,
    "hpa-memory": hpa_memory,
    "hpa-cpu": hpa_cpu,
    "keda-prometheus": keda_prometheus,
    "keda-prometheus-1pod60s": keda_prometheus_1pod60s,
    "keda-prometheus-service": keda_prometheus_service,
    "kpa": Kpa,
    "ours-capacity-static": capacity_static,
    "ours-capacity-none": capacity_none,
    "ours-capacity-placeholder": capacity_placeholder,
    "ours-capacity-buffer": capacity_buffer,
}
PROVISIONAL_BOUND = 256
"""The oracle's search bound while the default `--max-replicas` is being derived from its plan."""


class UnknownPolicyError(ValueError):
    """A policy name that is not in `POLICIES` or `EXPERIMENTS`."""


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
        if name not in POLICIES and name not in EXPERIMENTS:
            known = ", ".join([*POLICIES, *EXPERIMENTS])
            raise UnknownPolicyError(f"unknown policy {name!r}; known: {known}")
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


def _feasible_columns(result: RunResult, skip: frozenset[int]) -> dict[str, Any]:
    """Attainment over the requests that can meet their deadline at all (the oracle's target)."""
    ids = {f"r{i}" for i in skip}
    judged = [r for r in result.requests if r.id not in ids]
    met, _, _ = attainment_counts(judged, result.scenario.slo)
    return {
        "feasible_requests": len(judged),
        "feasible_attainment": met / len(judged) if judged else 1.0,
    }


def _run_named(
    scenario: Scenario,
    name: str,
    bursts: list[Burst],
    schedule: Schedule | None,
    skip: frozenset[int] = frozenset(),
) -> PolicyRun:
    if name in _SIMPLE:
        autoscaler: object = _SIMPLE[name]()
    elif name == "oracle":
        assert schedule is not None
        autoscaler = Scheduled(schedule)
    elif name == "static-peak":
        assert schedule is not None
        autoscaler = Fixed(min(max(schedule.peak, 1), scenario.max_replicas))
    else:
        raise UnknownPolicyError(name)
    cpu = time.process_time()
    result = run_one(scenario, autoscaler)
    summary = summarize(result, bursts, reactive=name in _SIMPLE)
    summary.update(_feasible_columns(result, skip))
    summary["max_replicas"] = scenario.max_replicas
    summary["cpu_s"] = time.process_time() - cpu
    return _series(result, summary)


def _runner(scenario: Scenario) -> Callable[[Scenario, object], RunResult]:
    factory = engine_factory(scenario.profile)
    return lambda sc, a: run_one(sc, a, factory)


def oracle_schedule(scenario: Scenario, config: OracleConfig | None = None) -> Schedule:
    """Plan the oracle's schedule for `scenario` in this process."""
    skip = infeasible(scenario, engine_factory(scenario.profile))
    return plan(scenario, run=_runner(scenario), config=config, skip=skip).schedule


def _plan_chunk(
    scenario: Scenario,
    first: int,
    stop: int,
    config: OracleConfig,
    skip: frozenset[int],
    bound: int,
) -> tuple[list[int], float]:
    cpu = time.process_time()
    chosen = plan_buckets(
        scenario,
        first=first,
        stop=stop,
        run=_runner(scenario),
        config=config,
        skip=skip,
        bound=bound,
    )
    return chosen, time.process_time() - cpu


def _planned(scenario: Scenario, chosen: list[int], config: OracleConfig) -> Schedule:
    """The planned schedule before the full-run refinement (static-peak's source)."""
    b = config.bucket_s
    return Schedule(b, tuple(fill_gaps(chosen, bucket_s=b, load_s=scenario.model_load_s)))


def initial_fleet(scenario: Scenario, chosen: list[int], config: OracleConfig) -> tuple[int, int]:
    """The Ready replicas and nodes every policy starts with: the oracle's own fleet at t = 0.

    The oracle plays its plan one model load ahead (nodes one boot earlier still), so at t = 0 it
    already holds what its first `model_load_s` of buckets want (`Scheduled.replicas_at(0,
    model_load_s)`), warm, on the nodes `Scheduled.nodes_at(0)` counts; a reactive policy given
    less (its first bucket alone) could not match that by any decision. Every policy starts
    from that same fleet (the planned one, before refinement); (1, 0) without a plan.
    """
    if not chosen:
        return 1, 0
    oracle = Scheduled(_planned(scenario, chosen, config))
    return oracle.replicas_at(0.0, scenario.model_load_s), oracle.nodes_at(0.0, scenario)


def _oracle_run(
    scenario: Scenario,
    chosen: list[int],
    bursts: list[Burst],
    config: OracleConfig,
    skip: frozenset[int],
) -> PolicyRun:
    """Refine the planned schedule; the checked replay of the final schedule is the oracle's run."""
    cpu = time.process_time()
    final = finalize(scenario, chosen, run=_runner(scenario), config=config, skip=skip)
    run = _series(final.result, summarize(final.result, bursts, reactive=False))
    run.summary.update(_feasible_columns(final.result, skip))
    run.summary["max_replicas"] = scenario.max_replicas
    run.summary["cpu_s"] = 0.0  # counted in planning_cpu_s
    run.summary["refine_cpu_s"] = time.process_time() - cpu
    run.summary["oracle_schedule"] = list(final.schedule.replicas)
    run.summary["oracle_meets_target"] = final.meets_target
    run.summary["oracle_plan"] = "schedule"
    run.summary["warm_floor_billed_gpu_hours"] = warm_floor(scenario, chosen, config)
    return run


def warm_floor(scenario: Scenario, chosen: Sequence[int], config: OracleConfig) -> float:
    """Billed GPU-hours if each bucket's planned replicas were there exactly for that bucket,
    packed on whole nodes, with no model load and no node boot paid: what the oracle's plan
    would cost with free cold starts (its distance to this is what cold starts cost it)."""
    per_node = max(scenario.gpus_per_node // max(scenario.gpus_per_replica, 1), 1)
    nodes = sum(math.ceil(c / per_node) for c in chosen)
    return nodes * scenario.gpus_per_node * config.bucket_s / 3600.0


def _static_peak_run(
    scenario: Scenario,
    chosen: list[int],
    bursts: list[Burst],
    config: OracleConfig,
    skip: frozenset[int],
) -> PolicyRun:
    schedule = _planned(scenario, chosen, config)
    run = _run_named(scenario, "static-peak", bursts, schedule, skip)
    run.summary["oracle_schedule"] = list(schedule.replicas)
    return run


def choose_oracle(oracle: PolicyRun, static: PolicyRun, target: float) -> PolicyRun:
    """The oracle's plan is the cheaper of its schedule and the constant peak (a constant plan is
    one of its candidates): the cheapest in billed GPU-hours among those meeting the target over
    the requests that can meet their deadline, else the one with the higher attainment."""
    o, s = oracle.summary, static.summary
    o_ok = o["feasible_attainment"] >= target - 1e-12
    s_ok = s["feasible_attainment"] >= target - 1e-12
    cheaper = s["billed_gpu_hours"] < o["billed_gpu_hours"]
    better = s["feasible_attainment"] > o["feasible_attainment"]
    take_static = (
        (s_ok and (not o_ok or cheaper))
        or (not o_ok and not s_ok and better)
        or (cheaper and s["feasible_attainment"] >= o["feasible_attainment"])
    )
    if not take_static:
        return oracle
    chosen = PolicyRun(
        summary={
            **s,
            "policy": "oracle",
            "oracle_plan": "static-peak",
            "oracle_meets_target": s_ok,
            "cpu_s": 0.0,
            "refine_cpu_s": o.get("refine_cpu_s", 0.0),
            "oracle_schedule_rejected": o.get("oracle_schedule"),
            "warm_floor_billed_gpu_hours": o.get("warm_floor_billed_gpu_hours"),
        },
        times=static.times,
        desired=static.desired,
        ready=static.ready,
        nodes=static.nodes,
        queue=static.queue,
        arrival_rate=static.arrival_rate,
        ttft_p95=static.ttft_p95,
    )
    return chosen


_CLAIRVOYANT = ("static-peak", "oracle")
_LONGEST_FIRST = tuple(name for name in (*POLICIES, *EXPERIMENTS) if name not in _CLAIRVOYANT)
"""The non-clairvoyant policies in the order their runs are scheduled (slowest first)."""


@dataclass(slots=True)
class Evaluation:
    scenario: Scenario
    runs: list[PolicyRun]
    bursts: list[Burst]
    wall_s: float
    planning_cpu_s: float = 0.0

    @property
    def simulated_s(self) -> float:
        return float(sum(r.summary["sim_s"] for r in self.runs))

    @property
    def cpu_s(self) -> float:
        """CPU seconds of all runs, the oracle's planning and refinement included."""
        total = sum(float(r.summary.get("cpu_s", 0.0)) for r in self.runs)
        refine = sum(float(r.summary.get("refine_cpu_s", 0.0)) for r in self.runs)
        return float(total + refine + self.planning_cpu_s)


def bound_from_plan(chosen: Sequence[int], *, min_replicas: int) -> int:
    """The default `--max-replicas`: twice the peak the oracle needs (at least 2, and at least
    `min_replicas`), so that no policy is held back by a bound it did not choose."""
    return max(2 * max(chosen, default=1), 2, min_replicas)


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
    derive_bound: bool = False,
    steady: bool = False,
) -> Evaluation:
    """Run every named policy on `scenario`; results in the order of `names`.

    With `derive_bound` the scenario's `max_replicas` is replaced by `bound_from_plan` of the
    oracle's plan (planned first under `PROVISIONAL_BOUND`); with `steady` every policy starts
    with the oracle's fleet at t = 0 Ready (`initial_fleet`). Then every policy runs under that bound. With
    `jobs > 1` the oracle's planning (split into ranges of buckets, which give the same answers
    as one pass) and the runs share a pool of worker processes.
    """
    wanted = check_names(names)
    cfg = oracle or OracleConfig()
    bursts = find_bursts(scenario.requests)
    clairvoyant = [n for n in wanted if n in ("oracle", "static-peak")]
    if "oracle" in wanted and "static-peak" not in clairvoyant:
        clairvoyant.append("static-peak")  # the oracle's constant candidate
    simple = sorted((n for n in wanted if n not in clairvoyant), key=_LONGEST_FIRST.index)
    need_plan = bool(clairvoyant) or derive_bound or steady
    n_buckets = bucket_count(scenario, cfg)
    started = time.perf_counter()
    cpu0 = time.process_time()
    skip = infeasible(scenario, engine_factory(scenario.profile)) if need_plan else frozenset()
    bound = PROVISIONAL_BOUND if derive_bound else scenario.max_replicas
    results: dict[str, PolicyRun] = {}
    planning_cpu = 0.0
    chosen: list[int] = []
    workers = max(jobs, 1)
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else _Inline() as pool:
        if need_plan:
            parts = [
                pool.submit(_plan_chunk, scenario, a, b, cfg, skip, bound)
                for a, b in _chunks(n_buckets, workers)
            ]
            for part in parts:
                got, part_cpu = part.result()
                chosen.extend(got)
                planning_cpu += part_cpu
        if derive_bound:
            scenario = replace(
                scenario, max_replicas=bound_from_plan(chosen, min_replicas=scenario.min_replicas)
            )
        if steady:
            first, nodes = initial_fleet(scenario, chosen, cfg)
            replicas = min(max(first, 1, scenario.min_replicas), scenario.max_replicas)
            scenario = replace(scenario, initial_replicas=replicas, initial_nodes=nodes)
        chosen = [min(c, scenario.max_replicas) for c in chosen]
        futures: dict[str, Future[PolicyRun]] = {}
        for name in simple[:1]:
            futures[name] = pool.submit(_run_named, scenario, name, bursts, None, skip)
        if "oracle" in clairvoyant:
            futures["oracle"] = pool.submit(_oracle_run, scenario, chosen, bursts, cfg, skip)
        if "static-peak" in clairvoyant:
            futures["static-peak"] = pool.submit(
                _static_peak_run, scenario, chosen, bursts, cfg, skip
            )
        for name in simple[1:]:
            futures[name] = pool.submit(_run_named, scenario, name, bursts, None, skip)
        for name, future in futures.items():
            results[name] = future.result()
    if "oracle" in results:
        results["oracle"] = choose_oracle(results["oracle"], results["static-peak"], cfg.target)
    wall = time.perf_counter() - started
    main_cpu = time.process_time() - cpu0
    if workers <= 1:  # everything ran here: the runs' own figures are inside main_cpu
        runs_cpu = sum(
            float(r.summary.get("cpu_s", 0.0)) + float(r.summary.get("refine_cpu_s", 0.0))
            for r in results.values()
        )
        planning_cpu = max(main_cpu - runs_cpu, 0.0)
    else:
        planning_cpu += main_cpu
    for run in results.values():
        run.summary["planning_cpu_s"] = (
            planning_cpu if run.summary["policy"] in ("oracle", "static-peak") else 0.0
        )
    return Evaluation(
        scenario=scenario,
        runs=[results[n] for n in wanted],
        bursts=bursts,
        wall_s=wall,
        planning_cpu_s=planning_cpu,
    )


class _Inline:
    """A stand-in for the process pool that runs each job at once in this process."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args))
        return future
