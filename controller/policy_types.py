"""The policy's data: its spec, observation, memory and decision, and the enums they use.

Pure (no I/O). `controller.policy` decides with them and re-exports them; this module only
keeps that one under the size a reader takes in at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from controller.levelkeep import LevelGaps
from controller.retention import Excursions, Gaps


class Billing(enum.StrEnum):
    """What the cloud bills for the GPUs under the replicas."""

    NODE = "Node"
    """Whole nodes: a replica on a node that stays anyway costs nothing."""
    GPU = "GPU"
    """GPU-seconds of the replicas (GPUs shared with other workloads)."""


class Reason(enum.StrEnum):
    """Why a decision is what it is."""

    NO_DATA = "NoData"
    STALE_DATA = "StaleData"
    SCALE_UP = "ScaleUp"
    STEP_UP = "StepUp"
    """Scale-up driven by a detected step in the arrival rate."""
    TREND_UP = "TrendUp"
    """Scale-up for the rate the arrival trend reaches by the time new capacity is Ready."""
    HEADROOM = "Headroom"
    """Scale-up for the sustained rate plus the headroom a climb may need before a new node
    could serve it (node billing)."""
    TPOT_LIMIT = "TpotLimit"
    """Scale-up because the replicas' TPOT p95 says each serves less than the service rate."""
    BURST_RATE = "BurstRate"
    """Scale-up for the rate the arrivals met: the long-window rate times the burst factor
    (`PolicySpec.burst_sizing`)."""
    PREFILL_STALL = "PrefillStall"
    """Scale-up with the service rate limited by the rate at which prefill stalls bring TPOT
    to the objective (`controller.stall`)."""
    IN_FLIGHT = "InFlight"
    """Scale-up to hold the requests in flight (`policy.in_flight_floor`), more than the rates
    ask for."""
    FILL_NODES = "FillNodes"
    """More replicas on GPUs of nodes that are billed anyway."""
    STEADY = "Steady"
    HOLD_LATENCY = "HoldLatency"
    HOLD_STABILIZING = "HoldStabilizing"
    HOLD_RATE_LIMIT = "HoldRateLimit"
    DEFER_NODE = "DeferNode"
    """No new node yet: bursts like this one ended before a node could serve them."""
    SHORT_BURST = "ShortBurst"
    """No new node yet: the nodes wanted are for a rate the long window does not show (a
    node bought now serves a reacquire time later; `controller.persistence`)."""
    KEEP_NODE = "KeepNode"
    """A node demand does not need is kept: a burst may come back before it pays to release."""
    SCALE_DOWN = "ScaleDown"
    RELEASE_NODE = "ReleaseNode"
    SCALE_TO_ZERO = "ScaleToZero"


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySpec:
    """The policy-relevant part of an InferenceScaler spec (times in seconds)."""

    min_replicas: int = 0
    max_replicas: int = 10
    ttft_slo_s: float = 1.0
    tpot_slo_s: float | None = None
    concurrency_per_replica: int | None = 32
    """A fixed per-replica concurrency; None = from the TPOT objective, else `max_num_seqs`."""
    max_num_seqs: int = 256
    """The engine's batch limit (vLLM `--max-num-seqs`): the concurrency seed and ceiling."""
    scale_down_delay_s: float = 300.0
    scale_down_max_step: int = 1
    scale_down_period_s: float = 30.0
    """Rate limit: at most `scale_down_max_step` replicas (or one node release) per period."""
    scale_to_zero_idle_s: float | None = 600.0
    """Idle time before scaling to zero (needs `min_replicas == 0`); None never scales to zero."""
    gpus_per_replica: int = 1
    gpus_per_node: int = 8
    headroom_replicas: int = 0
    billing: Billing = Billing.NODE
    cold_start_s: float = 60.0
    """Pod creation to Ready (model load) on a node with a free GPU."""
    node_boot_s: float = 120.0
    """Node launch to Ready."""
    drain_horizon_s: float | None = None
    """Seconds to drain a queue in; None = when new capacity can arrive (see the docstring)."""
    release_penalty_s: float | None = None
    """Node-seconds a release costs when demand comes back; None = 2 * (cold start + boot)."""
    max_keep_node_s: float = 3600.0
    node_release_step: int = 0
    """Off by default (0: a release goes down to the kept nodes at once). Under node billing, a
    release gives back at most this many nodes per
    `node_release_period_s` (`Reason.RELEASE_NODE`'s detail says when more were idle). A
    release acts on the need estimate, and that can be far off (a service rate measured at light
    load); each step is judged by latency and demand before the next. On 70B code 1x the 6
    nodes of the start went to 1 at once on a service rate of ~600 req/s per replica, 90 s
    before a burst that needed 17 replicas (docs/evaluate.md, branch `code1x`). Not on by
    default: after main's prefill-stall limit, a release of 29 -> 12 nodes on 70B code 4x is
    right and stepping it costs 41.81 -> 57.71 billed GPU-h (docs/evaluate.md)."""
    node_release_period_s: float | None = None
    """Under node billing, seconds between two node releases; None = a reacquire time (node boot
    + cold start: a release misjudged is seen, and the node it gave back could be Ready again,
    before the next goes)."""
    keep_per_level: bool = False
    """Under node billing, each idle node level is kept for what its own gaps say
    (`controller.levelkeep`), not for the gaps of every level pooled. Off by default: with main's
    prefill-stall limit it moved 70B code 1x from 96.12 % at 66.54 to 96.28 % at 74.13
    (docs/evaluate.md, branch `code1x`)."""
    keep_from_ready: bool = False
    """Under node billing, a node is kept at least a reacquire time from when it became Ready:
    demand that fell while it booted was never served by it, and releasing it sooner saves
    less than getting it back costs (the floor of `controller.retention.keep_seconds`). Off by
    default: with every policy starting on the oracle's t=0 nodes it changed nothing on 70B
    code and cost 70B conv 1x 13.36 -> 15.88 billed GPU-h (docs/evaluate.md)."""
    defer_short_bursts: bool = True
    """Under node billing, buy a node only when bursts like the one going on have outlasted a
    node boot plus a cold start (`controller.retention.worth_buying`)."""
    stale_after_s: float = 5.0
    prior_request_seconds: float = 4.0
    """Typical in-pod request duration assumed before a service rate has been observed."""
    target_utilization: float = 0.9
    """Fraction of a replica's service rate the arrival rate may use."""
    arrival_noise_z: float = 3.5
    """Standard deviations of Poisson noise the short-window rate must exceed the long-window
    rate by before it sizes the fleet (0 = use the short rate as is)."""
    tpot_limit: bool = True
    """With a TPOT objective, a replica is never sized to serve more than the rate per Ready
    replica now times objective / TPOT p95 (`controller.policy.tpot_rate`)."""
    rate_headroom: float = 0.5
    """Under node billing, the fleet is sized for the sustained rate times (1 + this) while no
    replica is starting: a node asked for now serves a reacquire time later, and a climb in
    between is served only by capacity already there (`Reason.HEADROOM`). A prior, not learned
    (docs/evaluate.md)."""
    nodes_for_long_rate: bool = True
    """Under node billing, the nodes are sized for the long-window arrival rate; the short
    window's excess over it only fills the room on today's nodes (`controller.persistence`)."""
    prefill_stall_limit: bool = True
    """With a TPOT objective, a replica is never sized to serve more than the arrival rate at
    which the prefill stalls the recent completions show bring TPOT to the objective
    (`controller.stall`, `Reason.PREFILL_STALL`)."""
    burst_sizing: bool = True
    """The fleet is sized (and its nodes bought and kept) for at least the rate the arrivals
    met: the long-window rate times the observation's burst factor (`Reason.BURST_RATE`), while
    the TPOT limit does not judge (the replicas' own TPOT p95 has seen the bursts then). The
    capacities the policy sizes with (prefill stall, Little's law) are a replica's at a smooth
    rate; 70B code traffic comes in bursts of seconds that the arrivals meet at 2.5-3.6x the
    long-window rate, and the start's nodes went at ~480 s on the average (docs/evaluate.md,
    branch `code1xa`)."""
    burst_keep: bool = True
    """Under node billing, while the arrivals are bursty (a burst factor above
    `min_burst_factor`) and latency was above its objective within the keep horizon
    (`max_keep_node_s`), the held nodes the recommendation asked for (the short window, a step,
    the in-flight floor included) are kept after the burst for as long as the gaps between such
    bursts say (`controller.retention.keep_seconds` over those gaps longer than a reacquire
    time). Never buys: only what is held is kept. A fleet whose bursts met the objective on
    what it held (70B code 4x) keeps nothing for them. 70B code 1x: 98.21 % at 53.50 ->
    99.38 % at 62.73 billed GPU-h, the seven other scenarios unchanged (docs/evaluate.md,
    branch `code1xc`)."""
    max_burst_factor: float = 8.0
    """The most the burst factor grows the long-window rate by (a burst after a quiet minute
    meets a long window that holds almost nothing)."""
    min_burst_factor: float = 1.5
    """A burst factor at or below this is not applied: the headroom (`rate_headroom`, 0.5)
    covers it, and conversation load reads 1.0-1.5 (on 70B conv 2x applying it billed 11.58
    GPU-h instead of 8.05 for 99.96 % instead of 99.83 %)."""
    tpot_limit_stall: bool = True
    """The TPOT limit moves the rate per replica by the prefill-stall model,
    `(1 - base/objective) / (1 - base/TPOT p95)` with `base` a token's time alone
    (`controller.policy.tpot_scale`), not by objective / TPOT p95: on 70B code 1x a burst on 4
    replicas read a TPOT p95 of 500 ms and the proportional scale bought the bound (42 replicas,
    Ready after the burst); False restores it (docs/evaluate.md, branch `code1xb`)."""
    trend_z: float | None = 2.0
    """Nodes are bought for the rate one reacquire time (node boot + cold start) ahead, along
    the part of the arrival trend that is this many standard errors above 0; None = no
    forecast (size for today's rate)."""


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
    """Completions/s one Ready replica sustains at its concurrency (None = unknown yet)."""
    ttft_p95_s: float | None
    tpot_p95_s: float | None
    last_enqueue_at: float | None
    """For the scale-to-zero idle timer and instant wake."""
    ready_nodes: int = 0
    starting_nodes: int = 0
    has_data: bool = True
    arrival_short_window_s: float | None = None
    """Length of the short arrival window (for its noise bound); None = take the rate as is."""
    arrival_step_rate: float | None = None
    """The new arrival rate of a step the change detector just declared certain (or None)."""
    concurrency_per_replica: int | None = None
    """The per-replica concurrency the spec and TPOT objective ask for (`controller.concurrency`);
    None = from the spec. The policy uses it capped by `pod_cap`."""
    pod_cap: int | None = None
    """The gateway's per-pod concurrency cap, when its snapshots say it."""
    arrival_trend: float | None = None
    """Slope of the arrival rate (req/s per second) over the last minutes (`controller.forecast`);
    None = not known yet."""
    arrival_trend_stderr: float | None = None
    """Its standard error (from the fit's residuals)."""
    stall_rate_per_replica: float | None = None
    """Requests/s per replica at which prefill stalls bring TPOT to the objective
    (`controller.stall`); None = not known or not applicable."""
    burst_factor: float | None = None
    """Over the recent arrivals, the short-window rate each arrived into over the long-window
    rate (`controller.state`); None = not known."""
    tpot_base_s: float | None = None
    """A token's time with little prefill around it: a low quantile (p10) of the recent TPOTs
    (`controller.stall`'s `base`); None = not known."""


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
    node_window: tuple[tuple[float, int], ...] = ()
    """Sliding-window maximum of the nodes needed, over `max_keep_node_s`."""
    gaps: Gaps = field(default_factory=Gaps)
    """How long demand stayed below each node level before it came back."""
    bursts: Excursions = field(default_factory=Excursions)
    """How long the sustained recommendation stayed at or above each replica count."""
    ready_nodes: int = 0
    """Ready nodes at the last decision (a rise starts the new nodes' keep time)."""
    arrived: tuple[float, int] | None = None
    """(when, Ready nodes) of the last rise in Ready nodes: kept a reacquire time from then."""
    level_gaps: LevelGaps = field(default_factory=LevelGaps)
    """Per held node level: since when it is idle and the gaps it had (`controller.levelkeep`)."""
    burst_window: tuple[tuple[float, int], ...] = ()
    """Sliding-window maximum of the nodes bursts asked for (`PolicySpec.burst_keep`)."""
    burst_gaps: Gaps = field(default_factory=Gaps)
    """How long the held nodes bursts asked for went unasked before a burst asked again."""
    breach_at: float | None = None
    """When the TTFT or TPOT p95 was last above its objective."""

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
    reason: Reason
    detail: str = ""
    """The numbers behind the reason, for logs and Events."""
    recommended: int = 0
    """The unstabilized recommendation (before delay, rate limit and node filling)."""
    service_rate: float = 0.0
    """The per-replica service rate used (observed or prior)."""
    concurrency: int = 0
    """The per-replica concurrency basis used."""
    drain_horizon_s: float = 0.0
    keep_node_s: float | None = None
    """Under node billing: how long a node demand no longer needs is kept."""
    step_rate: float | None = None
    forecast_rate: float | None = None
    """The arrival rate forecast one reacquire time ahead (None: no certain upward trend)."""
    tpot_rate: float | None = None
    """The per-replica rate the TPOT p95 allows, when it is below the service rate (and so is
    the `service_rate` used); None otherwise."""
    stall_rate: float | None = None
    """The per-replica rate prefill stalls allow under the TPOT objective, when it is below
    the observed service rate (and so bounds the `service_rate` used); None otherwise."""
    headroom_rate: float | None = None
    """The rate the fleet is sized for with the headroom (None: no headroom)."""
    burst_factor: float | None = None
    """The factor the long-window rate was grown by to the rate the arrivals met
    (`PolicySpec.burst_sizing`; None: not applied)."""
    in_flight_floor: int = 0
    """Replicas that hold the requests in flight (`policy.in_flight_floor`); the
    recommendation is never below it."""

    def describe(self) -> str:
        """One line for Events and logs: `Reason: detail`."""
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value
