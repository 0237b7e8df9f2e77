"""The pure scaling policy: `decide(observation, state, spec, now) -> (decision, state)`.

No I/O and no clock: `now` is an argument, so the live controller (`controller.loop`) and the
virtual-time evaluator (`sim.evaluate`) run this very function. Collecting the observation lives
in `controller.state`; writing the result lives in `controller.actuator`. Pure helpers beside it:
`controller.retention` (when to release a node), `controller.changepoint` (step detection, fed by
the state), `controller.concurrency` (a replica's concurrency from the TPOT objective),
`controller.forecast` (the arrival trend, fed by the state).

How a decision is made (all rates in requests per second):

- **Concurrency per replica** (`Decision.concurrency`): the observation's basis (learned from the
  TPOT objective, see `controller.concurrency`), else the spec's fixed `concurrency_per_replica`,
  else the engine's `max_num_seqs`.
- **Service rate.** `mu` is what one Ready replica completes per second at that concurrency
  (`controller.state` measures it while the replicas are full). Before any request has been
  observed it is the prior `concurrency / prior_request_seconds`.
- **TPOT limit** (`tpot_rate`, `Decision.tpot_rate`, with a TPOT objective and at least 4
  requests per Ready replica): `mu` is never above the rate per Ready replica now times
  objective / TPOT p95, over the target utilization, so sizing lands at TPOT p95 = objective.
  The learned concurrency extrapolates a TPOT-by-batch line; on 70B conv 4x it said 90-125 per
  replica (8.5 req/s) where 5 req/s already gave a TPOT p95 of 40 ms of 50, and four replicas
  met a climb to 31 req/s. The rate (not the batch) is scaled: the TPOT intercept (decode at a
  small batch, the prefills of the arrivals) is large, and a batch-proportional bound fell with
  every replica added. The rate moves by the prefill-stall model (`tpot_scale`:
  `(1 - base/objective) / (1 - base/p95)`, `base` a token's time alone), not by objective /
  p95: on a burst of long prompts the p95 read ten times the objective and the proportional
  scale asked for ten times the Ready replicas whatever the rate (70B code 1x bought the
  bound, Ready after the burst). A scale-up it drives is `TpotLimit`.
- **Prefill-stall limit** (`prefill_stall_rate`, `Decision.stall_rate`, with a TPOT objective,
  while the TPOT limit cannot judge: fewer than 4 requests per Ready replica): `mu` is never
  above the arrival rate per replica at which prefills stretch TPOT to the objective
  (`controller.stall`, from the measured prefill rate, mean prompt and a token's time alone).
  On 70B code the replicas hold one or two requests each, Little's law on their in-pod time
  says hundreds of requests/s and the learned concurrency flips between 256 and 1 (its bins
  carry the stalls); the stall model says ~4.4/s. A scale-up it drives is `PrefillStall`.
- **Arrival rate for sizing.** The long-window rate unless the short window exceeds it by more
  than Poisson noise: `max(long, short - arrival_noise_z * sqrt(short / w))`, and at least the
  rate of a step the change detector has just declared certain (`arrival_step_rate`), so a step
  is answered before a queue forms. `arrival_noise_z` is 3.5: the short window is read every
  evaluation, and at 2 standard deviations a steady 18 req/s crossed it within minutes (one
  replica up, then down again); real steps are the change detector's job.
- **Burst rate** (`burst_sizing`, `Decision.burst_factor`, while the TPOT limit does not judge):
  the sized and sustained rates are at least the long-window rate times the burst factor
  (`Observation.burst_factor`, above `min_burst_factor` 1.5, which the headroom covers, and at
  most `max_burst_factor`): over the recent arrivals, the
  short-window rate each arrived into over the long-window rate (`controller.state`; about 1
  for a Poisson stream). The capacities sized with (the prefill-stall rate, Little's law) are a
  replica's at a smooth rate; 70B code traffic comes in bursts of seconds that its arrivals meet
  at 2.5-3.6x the long-window rate, and on the average alone the start's 6 nodes went at
  ~480 s, 90 s before a burst that found 4 replicas. Where the replicas run batches their own
  TPOT p95 has seen the bursts (the TPOT limit), and the factor is not applied again. A
  scale-up it drives is `BurstRate`; nodes are bought (the long-window rate times the factor)
  and kept for it like for any sustained rate.
- **Trend.** The sustained rate is also grown along the certain part of the arrival trend
  (`controller.forecast`: slope less `trend_z` standard errors) for one reacquire time, at most
  doubled (`forecast_rate`, `Decision.forecast_rate`): a node asked for now serves only then.
  A scale-up it drives is `TrendUp`.
- **Headroom** (`headroom`, `Decision.headroom_rate`, node billing only): the fleet is sized
  for the sustained rate times `1 + rate_headroom` (0.5), while no replica is starting. A node
  asked for now serves one reacquire time later (4 minutes for 70B TP4); a climb inside that
  time is served only by capacity already there, and nothing in the arrivals before a climb says
  it comes. While capacity is on its way the headroom is not piled onto the rate it was bought
  for (at a climb's top that bought a node Ready after the load fell). A prior, not learned: the numbers behind 0.5 and what else was tried are in docs/evaluate.md. A
  scale-up it drives is `Headroom`. With `Billing.GPU` there is none (today's behaviour).
- **Need.** `ceil(arrival / (mu * target_utilization) + queue_unexplained / (mu * horizon))`.
  The drain horizon is when new capacity can actually arrive: `max(ttft_slo, cold_start)`, plus
  the node boot when the replicas asked for do not fit on the nodes there are
  (`drain_horizon_s` overrides it). Sizing to drain a queue within the TTFT SLO buys replicas
  that arrive a cold start later, when those requests are long late.
- **No double counting.** Starting replicas are part of the Deployment's count, so the target is
  compared with the current desired count. The queue that piles up while they start is
  *expected* (`expected_queue`, a fluid model reset at each scale-up); only the rest asks for more.
- **Scale up at once**, to `need` clamped to `[min_replicas, max_replicas]`; never below the
  replicas that hold what is in flight (`in_flight_floor`, `Decision.in_flight_floor`): at the
  spec's fixed concurrency, else at the gateway's per-pod cap (else `max_num_seqs`), not at a
  concurrency learned from TPOT (see `in_flight_floor`). A scale-up it drives is `InFlight`.
- **Billing.** With `Billing.GPU` (GPUs shared with other workloads, each GPU-second billed):
  scale down to the highest recommendation of the last `scale_down_delay_s`, at most
  `scale_down_max_step` replicas per `scale_down_period_s`, never while the TTFT (or TPOT) p95
  is above its SLO. With `Billing.NODE` (the default: a node is billed whole) a replica on a GPU
  of a node that stays anyway is free, so the decided nodes are *filled* with replicas (up to
  `max_replicas`), and replicas go only with a node. A node demand no longer needs is kept for
  `keep_node_s`, learned from how long demand stayed away before (`controller.retention`: keep
  it while that costs less than a cold start plus node boot is expected to lose), each idle node
  level from its own gaps with `keep_per_level` (`controller.levelkeep`), then released (with
  `node_release_step`, at most that many nodes per reacquire time, `release_period_s`: a
  release acts on a need estimate that can be far off; both off by default, see
  docs/evaluate.md), never while latency is above its SLO. With `burst_keep` (default on),
  while the arrivals are bursty and latency broke its objective within the keep horizon, the
  held nodes a burst asked for (the recommendation: short window, step, in-flight floor) are
  kept for as long as the gaps between such bursts say (`KeepNode`'s detail names them): they
  never enter the sustained need the keep learns from. A new node is bought only
  when past bursts that lasted as long as the one going on mostly outlasted a node boot plus a
  cold start (`DeferNode` otherwise, with `defer_short_bursts`): a node that arrives after the
  burst serves nobody, and the replicas on the kept nodes take the burst meanwhile (so never
  while the TTFT or TPOT p95 says they do not). New nodes are bought only for what the
  long-window rate needs (`controller.persistence`, `ShortBurst` when that holds them): a 2 s
  window says nothing about the rate a reacquire time ahead. With `keep_from_ready` (off
  by default, see docs/evaluate.md) a node is kept at least a reacquire time from when it
  became Ready: demand that fell while it booted was never served by it.
- **Scale to zero** (only with `min_replicas == 0`) after `scale_to_zero_idle_s` with no queue,
  nothing in flight and no enqueue; until then at least one replica. **Instant wake**: a
  queued request or a recent enqueue at zero replicas asks for a replica on the same evaluation.
- **Nodes** = `ceil((replicas + headroom_replicas) * gpus_per_replica / gpus_per_node)`.
- **Cannot decide** (`has_data` false, or data older than `stale_after_s`) is a `Decision` with
  `valid=False` that holds the current size: no scale-up, and never a scale-down.

`Decision.reason` is a `Reason` (an enum) and `Decision.detail` the numbers behind it.
"""

from __future__ import annotations

import functools
import math

from controller.levelkeep import kept_nodes
from controller.persistence import sustained_rate
from controller.policy_types import (
    Billing,
    Decision,
    Observation,
    PolicySpec,
    PolicyState,
    Reason,
)
from controller.retention import keep_seconds, worth_buying

__all__ = [
    "Billing",
    "Decision",
    "Observation",
    "PolicySpec",
    "PolicyState",
    "Reason",
    "burst_factor",
    "concurrency",
    "decide",
    "forecast_rate",
    "headroom",
    "in_flight_floor",
    "nodes_for",
    "prefill_stall_rate",
    "release_period_s",
    "release_to",
    "replicas_on",
    "service_rate",
    "sizing_arrival",
    "tpot_rate",
    "tpot_scale",
]


_UP_DETAIL = "\x00up"
"""Placeholder for a scale-up's detail, formatted only when it is the decision's."""

_MAX_GAP_S = 60.0
"""A longer gap between evaluations resets the expected-queue model to the observed queue."""


def nodes_for(replicas: int, spec: PolicySpec) -> int:
    """GPU nodes needed for `replicas` plus the headroom replicas."""
    if replicas <= 0 and spec.headroom_replicas <= 0:
        return 0
    gpus = (max(replicas, 0) + max(spec.headroom_replicas, 0)) * spec.gpus_per_replica
    return math.ceil(gpus / max(spec.gpus_per_node, 1))


def replicas_on(nodes: int, spec: PolicySpec) -> int:
    """Replicas that fit on `nodes` nodes beside the headroom replicas (node filling)."""
    gpus = max(nodes, 0) * max(spec.gpus_per_node, 1)
    return max(gpus // max(spec.gpus_per_replica, 1) - max(spec.headroom_replicas, 0), 0)


def concurrency(observation: Observation, spec: PolicySpec) -> int:
    """The per-replica concurrency basis: the observation's, else the spec's; never above the
    gateway's per-pod cap (a replica gets no more than the gateway sends it)."""
    if observation.concurrency_per_replica is not None and observation.concurrency_per_replica > 0:
        value = observation.concurrency_per_replica
    elif spec.concurrency_per_replica is not None and spec.concurrency_per_replica > 0:
        value = spec.concurrency_per_replica
    else:
        value = max(spec.max_num_seqs, 1)
    cap = observation.pod_cap
    return min(value, cap) if cap is not None and cap > 0 else value


def service_rate(observation: Observation, spec: PolicySpec) -> float:
    """The observed per-replica service rate, or the prior before one is known."""
    observed = observation.service_rate_per_replica
    if observed is not None and observed > 0 and math.isfinite(observed):
        return observed
    return concurrency(observation, spec) / max(spec.prior_request_seconds, 1e-3)


def sizing_arrival(observation: Observation, spec: PolicySpec, *, step: bool = True) -> float:
    """The arrival rate the fleet is sized for: the short-window rate where it exceeds the
    long-window rate by more than Poisson noise, else the long-window rate; at least a step's
    (unless `step` is False: the sustained rate)."""
    short = max(observation.arrival_rate_short, 0.0)
    step_rate = (observation.arrival_step_rate or 0.0) if step else 0.0
    window = observation.arrival_short_window_s
    if window is None or window <= 0 or spec.arrival_noise_z <= 0:
        return max(short, step_rate)
    long = max(observation.arrival_rate_long, 0.0)
    lower = short - spec.arrival_noise_z * math.sqrt(short / window)
    return max(long, lower, step_rate, 0.0)


def forecast_rate(observation: Observation, spec: PolicySpec, base: float) -> float | None:
    """`base` grown along the certain part of the arrival trend for one reacquire time (at most
    doubled); None when there is no certain upward trend."""
    slope, stderr = observation.arrival_trend, observation.arrival_trend_stderr
    if spec.trend_z is None or slope is None or stderr is None or base <= 0:
        return None
    certain = slope - max(spec.trend_z, 0.0) * stderr
    if not certain > 0:
        return None
    return base + min(certain * reacquire_s(spec), base)


def prefill_stall_rate(observation: Observation, spec: PolicySpec) -> float | None:
    """The per-replica rate at which prefill stalls bring TPOT to the objective
    (`controller.stall`, measured by `controller.state`), when the spec sizes by it and a
    TPOT objective is set; None otherwise."""
    rate = observation.stall_rate_per_replica
    if not spec.prefill_stall_limit or spec.tpot_slo_s is None or rate is None:
        return None
    return rate if rate > 0 and math.isfinite(rate) else None


def burst_factor(observation: Observation, spec: PolicySpec) -> float | None:
    """The factor the long-window rate is grown by to the rate the arrivals met
    (`burst_sizing`), above `min_burst_factor` (at least 1) and at most `max_burst_factor`;
    None when it does not apply."""
    k = observation.burst_factor
    floor = max(spec.min_burst_factor, 1.0)
    if not spec.burst_sizing or k is None or not math.isfinite(k) or k <= floor:
        return None
    return min(k, max(spec.max_burst_factor, 1.0))


def tpot_rate(observation: Observation, spec: PolicySpec, rate: float) -> float | None:
    """The per-replica rate the TPOT objective allows: `rate` per Ready replica times objective
    / TPOT p95, divided by the target utilization (so that sizing with it lands at TPOT p95 =
    objective, not below); None without a TPOT objective, a TPOT p95 or a batch of at least
    `_MIN_TPOT_BATCH` per Ready replica to judge by."""
    obs = observation
    if not spec.tpot_limit or spec.tpot_slo_s is None or obs.tpot_p95_s is None:
        return None
    if obs.tpot_p95_s <= 0 or obs.ready_replicas <= 0:
        return None
    if max(obs.in_flight, 0) / obs.ready_replicas < _MIN_TPOT_BATCH:
        return None
    util = min(max(spec.target_utilization, 0.05), 1.0)
    per_replica = max(rate, 0.0) / obs.ready_replicas
    return per_replica * tpot_scale(obs, spec) / util


def tpot_scale(observation: Observation, spec: PolicySpec) -> float:
    """How far the rate per Ready replica may move for TPOT p95 to land at the objective `T`.

    Proportional, `T / p95`, unless the spec scales by the prefill-stall model
    (`tpot_limit_stall`) and a token's time alone (`base`, `Observation.tpot_base_s`) is known
    and below both: a token stretched by prefills takes `base / (1 - f)`, `f` the prefill
    share, which grows with the rate, so the rate moves by `(1 - base / T) / (1 - base / p95)`.
    The two agree at `p95 = T`; far above it the proportional scale asks for `p95 / T` times
    the replicas (ten times at 500 ms), the stall model for at most `1 / (1 - base / T)`
    (1.6 times at 18 ms of 50). 1 without a TPOT objective or p95."""
    obs = observation
    objective, p95 = spec.tpot_slo_s, obs.tpot_p95_s
    if objective is None or p95 is None or p95 <= 0:
        return 1.0
    base = obs.tpot_base_s
    if spec.tpot_limit_stall and base is not None and 0 < base < min(objective, p95):
        return (1.0 - base / objective) / (1.0 - base / p95)
    return objective / p95


_MIN_TPOT_BATCH = 4.0


def in_flight_floor(observation: Observation, spec: PolicySpec, conc: int) -> int:
    """Replicas that hold the requests in flight now: at the spec's fixed concurrency (the
    operator said a replica serves that many), else at what the gateway lets a replica run
    (its per-pod cap, else `max_num_seqs`), never less than `conc`.

    Not at a concurrency learned from the TPOT objective: that is a judgement about the rate a
    replica sustains (the service rate and the TPOT limit size for it), and on a burst of long
    prompts it falls to 1-5 (the prefills stall decode at any batch). The requests in flight
    are already running on the Ready replicas and end long before a replica asked for now is
    Ready; at the learned value the floor asked for the bound (116 replicas) at the first burst
    of 70B code 4x and billed 89.64 GPU-h (2.14x the oracle) for the same 86.97 % within SLO."""
    in_flight = max(observation.in_flight, 0)
    fixed = spec.concurrency_per_replica
    if fixed is not None and fixed > 0:
        return math.ceil(in_flight / max(conc, 1))
    cap = observation.pod_cap
    hold = cap if cap is not None and cap > 0 else spec.max_num_seqs
    return math.ceil(in_flight / max(conc, hold, 1))


"""Fewer requests per replica say nothing about where TPOT crosses the objective."""


def headroom(rate: float, spec: PolicySpec) -> float | None:
    """The rate the fleet is sized for with the headroom: `rate * (1 + rate_headroom)` under
    node billing; None under GPU billing, with no headroom or at rate 0."""
    if spec.billing is not Billing.NODE or spec.rate_headroom <= 0 or rate <= 0:
        return None
    return rate * (1.0 + spec.rate_headroom)


def release_to(current_nodes: int, kept: int, spec: PolicySpec) -> int:
    """The nodes a release leaves: the kept ones, but at most `node_release_step` fewer than
    `current_nodes` (0: the kept ones at once)."""
    kept = max(kept, 0)
    step = spec.node_release_step
    if step <= 0:
        return kept
    return min(max(kept, current_nodes - step), current_nodes)


def release_period_s(spec: PolicySpec) -> float:
    """Seconds between two node releases: `node_release_period_s`, by default a reacquire time
    (node boot + cold start), so that a release misjudged is seen, and the node it gave back
    could be Ready again, before the next goes."""
    period = spec.node_release_period_s
    return reacquire_s(spec) if period is None else max(period, 0.0)


def reacquire_s(spec: PolicySpec) -> float:
    """Seconds from asking for a node to a Ready replica on it."""
    return max(spec.cold_start_s, 0.0) + max(spec.node_boot_s, 0.0)


def _need(arrival: float, queue: float, mu: float, util: float, horizon: float) -> int:
    raw = arrival / (mu * util) + queue / (mu * max(horizon, 1e-3))
    return math.ceil(raw - 1e-9) if raw > 0 else 0


def _hold(state: PolicyState, reason: Reason, detail: str) -> tuple[Decision, PolicyState]:
    nodes = state.nodes if state.nodes >= 0 else 0
    decision = Decision(
        valid=False, replicas=state.replicas, nodes=nodes, reason=reason, detail=detail
    )
    return decision, state


def _push_window(
    window: tuple[tuple[float, int], ...], now: float, value: int, horizon: float
) -> tuple[tuple[float, int], ...]:
    kept = [(t, v) for t, v in window if t > now - horizon and v > value]
    kept.append((now, value))
    return tuple(kept)


def _window_max(window: tuple[tuple[float, int], ...], since: float) -> int:
    return max((v for t, v in window if t >= since), default=0)


def decide(
    observation: Observation, state: PolicyState, spec: PolicySpec, now: float
) -> tuple[Decision, PolicyState]:
    """Decide the replicas and nodes for one model; see the module docstring for the rules."""
    obs = observation
    if not obs.has_data:
        return _hold(state, Reason.NO_DATA, "no events yet")
    age = now - obs.now_data
    if age > spec.stale_after_s:
        return _hold(state, Reason.STALE_DATA, f"data {age:.1f}s old")

    conc = concurrency(obs, spec)
    mu = service_rate(obs, spec)
    current = state.replicas
    current_nodes = state.nodes if state.nodes >= 0 else nodes_for(current, spec)
    queue = max(obs.queue_depth, 0)
    in_flight = max(obs.in_flight, 0)
    arrival = max(obs.arrival_rate_short, 0.0)
    sizing = sizing_arrival(obs, spec)
    sustained = sizing_arrival(obs, spec, step=False)
    limit = tpot_rate(obs, spec, sustained)
    # the prefill-stall model where the replicas run too few requests for their TPOT to judge
    stall = prefill_stall_rate(obs, spec) if limit is None else None
    if stall is not None and stall < mu:
        mu = stall
    else:
        stall = None
    if limit is not None and limit < mu:
        mu = limit
    else:
        limit = None
    # load that comes in bursts of seconds meets the replicas faster than its long-window
    # rate; not where their own TPOT p95 has judged the bursts they met (the TPOT limit)
    bursty = burst_factor(obs, spec)
    burst = bursty if limit is None else None
    long_rate = max(obs.arrival_rate_long, 0.0)
    burst_up = False
    if burst is not None:
        long_rate *= burst
        burst_up = long_rate > sustained
        sizing, sustained = max(sizing, long_rate), max(sustained, long_rate)

    # Expected backlog: grows while capacity is short (e.g. during a cold start), decays after.
    dt = 0.0 if state.last_now is None else now - state.last_now
    if dt < 0 or dt > _MAX_GAP_S:
        expected = float(queue)
    elif obs.starting_replicas > 0 or state.expected_queue > 0:
        drift = arrival - mu * max(obs.ready_replicas, 0)
        expected = min(max(state.expected_queue + drift * dt, 0.0), float(queue))
    else:
        expected = 0.0  # no capacity on its way: all of the queue is unserved demand
    unexplained = max(queue - expected, 0.0)

    util = min(max(spec.target_utilization, 0.05), 1.0)
    slo = max(spec.ttft_slo_s, 1e-3)
    room = max(replicas_on(current_nodes, spec), current)

    def sized(rate: float) -> tuple[int, float]:
        if spec.drain_horizon_s is not None:
            horizon = max(spec.drain_horizon_s, slo)
            return _need(rate, unexplained, mu, util, horizon), horizon
        horizon = max(slo, spec.cold_start_s)
        need = _need(rate, unexplained, mu, util, horizon)
        if need <= room:
            return need, horizon
        # the replicas beyond the room on today's nodes wait for a node boot too
        horizon = max(slo, reacquire_s(spec))
        return max(_need(rate, unexplained, mu, util, horizon), room), horizon

    def ladder(base: float) -> tuple[int, float, float | None, float | None, bool, bool]:
        need, horizon = sized(base)
        # spare capacity for a climb before new capacity could come; while capacity is on its
        # way the headroom is not piled onto the rate it was bought for (at a climb's top that
        # bought a node Ready after the load fell)
        padded_rate = headroom(base, spec) if obs.starting_replicas <= 0 else None
        padded_up = ahead_up = False
        if padded_rate is not None:
            padded, padded_horizon = sized(padded_rate)
            if padded > need:
                need, horizon, padded_up = padded, padded_horizon, True
        ahead_rate = forecast_rate(obs, spec, base)
        if ahead_rate is not None:
            ahead, ahead_horizon = sized(ahead_rate)
            if ahead > need:
                need, horizon, ahead_up, padded_up = ahead, ahead_horizon, True, False
        return need, horizon, padded_rate, ahead_rate, ahead_up, padded_up

    need, horizon, headroom_rate, forecast, trend_up, headroom_up = ladder(sustained)
    # new nodes serve a reacquire time from now: bought for the rate that lasted (persistence)
    buy_rate = sustained_rate(long_rate, sustained, spec)
    buy_need = need if buy_rate >= sustained else ladder(buy_rate)[0]
    sustained_need = need
    if sizing > sustained:
        # A step just detected says nothing yet about how long it lasts: it fills the room on
        # today's nodes, and buys new nodes (useful only a boot and a cold start later) only
        # once the rate windows show it is sustained.
        need = max(need, min(sized(sizing)[0], room))
    in_flight_need = in_flight_floor(obs, spec, conc)

    # Idle tracking for scale to zero and instant wake.
    busy_at = state.busy_at if state.busy_at is not None else now
    if queue > 0 or in_flight > 0:
        busy_at = now
    if obs.last_enqueue_at is not None and obs.last_enqueue_at > busy_at:
        busy_at = min(obs.last_enqueue_at, now)
    idle_for = now - busy_at
    can_zero = spec.min_replicas <= 0 and spec.scale_to_zero_idle_s is not None
    idle = (
        can_zero and spec.scale_to_zero_idle_s is not None and idle_for >= spec.scale_to_zero_idle_s
    )
    floor = max(spec.min_replicas, in_flight_need)
    if idle:
        need = sustained_need = 0  # no enqueue for the idle period: the rate windows are past
    else:
        floor = max(floor, 1)
    recommended = min(max(need, floor), spec.max_replicas)
    recommended = max(recommended, min(spec.min_replicas, spec.max_replicas))

    delay = max(spec.scale_down_delay_s, 0.0)
    window = state.window
    node_window = state.node_window
    if state.last_now is None:  # a fresh controller waits a full delay before going down
        window = ((now, current),)
        node_window = ((now, current_nodes),)
    window = _push_window(window, now, recommended, delay)
    stabilized = max(v for _, v in window)
    # Nodes are kept for sustained demand: a step's extra replicas use the room there is.
    sustained_rec = min(max(sustained_need, floor, spec.min_replicas), spec.max_replicas)
    nodes_needed = nodes_for(min(recommended, sustained_rec), spec)
    buy_nodes = nodes_for(min(max(buy_need, floor, spec.min_replicas), spec.max_replicas), spec)
    keep_horizon = max(spec.max_keep_node_s, 0.0)
    ready_nodes = max(obs.ready_nodes, 0)
    arrived = state.arrived
    if spec.keep_from_ready and ready_nodes > state.ready_nodes:
        arrived = (now, ready_nodes)  # nodes that just came: kept a reacquire time from here
    node_window = _push_window(node_window, now, nodes_needed, keep_horizon)
    # a fleet whose bursts breached latency within the keep horizon keeps what they ask for
    breach_at = now if _slo_breached(obs, spec) else state.breach_at
    burst_window, burst_gaps = state.burst_window, state.burst_gaps
    if (
        spec.burst_keep
        and spec.billing is Billing.NODE
        and bursty is not None
        and breach_at is not None
        and now - breach_at <= keep_horizon
    ):
        burst_nodes = nodes_for(recommended, spec)
        burst_window = _push_window(burst_window, now, burst_nodes, keep_horizon)
        burst_gaps = burst_gaps.update(min(burst_nodes, current_nodes), now)
    gaps = state.gaps.update(nodes_needed, now)
    level_gaps = (  # read only with keep_per_level: not folded on every evaluation otherwise
        state.level_gaps.update(nodes_needed, current_nodes, now, min_gap_s=reacquire_s(spec))
        if spec.keep_per_level
        else state.level_gaps
    )
    bursts = state.bursts.update(min(recommended, sustained_rec), now)

    step_up = obs.arrival_step_rate is not None and obs.arrival_step_rate >= sizing - 1e-9
    if step_up:
        up_reason = Reason.STEP_UP
    elif trend_up:
        up_reason = Reason.TREND_UP
    elif headroom_up:
        up_reason = Reason.HEADROOM
    elif in_flight_need > need:
        up_reason = Reason.IN_FLIGHT
    elif burst_up:
        up_reason = Reason.BURST_RATE
    elif limit is not None:
        up_reason = Reason.TPOT_LIMIT
    elif stall is not None:
        up_reason = Reason.PREFILL_STALL
    else:
        up_reason = Reason.SCALE_UP
    up_detail = _UP_DETAIL  # formatted below, only when the decision is a scale-up
    last_down_at = state.last_down_at
    keep_s: float | None = None
    breached = _slo_breached(obs, spec)
    rate_limited = last_down_at is not None and now - last_down_at < spec.scale_down_period_s
    target_nodes: int | None = None
    capped = False  # fewer nodes bought than wanted (persistence): no replicas beyond them
    if spec.billing is Billing.NODE:
        penalty = spec.release_penalty_s
        keep_args = {
            "reacquire_s": reacquire_s(spec),
            "penalty_s": 2 * reacquire_s(spec) if penalty is None else penalty,
            "max_keep_s": keep_horizon,
        }
        keep_s = keep_seconds(gaps.gaps, **keep_args)
        kept = max(_window_max(node_window, now - keep_s), nodes_needed)
        burst_kept, hold_s = 0, keep_s
        if spec.burst_keep and burst_window:
            # rent or buy over the gaps between bursts (those a keep could cover: longer than
            # a reacquire time), not over the need's flicker between them
            hold_s = keep_seconds(
                tuple(g for g in burst_gaps.gaps if g > reacquire_s(spec)), **keep_args
            )
            burst_kept = min(_window_max(burst_window, now - hold_s), current_nodes)
            kept = max(kept, burst_kept)
        if spec.keep_per_level:
            held, keep_s = kept_nodes(
                level_gaps,
                held=current_nodes,
                now=now,
                keep=functools.partial(keep_seconds, **keep_args),
                fleet_keep_s=keep_s,
            )
            kept = max(held, nodes_needed)
        if arrived is not None and now - arrived[0] < reacquire_s(spec):
            kept = max(kept, arrived[1])
        if idle and current > 0:
            target_nodes, reason = 0, Reason.SCALE_TO_ZERO
            detail = f"idle {idle_for:.0f}s"
        elif nodes_needed > current_nodes and buy_nodes <= current_nodes:
            target_nodes, reason = current_nodes, Reason.SHORT_BURST
            detail = (
                f"{nodes_needed} node(s) wanted for {sustained:.2f}/s; "
                f"{obs.arrival_rate_long:.2f}/s over the long window needs {buy_nodes}"
            )
        elif (
            nodes_needed > current_nodes
            and spec.defer_short_bursts
            and not breached
            and not worth_buying(
                bursts.durations,
                age=bursts.age(replicas_on(current_nodes, spec) + 1, now),
                reacquire_s=reacquire_s(spec),
            )
        ):
            target_nodes, reason = current_nodes, Reason.DEFER_NODE
            detail = f"{nodes_needed} node(s) wanted; bursts like this ended before one came"
        elif nodes_needed > current_nodes or recommended > current:
            target_nodes = max(min(nodes_needed, buy_nodes), current_nodes)
            reason, detail = up_reason, up_detail
            capped = target_nodes < nodes_needed
        elif kept >= current_nodes or current_nodes <= nodes_needed:
            target_nodes = current_nodes
            if nodes_needed < current_nodes:
                reason = Reason.KEEP_NODE
                detail = f"{current_nodes - nodes_needed} node(s) idle; kept for {keep_s:.0f}s"
                if burst_kept > nodes_needed and burst_kept >= kept:
                    detail += f"; {burst_kept} asked for by a burst in the last {hold_s:.0f}s"
            else:
                reason, detail = Reason.STEADY, ""
        elif breached:
            target_nodes, reason, detail = current_nodes, Reason.HOLD_LATENCY, _latency(obs)
        elif last_down_at is not None and now - last_down_at < release_period_s(spec):
            target_nodes, reason, detail = current_nodes, Reason.HOLD_RATE_LIMIT, ""
        else:
            target_nodes, reason = release_to(current_nodes, kept, spec), Reason.RELEASE_NODE
            detail = f"{current_nodes} -> {target_nodes} node(s), idle {keep_s:.0f}s"
            if target_nodes > kept:
                detail += (
                    f"; {current_nodes - kept} idle, {spec.node_release_step} "
                    f"per {release_period_s(spec):.0f}s"
                )
            last_down_at = now
        filled = min(replicas_on(target_nodes, spec), max(spec.max_replicas, 0))
        target = max(filled, recommended) if target_nodes > 0 else 0
        if capped or reason is Reason.DEFER_NODE or reason is Reason.SHORT_BURST:
            target = filled  # the replicas the kept nodes hold, no more
        if idle and current > 0:
            window, node_window = ((now, 0),), ((now, 0),)
        elif target > current and reason is Reason.STEADY:
            reason, detail = Reason.FILL_NODES, f"{target} replicas on {target_nodes} node(s)"
        if reason in (Reason.SCALE_UP, Reason.STEP_UP):
            expected = float(queue)  # the new capacity is sized for all of today's queue
    else:
        if recommended > current:
            target, reason, detail = recommended, up_reason, up_detail
            expected = float(queue)  # the new capacity is sized for all of today's queue
        elif recommended == current:
            target, reason, detail = current, Reason.STEADY, ""
        elif idle and current > 0:
            target, reason, detail = 0, Reason.SCALE_TO_ZERO, f"idle {idle_for:.0f}s"
            window = ((now, 0),)
            last_down_at = now
        elif breached:
            target, reason, detail = current, Reason.HOLD_LATENCY, _latency(obs)
        elif stabilized >= current:
            target, reason = current, Reason.HOLD_STABILIZING
            detail = f"recommended {recommended}"
        elif rate_limited:
            target, reason, detail = current, Reason.HOLD_RATE_LIMIT, ""
        else:
            target = max(stabilized, current - max(spec.scale_down_max_step, 1), floor, 0)
            target = min(target, current)
            reason, detail = Reason.SCALE_DOWN, f"recommended {recommended} for {delay:.0f}s"
            if target < current:
                last_down_at = now

    if detail is _UP_DETAIL:
        detail = (
            f"arrival {sizing:.2f}/s, queue {queue} ({unexplained:.0f} unexplained), "
            f"mu {mu:.2f}/s at {conc} per replica, drain in {horizon:.0f}s"
        )
        if trend_up and forecast is not None:
            detail += f", {forecast:.2f}/s in {reacquire_s(spec):.0f}s on the trend"
        elif headroom_up and headroom_rate is not None:
            detail += f", sized for {headroom_rate:.2f}/s with {spec.rate_headroom:.0%} headroom"
        if limit is not None and obs.tpot_p95_s is not None:
            detail += f", mu limited by TPOT p95 {obs.tpot_p95_s * 1000:.1f}ms"
            if spec.tpot_limit_stall and obs.tpot_base_s is not None:
                scale = tpot_scale(obs, spec)
                detail += f" (x{scale:.2f}, a token alone {obs.tpot_base_s * 1000:.1f}ms)"
        elif stall is not None:
            detail += ", mu limited by prefill stalls"
        if burst is not None:
            detail += f", the arrivals met {burst:.2f}x the long-window rate ({long_rate:.2f}/s)"
        if up_reason is Reason.IN_FLIGHT:
            detail += f", {in_flight} in flight need {in_flight_need} replicas"
    target = min(max(target, 0), max(spec.max_replicas, 0))
    nodes = nodes_for(target, spec)
    if target_nodes is not None:
        nodes = max(nodes, target_nodes)
    if idle and current > 0:
        last_down_at = now
    new_state = PolicyState(
        replicas=target,
        nodes=nodes,
        window=window,
        node_window=node_window,
        gaps=gaps,
        bursts=bursts,
        last_now=now,
        last_down_at=last_down_at,
        busy_at=busy_at,
        expected_queue=expected,
        ready_nodes=ready_nodes,
        arrived=arrived,
        level_gaps=level_gaps,
        burst_window=burst_window,
        burst_gaps=burst_gaps,
        breach_at=breach_at,
    )
    decision = Decision(
        valid=True,
        replicas=target,
        nodes=nodes,
        reason=reason,
        detail=detail,
        recommended=recommended,
        service_rate=mu,
        concurrency=conc,
        drain_horizon_s=horizon,
        keep_node_s=keep_s,
        step_rate=obs.arrival_step_rate,
        forecast_rate=forecast,
        tpot_rate=limit,
        stall_rate=stall,
        burst_factor=burst,
        headroom_rate=headroom_rate,
        in_flight_floor=in_flight_need,
    )
    return decision, new_state


def _latency(obs: Observation) -> str:
    ttft = "-" if obs.ttft_p95_s is None else f"{obs.ttft_p95_s:.3f}s"
    tpot = "-" if obs.tpot_p95_s is None else f"{obs.tpot_p95_s * 1000:.1f}ms"
    return f"TTFT p95 {ttft}, TPOT p95 {tpot} above the SLO"


def _slo_breached(obs: Observation, spec: PolicySpec) -> bool:
    if obs.ttft_p95_s is not None and obs.ttft_p95_s > spec.ttft_slo_s:
        return True
    return (
        spec.tpot_slo_s is not None
        and obs.tpot_p95_s is not None
        and obs.tpot_p95_s > spec.tpot_slo_s
    )
