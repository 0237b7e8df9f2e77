"""`oracle` and `static-peak`: clairvoyant schedules, the lower bound and the over-provisioner.

The oracle knows every future arrival and the cold start. It cuts time into buckets of
`bucket_s` and, for each bucket, finds the fewest Ready replicas with which the requests arriving
in it meet the TTFT SLO at `target` attainment (at least): a search over replica counts, each
candidate judged by simulating the bucket's arrivals — with the `warmup_s` before it, so the
backlog it inherits is there — on that many warm pods with the same engine and gateway model.
Short dips are filled where keeping a replica costs less GPU time than re-loading it (a gap no
longer than the model-load time), then the schedule is played for real: each replica is
requested one model-load ahead of the bucket that needs it (nodes one boot earlier), so it is
Ready on time, and released when no bucket within one model-load needs it. Buckets that still
miss the target in the full run get one more replica and the schedule is replayed
(`refine_rounds`). GPU time paid by the oracle includes those loads, so it is what a perfect
autoscaler under the same cold start would pay: the lower bound the others are measured against.

`static-peak` holds the largest bucket count of the oracle's plan (before the full-run
refinement) for the whole run, pre-provisioned.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sim.engine import RequestRejected
from sim.evaluate.cluster import NodeMode
from sim.evaluate.ingress import Request
from sim.evaluate.pods import EngineFactory
from sim.evaluate.trace import TraceRequest
from surgescale.slo import Slo

if TYPE_CHECKING:
    from sim.evaluate.world import RunResult, Scenario, World


@dataclass(frozen=True, slots=True, kw_only=True)
class OracleConfig:
    bucket_s: float = 30.0
    warmup_s: float = 15.0
    target: float = 0.99
    """Attainment (within SLO, over the requests that can meet their deadline at all) each bucket
    must reach with the chosen replica count, and the whole run with the final schedule."""
    refine_rounds: int = 2
    """Rounds of bumping the buckets that missed in the full replay (each replays again)."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """Ready replicas wanted in each bucket [i * bucket_s, (i + 1) * bucket_s)."""

    bucket_s: float
    replicas: tuple[int, ...]

    def at(self, index: int) -> int:
        if 0 <= index < len(self.replicas):
            return self.replicas[index]
        return 0

    @property
    def peak(self) -> int:
        return max(self.replicas, default=0)


class _Judge:
    """Ends a trial run as soon as its verdict is known: too many misses, or every judged
    request decided (at its first token; at its completion when a TPOT objective is set)."""

    def __init__(
        self, *, start: float, slo: Slo, total: int, allowed_misses: int, skip: frozenset[str]
    ) -> None:
        self.start = start
        self.slo = slo
        self.pending = total
        self.allowed = allowed_misses
        self.skip = skip
        self.misses = 0
        self.world: World | None = None

    def on_enqueue(self, req: Request, now: float) -> None:
        pass

    def on_dispatch(self, req: Request, now: float) -> None:
        pass

    def _judged(self, req: Request) -> bool:
        return req.arrival >= self.start and self.world is not None and req.id not in self.skip

    def _count(self, met: bool) -> None:
        self.pending -= 1
        self.misses += not met
        if (self.misses > self.allowed or self.pending <= 0) and self.world is not None:
            self.world.stop_requested = True

    def on_first_token(self, req: Request, now: float) -> None:
        if self.slo.tpot_s is None and self._judged(req):
            self._count(now <= req.deadline)

    def on_complete(self, req: Request, now: float) -> None:
        if self._judged(req) and (self.slo.tpot_s is not None or req.first_token is None):
            self._count(
                self.slo.met(ttft_s=req.ttft, tpot_s=req.tpot, prompt_tokens=req.prompt_tokens)
            )


class Fixed:
    """A fixed replica count from t = 0, warm: the trial runs of the search and `static-peak`."""

    node_mode = NodeMode.STATIC

    def __init__(self, replicas: int, *, name: str = "static-peak", judge: _Judge | None = None):
        from sim.evaluate.world import Ingress

        self.name = name
        self.ingress = Ingress.GATEWAY
        self.replicas = replicas
        self.judge = judge

    def initial(self, scenario: Scenario) -> tuple[int, int | None]:
        return self.replicas, None

    def attach(self, world: World) -> None:
        if self.judge is not None:
            self.judge.world = world
            world.gateway.listeners.append(self.judge)


class Scheduled:
    """Plays a `Schedule`: replicas one model-load ahead, nodes one boot earlier still."""

    node_mode = NodeMode.STATIC

    def __init__(self, schedule: Schedule, *, name: str = "oracle") -> None:
        from sim.evaluate.world import Ingress

        self.name = name
        self.ingress = Ingress.GATEWAY
        self.schedule = schedule

    def _max_over(self, start: float, end: float) -> int:
        b = self.schedule.bucket_s
        first = max(math.floor(start / b + 1e-9), 0)
        last = math.floor(end / b + 1e-9)  # a bucket starting exactly at `end` counts
        return max((self.schedule.at(i) for i in range(first, last + 1)), default=0)

    def replicas_at(self, t: float, load_s: float) -> int:
        return self._max_over(t, t + load_s)

    def nodes_at(self, t: float, scenario: Scenario) -> int:
        wanted = self._max_over(t, t + scenario.model_load_s + scenario.node_boot_s)
        per_node = max(scenario.gpus_per_node // max(scenario.gpus_per_replica, 1), 1)
        return math.ceil(wanted / per_node)

    def initial(self, scenario: Scenario) -> tuple[int, int | None]:
        return self.replicas_at(0.0, scenario.model_load_s), self.nodes_at(0.0, scenario)

    def attach(self, world: World) -> None:
        sc = world.scenario
        self.world = world
        b = self.schedule.bucket_s
        times: set[float] = set()
        for i in range(len(self.schedule.replicas) + 1):
            start = i * b
            for t in (start, start - sc.model_load_s, start - sc.model_load_s - sc.node_boot_s):
                if t > 0:
                    times.add(round(t, 6))
        for t in sorted(times):
            world.clock.at(t, self._apply, None)

    def _apply(self, _: object) -> None:
        sc = self.world.scenario
        now = self.world.clock.now
        self.world.cluster.scale(self.replicas_at(now, sc.model_load_s), self.nodes_at(now, sc))


def _bucket_attainment(
    result: RunResult, *, bucket_s: float, slo: Slo, start: float, n: int, skip: frozenset[str]
) -> list[tuple[int, int]]:
    """(within SLO, judged) per bucket for requests arriving at or after `start`, leaving out
    the ids in `skip` (those that cannot meet their deadline at all)."""
    acc = [[0, 0] for _ in range(n)]
    for req in result.requests:
        if req.arrival < start or req.id in skip:
            continue
        i = int((req.arrival - start) // bucket_s)
        if i >= n:
            continue
        acc[i][1] += 1
        if slo.met(ttft_s=req.ttft, tpot_s=req.tpot, prompt_tokens=req.prompt_tokens):
            acc[i][0] += 1
    return [(a[0], a[1]) for a in acc]


def infeasible(scenario: Scenario, factory: EngineFactory) -> frozenset[int]:
    """Indices of the requests that cannot meet their TTFT deadline at all: alone on an idle warm
    replica their first token comes too late, or the engine refuses them (too long)."""
    late: dict[int, bool] = {}
    out = set()
    for index, req in enumerate(scenario.requests):
        tokens = req.prompt_tokens
        if tokens not in late:
            engine = factory(0)
            try:
                engine.add("probe", tokens, 2, 0.0)
            except RequestRejected:
                late[tokens] = True
            else:
                first = math.inf
                while first == math.inf:
                    nxt = engine.next_change_time()
                    if nxt is None:
                        break
                    for ev in engine.advance(nxt):
                        first = min(first, ev.time)
                late[tokens] = first > scenario.slo.ttft_budget(tokens)
        if late[tokens]:
            out.add(index)
    return frozenset(out)


def _ids(indices: frozenset[int], offset: int = 0) -> frozenset[str]:
    return frozenset(f"r{i - offset}" for i in indices)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Trial:
    """Does `replicas` warm replicas serve the bucket's requests at the target attainment?"""

    run: Callable[[Scenario, object], RunResult]
    scenario: Scenario
    offset: float
    """Start of the judged bucket inside the trial's scenario (after the warm-up)."""
    in_bucket: int
    """Requests of the bucket that can meet their deadline at all (the judged ones)."""
    skip: frozenset[str]
    target: float

    def ok(self, replicas: int) -> bool:
        allowed = math.floor((1.0 - self.target) * self.in_bucket + 1e-9)
        slo = self.scenario.slo
        judge = _Judge(
            start=self.offset,
            slo=slo,
            total=self.in_bucket,
            allowed_misses=allowed,
            skip=self.skip,
        )
        result = self.run(self.scenario, Fixed(replicas, name="oracle-trial", judge=judge))
        met, total = _bucket_attainment(
            result, bucket_s=math.inf, slo=slo, start=self.offset, n=1, skip=self.skip
        )[0]
        return total == 0 or met >= self.target * total


def fill_gaps(replicas: list[int], *, bucket_s: float, load_s: float) -> list[int]:
    """Keep a replica through a dip no longer than a model load (cheaper than re-loading it)."""
    out = list(replicas)
    max_gap = int(load_s // bucket_s)
    if max_gap <= 0:
        return out
    for level in range(1, max(out, default=0) + 1):
        last_high: int | None = None
        for i, r in enumerate(out):
            if r >= level:
                if last_high is not None and 0 < i - last_high - 1 <= max_gap:
                    for j in range(last_high + 1, i):
                        out[j] = max(out[j], level)
                last_high = i
    return out


def bucket_count(scenario: Scenario, config: OracleConfig) -> int:
    return int(scenario.duration_s // config.bucket_s) + 1


def plan_buckets(
    scenario: Scenario,
    *,
    first: int,
    stop: int,
    run: Callable[[Scenario, object], RunResult],
    config: OracleConfig,
    skip: frozenset[int] = frozenset(),
    bound: int | None = None,
) -> list[int]:
    """The fewest replicas meeting the target in each bucket of `range(first, stop)`, judged over
    the requests not in `skip` (indices of those that cannot meet their deadline at all), never
    above `bound` (default: the scenario's `max_replicas`).

    Independent of where the search starts (each answer is the smallest passing count), so
    ranges can be planned in parallel and joined.
    """
    cfg = config
    b = cfg.bucket_s
    reqs = scenario.requests
    limit = scenario.max_replicas if bound is None else bound
    budget = max((scenario.slo.ttft_budget(q.prompt_tokens) for q in reqs), default=0.0)
    if scenario.slo.tpot_s is not None:
        longest = max((q.output_tokens for q in reqs), default=0)
        budget += longest * scenario.slo.tpot_s
    chosen: list[int] = []
    lo_index = 0
    previous = 1
    for i in range(first, stop):
        start, end = i * b, (i + 1) * b
        warm_from = max(start - cfg.warmup_s, 0.0)
        while lo_index < len(reqs) and reqs[lo_index].arrival_s < warm_from:
            lo_index += 1
        window: list[TraceRequest] = []
        skipped: set[str] = set()
        j = lo_index
        in_bucket = 0
        while j < len(reqs) and reqs[j].arrival_s < end:
            q = reqs[j]
            if j in skip:
                skipped.add(f"r{len(window)}")
            elif q.arrival_s >= start:
                in_bucket += 1
            window.append(TraceRequest(q.arrival_s - warm_from, q.prompt_tokens, q.output_tokens))
            j += 1
        if in_bucket == 0:
            chosen.append(0)
            continue
        sub = replace(
            scenario,
            name=f"{scenario.name}-oracle-{i}",
            requests=tuple(window),
            tail_s=0.0,
            max_drain_s=budget + 0.5,
            sample_s=1e9,
        )
        ok = _Trial(
            run=run,
            scenario=sub,
            offset=start - warm_from,
            in_bucket=in_bucket,
            skip=frozenset(skipped),
            target=cfg.target,
        ).ok
        chosen.append(_smallest(ok, start=max(previous, 1), bound=max(limit, 1)))
        previous = chosen[-1]
    return chosen


def _smallest(ok: Callable[[int], bool], *, start: int, bound: int) -> int:
    """The smallest count in 1..bound that passes (bound when none does), searching from
    `start`: down one at a time, up by one then doubling, then bisecting."""
    r = min(start, bound)
    if ok(r):
        while r > 1 and ok(r - 1):
            r -= 1
        return r
    lo, hi = r, r + 1  # lo fails
    while hi < bound and not ok(hi):
        lo, hi = hi, min(2 * hi, bound)
    if hi >= bound:
        hi = bound
        if lo + 1 < hi and not ok(hi):
            return bound
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True, slots=True)
class Final:
    """The oracle's final schedule, its replay and whether that replay meets the target."""

    schedule: Schedule
    result: RunResult
    met: int
    judged: int
    meets_target: bool


def check(
    scenario: Scenario,
    schedule: Schedule,
    *,
    run: Callable[[Scenario, object], RunResult],
    config: OracleConfig,
    skip: frozenset[int],
) -> tuple[Final, list[tuple[int, int]]]:
    """Replay `schedule` and judge it over the requests that can meet their deadline at all."""
    ids = _ids(skip)
    n = len(schedule.replicas)
    result = run(scenario, Scheduled(schedule))
    per_bucket = _bucket_attainment(
        result, bucket_s=schedule.bucket_s, slo=scenario.slo, start=0.0, n=n, skip=ids
    )
    met = sum(m for m, _ in per_bucket)
    judged = sum(t for _, t in per_bucket)
    ok = judged == 0 or met >= config.target * judged
    return Final(schedule, result, met, judged, ok), per_bucket


def finalize(
    scenario: Scenario,
    chosen: list[int],
    *,
    run: Callable[[Scenario, object], RunResult],
    config: OracleConfig,
    skip: frozenset[int] = frozenset(),
) -> Final:
    """Fill short dips, play the schedule, bump the buckets that still missed, and replay the
    final schedule once more, so what is reported is exactly what was checked."""
    b = config.bucket_s
    load = scenario.model_load_s
    schedule = Schedule(b, tuple(fill_gaps(chosen, bucket_s=b, load_s=load)))
    final, per_bucket = check(scenario, schedule, run=run, config=config, skip=skip)
    for _ in range(config.refine_rounds):
        bumped = list(schedule.replicas)
        changed = False
        for i, (met, total) in enumerate(per_bucket):
            if total and met < config.target * total and bumped[i] < scenario.max_replicas:
                bumped[i] += 1
                changed = True
        if not changed:
            break
        schedule = Schedule(b, tuple(fill_gaps(bumped, bucket_s=b, load_s=load)))
        final, per_bucket = check(scenario, schedule, run=run, config=config, skip=skip)
    return final


def plan(
    scenario: Scenario,
    *,
    run: Callable[[Scenario, object], RunResult],
    config: OracleConfig | None = None,
    skip: frozenset[int] = frozenset(),
) -> Final:
    """The oracle's replica schedule for `scenario` (see the module docstring), planned in one
    process, and its checked replay."""
    cfg = config or OracleConfig()
    chosen = plan_buckets(
        scenario, first=0, stop=bucket_count(scenario, cfg), run=run, config=cfg, skip=skip
    )
    return finalize(scenario, chosen, run=run, config=cfg, skip=skip)
