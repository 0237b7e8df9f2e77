"""The pure scaling policy: `decide(observation, state, spec, now) -> (decision, state)`.

No I/O and no clock: `now` is an argument, so the live controller (`controller.loop`) and the
virtual-time evaluator (`sim.evaluate`) run this very function. Collecting the observation lives
in `controller.state`; writing the result lives in `controller.actuator`.

How a decision is made (all rates in requests per second):

- **Service rate.** `mu` is what one Ready replica completes per second at its target concurrency
  (`controller.state` measures it while the replicas are full, see there). Before any request has
  been observed it is the prior `concurrency_per_replica / prior_request_seconds`
  (32 / 4 s = 8 req/s by default): a guess that the observed rate replaces as soon as the
  controller has one.
- **Arrival rate for sizing.** A 2 s window holds few arrivals, so its rate is noisy (Poisson: a
  count `n` varies by about `sqrt(n)`). The sizing rate is the long-window rate unless the short
  window exceeds it by more than noise: `max(long, short - arrival_noise_z * sqrt(short / w))`
  where `w` is the short window's length (`Observation.arrival_short_window_s`; without it the
  short rate is used as is). A real step still shows at once (at 39 req/s over 2 s the bound is
  30 req/s) and the queue term covers the rest; a noisy reading around a steady mean does not
  size the fleet.
- **Need.** `ceil(arrival / (mu * target_utilization) + queue_unexplained / (mu * ttft_slo))`:
  enough replicas to serve the arrival rate and drain the queue within the TTFT SLO.
- **No double counting.** Replicas already starting are part of the Deployment's replica count,
  so the target is compared with the current desired count, never added to it. The queue that
  piles up while they start is *expected*: the state carries `expected_queue`, a fluid model of
  the backlog the requested capacity is already sized for (set to the observed queue at each
  scale-up, then growing by `arrival - mu * ready` per second while replicas start and decaying
  once they serve), and only the queue beyond it (`queue_unexplained`) asks for more replicas.
- **Scale up at once**, to `need` clamped to `[min_replicas, max_replicas]`.
- **Scale down slowly.** The target is the highest recommendation of the last
  `scale_down_delay_s` (a sliding-window maximum, as the HPA's stabilization window), at most
  `scale_down_max_step` replicas per `scale_down_period_s`, never below
  `ceil(in_flight / concurrency_per_replica)`, and not at all while the TTFT (or TPOT) p95 is
  above its SLO.
- **Scale to zero** (only with `min_replicas == 0`) after `scale_to_zero_idle_s` with no queue,
  nothing in flight and no enqueue; until then at least one replica is kept. **Instant wake**: a
  queued request or a recent enqueue at zero replicas asks for a replica on the same evaluation.
- **Nodes** = `ceil((replicas + headroom_replicas) * gpus_per_replica / gpus_per_node)`; the
  actuator requests them together with (ahead of) the pods.
- **Cannot decide** (`has_data` false, or data older than `stale_after_s`) is a `Decision` with
  `valid=False` that holds the current size: no scale-up, and never a scale-down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySpec:
    """The policy-relevant part of an InferenceScaler spec (times in seconds)."""

    min_replicas: int = 0
    max_replicas: int = 10
    ttft_slo_s: float = 1.0
    tpot_slo_s: float | None = None
    concurrency_per_replica: int = 32
    scale_down_delay_s: float = 300.0
    scale_down_max_step: int = 1
    scale_down_period_s: float = 30.0
    """Rate limit: at most `scale_down_max_step` replicas removed per period."""
    scale_to_zero_idle_s: float | None = 600.0
    """Idle time before scaling to zero (needs `min_replicas == 0`); None never scales to zero."""
    gpus_per_replica: int = 1
    gpus_per_node: int = 8
    headroom_replicas: int = 0
    stale_after_s: float = 5.0
    prior_request_seconds: float = 4.0
    """Typical in-pod request duration assumed before a service rate has been observed."""
    target_utilization: float = 0.9
    """Fraction of a replica's service rate the arrival rate may use."""
    arrival_noise_z: float = 2.0
    """Standard deviations of Poisson noise the short-window rate must exceed the long-window
    rate by before it sizes the fleet (0 = use the short rate as is)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """What the controller knows about one model at `now_data`."""

    now_data: float
    """Time of the newest data this observation reflects."""
    queue_depth: int
    in_flight: int
    ready_replicas: int
    starting_replicas: int
    """Created but not Ready; counted as capacity on its way, never double-counted."""
    arrival_rate_short: float
    arrival_rate_long: float
    service_rate_per_replica: float | None
    """Completions/s one Ready replica sustains at its target concurrency (None = unknown yet)."""
    ttft_p95_s: float | None
    tpot_p95_s: float | None
    last_enqueue_at: float | None
    """For the scale-to-zero idle timer and instant wake."""
    ready_nodes: int = 0
    starting_nodes: int = 0
    has_data: bool = True
    arrival_short_window_s: float | None = None
    """Length of the short arrival window (for its noise bound); None = take the rate as is."""


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What `decide` remembers between calls. Opaque to callers: make it with `initial`."""

    replicas: int
    nodes: int
    window: tuple[tuple[float, int], ...] = ()
    """Sliding-window maximum of recommendations: (time, value), values strictly decreasing."""
    last_now: float | None = None
    last_down_at: float | None = None
    busy_at: float | None = None
    """Last time there was work (queue, in flight or an enqueue); seeds the idle timer."""
    expected_queue: float = 0.0

    @staticmethod
    def initial(replicas: int, nodes: int | None = None) -> PolicyState:
        """The state of a controller that finds the target at `replicas` (and `nodes` nodes)."""
        return PolicyState(replicas=max(0, replicas), nodes=-1 if nodes is None else nodes)

    def with_replicas(self, replicas: int) -> PolicyState:
        """The same memory with the current size set to what the cluster says (a standby
        following the leader's writes, or a scale made by someone else).

        Below the size this memory decided, the scale-up it imagined was never made (a standby
        decides but does not write): the backlog it expected that capacity to absorb is not
        explained by anything on its way, so `expected_queue` is dropped and the whole observed
        queue asks for replicas again. A new leader thus acts on what it observes and goes
        straight to target instead of climbing from a standby's stale expectation."""
        replicas = max(0, replicas)
        if replicas < self.replicas:
            return replace(self, replicas=replicas, expected_queue=0.0)
        return replace(self, replicas=replicas)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The outcome of one evaluation. `valid=False` means "cannot decide": hold the size."""

    valid: bool
    replicas: int
    nodes: int
    reason: str
    recommended: int = 0
    """The unstabilized recommendation (before delay and rate limit), for logs."""
    service_rate: float = 0.0
    """The per-replica service rate used (observed or prior)."""


_MAX_GAP_S = 60.0
"""A longer gap between evaluations resets the expected-queue model to the observed queue."""


def nodes_for(replicas: int, spec: PolicySpec) -> int:
    """GPU nodes needed for `replicas` plus the headroom replicas."""
    if replicas <= 0 and spec.headroom_replicas <= 0:
        return 0
    gpus = (max(replicas, 0) + max(spec.headroom_replicas, 0)) * spec.gpus_per_replica
    return math.ceil(gpus / max(spec.gpus_per_node, 1))


def service_rate(observation: Observation, spec: PolicySpec) -> float:
    """The observed per-replica service rate, or the prior before one is known."""
    observed = observation.service_rate_per_replica
    if observed is not None and observed > 0 and math.isfinite(observed):
        return observed
    return spec.concurrency_per_replica / max(spec.prior_request_seconds, 1e-3)


def sizing_arrival(observation: Observation, spec: PolicySpec) -> float:
    """The arrival rate the fleet is sized for: the short-window rate where it exceeds the
    long-window rate by more than Poisson noise, else the long-window rate."""
    short = max(observation.arrival_rate_short, 0.0)
    window = observation.arrival_short_window_s
    if window is None or window <= 0 or spec.arrival_noise_z <= 0:
        return short
    long = max(observation.arrival_rate_long, 0.0)
    lower = short - spec.arrival_noise_z * math.sqrt(short / window)
    return max(long, lower, 0.0)


def _hold(state: PolicyState, reason: str) -> tuple[Decision, PolicyState]:
    nodes = state.nodes if state.nodes >= 0 else 0
    return Decision(valid=False, replicas=state.replicas, nodes=nodes, reason=reason), state


def _push_window(
    window: tuple[tuple[float, int], ...], now: float, value: int, horizon: float
) -> tuple[tuple[float, int], ...]:
    kept = [(t, v) for t, v in window if t > now - horizon and v > value]
    kept.append((now, value))
    return tuple(kept)


def decide(
    observation: Observation, state: PolicyState, spec: PolicySpec, now: float
) -> tuple[Decision, PolicyState]:
    """Decide the replicas and nodes for one model; see the module docstring for the rules."""
    obs = observation
    if not obs.has_data:
        return _hold(state, "no data")
    age = now - obs.now_data
    if age > spec.stale_after_s:
        return _hold(state, f"stale data ({age:.1f}s old)")

    mu = service_rate(obs, spec)
    current = state.replicas
    queue = max(obs.queue_depth, 0)
    in_flight = max(obs.in_flight, 0)
    arrival = max(obs.arrival_rate_short, 0.0)
    sizing = sizing_arrival(obs, spec)

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
    raw = sizing / (mu * util) + unexplained / (mu * slo)
    need = math.ceil(raw - 1e-9) if raw > 0 else 0
    in_flight_need = math.ceil(in_flight / max(spec.concurrency_per_replica, 1))

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
        need = 0  # no enqueue for the idle period: whatever the rate windows still hold is past
    else:
        floor = max(floor, 1)
    recommended = min(max(need, floor), spec.max_replicas)
    recommended = max(recommended, min(spec.min_replicas, spec.max_replicas))

    horizon = max(spec.scale_down_delay_s, 0.0)
    window = state.window
    if state.last_now is None:
        window = ((now, current),)  # a fresh controller waits a full delay before going down
    window = _push_window(window, now, recommended, horizon)
    stabilized = max(v for _, v in window)

    last_down_at = state.last_down_at
    if recommended > current:
        target = recommended
        reason = (
            f"scale up: arrival {sizing:.2f}/s, queue {queue} ({unexplained:.0f} unexplained), "
            f"mu {mu:.2f}/s"
        )
        expected = float(queue)  # the new capacity is sized for all of today's queue
    elif recommended == current:
        target, reason = current, "steady"
    elif idle and current > 0:
        target, reason = 0, f"scale to zero: idle {idle_for:.0f}s"
        window = ((now, 0),)
        last_down_at = now
    elif _slo_breached(obs, spec):
        target, reason = current, "hold: latency above SLO"
    elif stabilized >= current:
        target, reason = current, f"hold: stabilizing (recommended {recommended})"
    elif last_down_at is not None and now - last_down_at < spec.scale_down_period_s:
        target, reason = current, "hold: scale-down rate limit"
    else:
        target = max(stabilized, current - max(spec.scale_down_max_step, 1), floor, 0)
        target = min(target, current)
        reason = f"scale down: recommended {recommended} for {horizon:.0f}s"
        if target < current:
            last_down_at = now

    target = min(max(target, 0), max(spec.max_replicas, 0))
    nodes = nodes_for(target, spec)
    new_state = replace(
        state,
        replicas=target,
        nodes=nodes,
        window=window,
        last_now=now,
        last_down_at=last_down_at,
        busy_at=busy_at,
        expected_queue=expected,
    )
    decision = Decision(
        valid=True,
        replicas=target,
        nodes=nodes,
        reason=reason,
        recommended=recommended,
        service_rate=mu,
    )
    return decision, new_state


def _slo_breached(obs: Observation, spec: PolicySpec) -> bool:
    if obs.ttft_p95_s is not None and obs.ttft_p95_s > spec.ttft_slo_s:
        return True
    return (
        spec.tpot_slo_s is not None
        and obs.tpot_p95_s is not None
        and obs.tpot_p95_s > spec.tpot_slo_s
    )
