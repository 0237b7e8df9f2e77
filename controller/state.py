"""Per-model state built from the gateway's events, turned into the policy's `Observation`.

No I/O and no clock: `StateStore.ingest(events, now, wall_ms=...)` takes a batch from the
consumer with the controller's own receive time (`now`, its loop clock, and `wall_ms`, its wall
clock at that moment); `ModelState.sample(now, ...)` is the periodic sampling step on its own
clock (capacity, silent gateways, the step detector's time); `ModelState.observe(now, ...)`
returns what the policy needs and changes nothing, so it may be called as often as wanted.

**Event time.** Rates and windows use when things happened, not when the controller heard of
them: an event's age is `wall_ms - ts_ms` less the smallest such lag seen from its gateway lately
(its clock offset plus transit; clamped to `max_clock_skew_s`, and relaxed upward slowly so a
stepped clock is followed), capped at `max_event_lag_s`, and the event is placed at `now - age`.
A backlog flushed after a Redis outage, lag or redelivery therefore lands in the past: its
arrivals fill the long window where they belong and miss the short one, so history does not size
the fleet; its counts (queue, in flight) still apply. Completions older than the short window do
not count toward the capacity measurement (they did not happen in the interval being measured).
Without `wall_ms` every event is timed `now` (the discrete-event evaluator, old callers).

**Once only.** Events stamped with an id (`origin`, `eseq`; see `surgescale.events.producer`) are
applied once: per origin a high-water mark and a few open gaps (entries reclaimed out of order
fill them); anything else at or below the mark is a replay and only counted (`duplicates`). A
snapshot older than the one applied for its gateway (same origin: `seq` not higher; another or no
origin: an earlier `ts_ms`) is ignored (`stale_snapshots`). Events without an id apply as before.

Queue depth and in-flight are kept per gateway: a `snapshot` sets them absolutely and every event
after it (same stream, so in order) moves them, so the sum is exact when nothing is lost and heals
at the next snapshot when something is. A gateway that has not sent a snapshot for
`forget_after_intervals` of its own snapshot intervals is forgotten. Requests are followed by id
(bounded) only to tell whether a `reject` or `cancel` left the queue or a pod.

In-flight is also kept per pod (the `pod` of `dispatch` events, the pod's URL as the gateway
knows it; ended by the request's `complete`, `reject` or `cancel`): before a scale-down the
controller ranks the pods by it (`controller.pods`), so the idlest leave. It is not healed by
snapshots (they carry no per-pod counts), which is fine for a ranking.

Ready / starting replicas and nodes come from the Kubernetes watches (`controller.kube`) as a
`ClusterCounts`.

**Service rate (capacity per replica).** A replica's capacity is what it completes per second
when it is *full*; a lightly loaded replica finishes its small batches quickly, so Little's law
on the mean in-pod time at low load (`concurrency / mean in-pod time`) overstates it, several
times over for long prompts, where prefill of a full batch dominates. So it is measured
directly, by `sample` on the controller's tick: between two samples during which the Ready
replicas were near their cap (`in_flight >= saturation_fraction * ready * concurrency`), the
completions in that interval count against `ready * interval` replica-seconds; the ratio over
`capacity_window_s` is the measured capacity once it rests on at least `min_capacity_replica_s`
replica-seconds, and it is kept after the window empties (a quiet spell says nothing new about
capacity) until the replicas are full again and measure anew. The reported rate is the lower of that measurement and the Little's-law figure (at full load the two
agree; at low load only the measurement is right), and the Little's-law figure alone until the
replicas have been seen full. The Little's-law figure is taken at the concurrency it is used for:
the mean in-pod time was seen at today's batch (`batch_s`), and every token takes longer at a
larger batch by what the TPOT-by-batch line says (`TpotByBatch.slowdown`).

**Burst factor** (`burst_factor`, `Observation.burst_factor`). Each arrival notes the
short-window rate it arrived into and the long-window rate, both without itself; over
`burst_window_s` the ratio of the sums is how much faster than the long-window rate the load
came, as its requests met it: about 1 for a Poisson stream, 2.5-3.6 on 70B code 1x. Not noted
for a long window after the first arrival (a partial long window reads the rate low), and None
until `min_burst_arrivals` were noted (on a minute of 18 req/s Poisson load a factor of 1.2-1.3
from a few seconds of arrivals moved a replica).

**TPOT by batch.** Each completion with a TPOT becomes a sample of `controller.concurrency`'s
`TpotByBatch`: its batch (in flight per Ready replica), its TPOT, and the prompt tokens dispatched
per Ready replica between its own dispatch and its completion, per output token after the first
(the prefill load it decoded under; prompt sizes come from the `enqueue` events). The arrivals
also feed the trend (`controller.forecast`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from controller.changepoint import StepDetector
from controller.concurrency import TpotByBatch, concurrency_basis
from controller.dedupe import SeqTracker
from controller.forecast import ArrivalTrend
from controller.policy import Observation
from controller.stall import stall_rate
from controller.windows import MeanWindow, QuantileWindow, RateWindow, RatioWindow
from surgescale.events import Event, EventType

_ENQUEUE = EventType.ENQUEUE
_DISPATCH = EventType.DISPATCH
_FIRST_TOKEN = EventType.FIRST_TOKEN
_COMPLETE = EventType.COMPLETE
_REJECT = EventType.REJECT
_CANCEL = EventType.CANCEL
_SNAPSHOT = EventType.SNAPSHOT
_EPS = 1e-6
PREFILL_RATE_QUANTILE = 0.9
"""The quantile of the recent requests' prefill rates taken as a replica's prefill rate."""
BASE_TPOT_QUANTILE = 0.1
"""The quantile of the recent TPOTs taken as a token's time with no prefill around it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StateSettings:
    """Window lengths (seconds) of the per-model statistics."""

    short_window_s: float = 2.0
    long_window_s: float = 60.0
    latency_window_s: float = 60.0
    service_window_s: float = 120.0
    capacity_window_s: float = 600.0
    """Window of the saturated-throughput (capacity) measurement."""
    saturation_fraction: float = 0.8
    """Ready replicas count as full when in flight >= this fraction of their total concurrency."""
    min_capacity_replica_s: float = 5.0
    """Replica-seconds of full operation before the capacity measurement is used."""
    max_capacity_gap_s: float = 5.0
    """A longer gap between two samples is not used for the capacity measurement."""
    default_snapshot_interval_s: float = 1.0
    """Assumed for a gateway until a snapshot says its `interval_ms`."""
    forget_after_intervals: float = 3.0
    max_tracked_requests: int = 200_000
    """Per gateway; the oldest are dropped beyond it (the next snapshot corrects the counts)."""
    max_event_lag_s: float = 120.0
    """Events older than this are placed this far back (their samples then expire at once
    from every window shorter than it)."""
    max_clock_skew_s: float = 5.0
    """The most a gateway's clock (plus transit) is trusted to differ from ours: a gateway
    whose clock is further behind has its events taken for history."""
    clock_relax_per_s: float = 0.01
    """How fast (s per s) a gateway's lag floor rises when its lags do (a clock stepped back)."""
    max_seq_gaps: int = 64
    """Open gaps in an origin's `eseq` remembered (a late entry can fill one); oldest go first."""
    max_origins: int = 1_024
    """Producer incarnations remembered per model for de-duplication."""
    burst_window_s: float = 300.0
    """Window of the burst factor (`ModelState.burst_factor`): how much faster than the
    long-window rate the arrivals came, seen from the arrivals themselves. About a reacquire
    time; on 70B code 1x the SLO figure hardly moves with it (98.0-98.6 % over 60-1,200 s) but
    the bill does (53.50-79.77 GPU-h; docs/evaluate.md, branch `code1xa`)."""
    min_burst_arrivals: int = 200
    """Arrivals noted in the burst window before the burst factor is given (a few seconds of
    arrivals say little about how they come)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterCounts:
    """Pods and nodes of one model's targets, from the Kubernetes watches."""

    ready_replicas: int = 0
    starting_replicas: int = 0
    ready_nodes: int = 0
    starting_nodes: int = 0


@dataclass(slots=True)
class GatewayView:
    """One gateway's contribution to a model's queue and in-flight counts."""

    queue: int = 0
    in_flight: int = 0
    last_seen: float = 0.0
    snapshot_at: float | None = None
    interval_s: float = 1.0
    seq: int | None = None
    snapshot_origin: str | None = None
    snapshot_ts_ms: int | None = None
    """Origin and `ts_ms` of the snapshot applied last (to ignore older ones)."""
    floor: float = 0.0
    floor_epoch: int = -1
    """This gateway's lag floor while a batch is folded in (see `ModelState._floor`)."""
    phase: dict[str, bool] = field(default_factory=dict)
    """request id -> True while queued, False while at a pod."""
    pod_cap: int | None = None
    """The gateway's per-pod concurrency cap, from its snapshots."""
    at_pod: dict[str, str] = field(default_factory=dict)
    """request id -> the pod it was dispatched to, while there."""
    pods: dict[str, int] = field(default_factory=dict)
    """pod -> requests in flight there."""

    def pod_start(self, request_id: str, pod: str, limit: int) -> None:
        """`request_id` is at `pod` now (a dispatch, or a retry on another pod)."""
        before = self.at_pod.get(request_id)
        if before == pod:
            return
        if before is not None:
            self.pod_end(request_id)
        elif len(self.at_pod) >= limit:
            self.pod_end(next(iter(self.at_pod)))
        self.at_pod[request_id] = pod
        self.pods[pod] = self.pods.get(pod, 0) + 1

    def pod_end(self, request_id: str) -> None:
        """`request_id` left its pod (completed, rejected or cancelled)."""
        pod = self.at_pod.pop(request_id, None)
        if pod is None:
            return
        left = self.pods.get(pod, 0) - 1
        if left > 0:
            self.pods[pod] = left
        else:
            self.pods.pop(pod, None)

    def snapshot_is_stale(self, event: Event) -> bool:
        """True if `event` (a snapshot) is older than the one applied last."""
        applied_ts = self.snapshot_ts_ms
        if applied_ts is None:
            return False
        if (
            event.origin is not None
            and event.origin == self.snapshot_origin
            and event.seq is not None
            and self.seq is not None
        ):
            return event.seq <= self.seq
        if event.ts_ms != applied_ts:
            return event.ts_ms < applied_ts
        return event.seq is not None and event.seq == self.seq


def _heard(gw: GatewayView) -> float:
    """When `gw` was last heard from (its last snapshot, else its last event)."""
    return gw.snapshot_at if gw.snapshot_at is not None else gw.last_seen


def _silent(gw: GatewayView, now: float, limit: float) -> bool:
    """Whether `gw` has been silent for more than `limit` of its snapshot intervals at `now`."""
    return now - _heard(gw) > limit * gw.interval_s


def _sample(into: dict[int, list[float]], at: float, value: float) -> None:
    q = int(at * 20.0)
    values = into.get(q)
    if values is None:
        into[q] = [value]
    else:
        values.append(value)


class ModelState:
    """Everything the controller knows about one model from its events."""

    def __init__(self, model: str, settings: StateSettings) -> None:
        self.model = model
        self.settings = settings
        self.gateways: dict[str, GatewayView] = {}
        self._forget_at = -math.inf
        """No gateway can be silent long enough to forget before this (a bound kept by `fold`),
        so `forget_silent`, called for every model on every tick, is O(1) until then."""
        self._forget_known = 0
        """Gateways when `_forget_at` was computed (one added some other way: look again)."""
        self.arrivals_short = RateWindow(settings.short_window_s, bucket_s=0.05)
        self.arrivals_long = RateWindow(settings.long_window_s, bucket_s=1.0)
        self.completions = RateWindow(settings.long_window_s, bucket_s=1.0)
        self.service_s = MeanWindow(settings.service_window_s, bucket_s=5.0)
        self.batch_s = MeanWindow(settings.service_window_s, bucket_s=5.0)
        """Batch (in flight per Ready replica) at each completion: where `service_s` was seen."""
        self.capacity = RatioWindow(settings.capacity_window_s, bucket_s=5.0)
        """Completions per replica-second while the Ready replicas were full."""
        self._capacity_conc: int | None = None
        """The concurrency the replicas were full at in the last capacity sample."""
        self.prompts = MeanWindow(settings.long_window_s, bucket_s=1.0)
        """Prompt tokens per arrival (`enqueue` events), for the prefill-stall rate."""
        self.prefill_rate = QuantileWindow(settings.service_window_s)
        """Prompt tokens per second of each request from its dispatch to its first token."""
        self._prefilling: dict[str, tuple[int, float]] = {}
        """request id -> (prompt tokens, queue seconds) from its dispatch to its first token."""
        self.completed_total = 0
        self._full_since: tuple[float, int, int] | None = None
        self._last_capacity: float | None = None
        """(time, completed_total, ready) at the last sample that found the replicas full."""
        self.ttft_s = QuantileWindow(settings.latency_window_s)
        self.tpot_s = QuantileWindow(settings.latency_window_s)
        self.last_enqueue_at: float | None = None
        self.last_data_at: float | None = None
        self.events = 0
        self.forgotten = 0
        self.duplicates = 0
        """Events dropped as replays (an `eseq` applied before)."""
        self.stale_snapshots = 0
        self.late_events = 0
        """Events older than the short window when they arrived (history, not load)."""
        self._seen: dict[str, SeqTracker] = {}
        self._lag_floor: dict[str, list[float]] = {}
        """gateway -> [smallest recent receive lag (its clock offset plus transit), when]; kept
        when a silent gateway is forgotten, so its backlog after an outage is known as such."""
        self._max_tracked = settings.max_tracked_requests
        self._history_s = settings.short_window_s
        self._max_lag_s = settings.max_event_lag_s
        self._epoch = 0
        """Batch counter: a gateway view's `floor` is this batch's if its epoch matches."""
        self._floor_views: list[tuple[str, GatewayView]] = []
        # Samples folded since the last commit: of about now, and older ones by 50 ms quantum.
        self._arrivals_now = 0
        self._completions_now = 0
        self._ttft_now: list[float] = []
        self._tpot_now: list[float] = []
        self._service_now: list[float] = []
        self._arrivals: dict[int, int] = {}
        self._completions: dict[int, int] = {}
        self._completed_fresh = 0
        self._last_arrival: float | None = None
        self._ttft: dict[int, list[float]] = {}
        self._tpot: dict[int, list[float]] = {}
        self._service: dict[int, list[float]] = {}
        self.step = StepDetector()
        """Change detector on the arrivals (`controller.changepoint`)."""
        self.trend = ArrivalTrend()
        """The arrival rate's trend (`controller.forecast`)."""
        self.tpot_by_batch = TpotByBatch()
        """TPOT per batch size, for the concurrency the TPOT objective allows."""
        self.seen_rate = RatioWindow(settings.burst_window_s, bucket_s=5.0)
        """Over the arrivals: the short-window rate each arrived into (numerator) and the
        long-window rate (denominator), each without the arrival itself (`burst_factor`)."""
        self.seen_arrivals = RateWindow(settings.burst_window_s, bucket_s=5.0)
        """The arrivals `seen_rate` holds."""
        self._first_arrival_at: float | None = None
        """When the first arrival came (the long window is partial for a minute after)."""
        self._ready = 0
        """Ready replicas at the last sample (the batch of a completing request)."""
        self._prompt: dict[str, int] = {}
        """request id -> prompt tokens, from its enqueue until its dispatch."""
        self._prefill_cum = 0.0
        """Prompt tokens dispatched per Ready replica, summed over time (the prefill load)."""
        self._prefill_at: dict[str, float] = {}
        """request id -> `_prefill_cum` after its own dispatch, while at a pod."""

    def _gateway(self, name: str) -> GatewayView:
        view = self.gateways.get(name)
        if view is None:
            view = GatewayView(interval_s=self.settings.default_snapshot_interval_s)
            self.gateways[name] = view
        return view

    def apply(self, event: Event, now: float, wall_ms: int | None = None) -> None:
        """Fold one event (received at `now`; `wall_ms`: see `fold`) into the state."""
        self.fold(event, now, wall_ms)
        self.commit(now)

    def _first_time(self, origin: str, eseq: int) -> bool:
        """False if the event `eseq` of `origin` was applied before."""
        tracker = self._seen.get(origin)
        if tracker is None:
            if len(self._seen) >= self.settings.max_origins:
                del self._seen[next(iter(self._seen))]
            tracker = self._seen[origin] = SeqTracker(self.settings.max_seq_gaps)
        return tracker.first_time(eseq)

    def _floor(self, gw: GatewayView, name: str, now: float, first_lag_s: float) -> float:
        """`name`'s lag floor for this batch: the last one relaxed by the time since (or, for a
        gateway not seen before, `first_lag_s`: the newest event of a flushed backlog is about
        fresh), clamped to the trusted skew; written back at `commit`."""
        settings = self.settings
        entry = self._lag_floor.get(name)
        if entry is None:
            floor = first_lag_s
            if len(self._lag_floor) >= settings.max_origins:
                del self._lag_floor[next(iter(self._lag_floor))]
        else:
            floor = entry[0] + (now - entry[1]) * settings.clock_relax_per_s
        skew = settings.max_clock_skew_s
        floor = min(max(floor, -skew), skew)
        gw.floor, gw.floor_epoch = floor, self._epoch
        self._floor_views.append((name, gw))
        return floor

    def fold(
        self,
        event: Event,
        now: float,
        wall_ms: int | None = None,
        first_lag_s: float = 0.0,
    ) -> None:
        """Fold one event's counts in; its samples wait for `commit` (once per batch).

        `now` is when it was received (the controller's clock); `wall_ms` the controller's wall
        clock at that moment, which places the event at its own time (module docstring;
        `first_lag_s`: the smallest lag in the batch). None times it `now`.
        """
        gw = self.gateways.get(event.gateway)
        if gw is None:
            gw = self._gateway(event.gateway)
            self._forget_known += 1
            self._forget_by(now + self.settings.forget_after_intervals * gw.interval_s)
        gw.last_seen = now
        eseq = event.eseq
        if eseq is not None:
            tracker = self._seen.get(event.origin or "")
            if tracker is not None and eseq == tracker.high + 1:
                tracker.high = eseq  # the next one in order: the common case
            elif not self._first_time(event.origin or "", eseq):
                self.duplicates += 1
                return
        # `at` is None for an event of about now (within one 50 ms quantum), the common case.
        at: float | None = None
        fresh = True
        if wall_ms is not None:
            lag = (wall_ms - event.ts_ms) * 0.001
            floor = (
                gw.floor
                if gw.floor_epoch == self._epoch
                else self._floor(gw, event.gateway, now, first_lag_s)
            )
            if lag < floor:
                gw.floor = floor = max(lag, -self.settings.max_clock_skew_s)
            age = lag - floor
            if age > 0.05:
                if age > self._max_lag_s:
                    age = self._max_lag_s
                at = now - age
                if age > self._history_s:
                    fresh = False
                    self.late_events += 1
        kind = event.type
        if kind is _ENQUEUE:
            gw.queue += 1
            phase = gw.phase
            if len(phase) >= self._max_tracked:
                del phase[next(iter(phase))]
            phase[event.request_id] = True
            if event.prompt_tokens:
                prompts = self._prompt
                if len(prompts) >= self._max_tracked:
                    del prompts[next(iter(prompts))]
                prompts[event.request_id] = event.prompt_tokens
                self.prompts.add(now if at is None else at, float(event.prompt_tokens))
            if at is None:
                self._arrivals_now += 1
            else:
                q = int(at * 20.0)
                self._arrivals[q] = self._arrivals.get(q, 0) + 1
                last = self._last_arrival
                if last is None or at > last:
                    self._last_arrival = at
        elif kind is _DISPATCH:
            rid = event.request_id
            if event.pod:
                gw.pod_start(rid, event.pod, self._max_tracked)
            tokens = self._prompt.pop(rid, 0)
            if tokens:
                self._prefill_cum += tokens / max(self._ready, 1)
                if event.queue_ms is not None:
                    waiting = self._prefilling
                    if len(waiting) >= self._max_tracked:
                        del waiting[next(iter(waiting))]
                    waiting[rid] = (tokens, event.queue_ms / 1000.0)
            marks = self._prefill_at
            if rid not in marks and len(marks) >= self._max_tracked:
                del marks[next(iter(marks))]
            marks[rid] = self._prefill_cum
            if gw.phase.get(rid) is not False:
                if gw.queue > 0:
                    gw.queue -= 1
                gw.in_flight += 1
                gw.phase[rid] = False
        elif kind is _FIRST_TOKEN:
            prefill = self._prefilling.pop(event.request_id, None)
            if prefill is not None and event.ttft_ms is not None:
                seconds = event.ttft_ms / 1000.0 - prefill[1]
                if seconds > 0:
                    self.prefill_rate.add(now if at is None else at, prefill[0] / seconds)
            if event.ttft_ms is not None:
                if at is None:
                    self._ttft_now.append(event.ttft_ms / 1000.0)
                else:
                    _sample(self._ttft, at, event.ttft_ms / 1000.0)
        elif kind is _COMPLETE:
            gw.pod_end(event.request_id)
            mark = self._prefill_at.pop(event.request_id, None)
            if gw.phase.pop(event.request_id, False):
                if gw.queue > 0:
                    gw.queue -= 1
            elif gw.in_flight > 0:
                gw.in_flight -= 1
            if at is None:
                self._completions_now += 1
            else:
                q = int(at * 20.0)
                self._completions[q] = self._completions.get(q, 0) + 1
            if fresh:
                self._completed_fresh += 1
                if self._ready > 0:
                    self.batch_s.add(now, (self.in_flight + 1) / self._ready)
            if event.tpot_ms is not None:
                if at is None:
                    self._tpot_now.append(event.tpot_ms / 1000.0)
                else:
                    _sample(self._tpot, at, event.tpot_ms / 1000.0)
                if fresh and self._ready > 0:
                    batch = (self.in_flight + 1) / self._ready
                    steps = (event.output_tokens or 0) - 1
                    stall = 0.0 if mark is None or steps < 1 else self._prefill_cum - mark
                    self.tpot_by_batch.add(batch, event.tpot_ms / 1000.0, stall / max(steps, 1))
            if event.e2e_ms is not None:
                service_ms = event.e2e_ms - (event.queue_ms or 0.0)
                if service_ms > 0:
                    if at is None:
                        self._service_now.append(service_ms / 1000.0)
                    else:
                        _sample(self._service, at, service_ms / 1000.0)
        elif kind is _REJECT or kind is _CANCEL:
            gw.pod_end(event.request_id)
            self._prompt.pop(event.request_id, None)
            self._prefill_at.pop(event.request_id, None)
            self._prefilling.pop(event.request_id, None)
            was = gw.phase.pop(event.request_id, None)
            if was is True:
                gw.queue = max(gw.queue - 1, 0)
            elif was is False:
                gw.in_flight = max(gw.in_flight - 1, 0)
        elif kind is _SNAPSHOT:
            if gw.snapshot_is_stale(event):
                self.stale_snapshots += 1
                return
            gw.queue = max(event.queue_depth or 0, 0)
            gw.in_flight = max(event.in_flight or 0, 0)
            gw.snapshot_at = now
            gw.seq = event.seq
            gw.snapshot_origin = event.origin
            gw.snapshot_ts_ms = event.ts_ms
            if event.interval_ms:
                gw.interval_s = event.interval_ms / 1000.0
            self._forget_by(now + self.settings.forget_after_intervals * gw.interval_s)
            if event.pod_cap:
                gw.pod_cap = event.pod_cap

    def _detect_step(self, now: float) -> int:
        """Feed this batch's recent arrivals, in time order, to the change detector (arrivals
        older than the short window are history, not load); how many were fed."""
        timed = sorted(
            ((q + 0.5) / 20.0, n)
            for q, n in self._arrivals.items()
            if (q + 0.5) / 20.0 >= now - self._history_s
        )
        if self._arrivals_now:
            timed.append((now, self._arrivals_now))
        fed = 0
        for at, n in timed:
            last = self.step.last_t
            self.step = self.step.observe(at if last is None else max(at, last), n)
            fed += n
        return fed

    def commit(self, now: float) -> None:
        """Move the samples folded since the last commit into the windows, each at its time
        (to 50 ms: samples of about now at `now`)."""
        self.last_data_at = now
        self._epoch += 1
        if self._floor_views:
            for name, view in self._floor_views:
                self._lag_floor[name] = [view.floor, now]
            self._floor_views = []
        fresh = 0  # this batch's arrivals of about now: the rates they met (`burst_factor`)
        if self._arrivals_now or self._arrivals:
            fresh = self._detect_step(now)
        elif self.step.last_t is not None and now > self.step.last_t:
            # Any batch lets the detector's time pass (quiet time is evidence too), so when its
            # statistics last left zero is known to the batch, not to the next tick.
            self.step = self.step.observe(now)
        if self._arrivals_now:
            self.arrivals_short.add(now, self._arrivals_now)
            self.arrivals_long.add(now, self._arrivals_now)
            self.trend.add(now, self._arrivals_now)
            self.last_enqueue_at = now
            self._arrivals_now = 0
        if self._arrivals:
            for q, n in self._arrivals.items():
                at = (q + 0.5) / 20.0
                self.arrivals_short.add(at, n)
                self.arrivals_long.add(at, n)
                self.trend.add(at, n)
            last = self._last_arrival
            if last is not None and (self.last_enqueue_at is None or last > self.last_enqueue_at):
                self.last_enqueue_at = last
            self._arrivals = {}
            self._last_arrival = None
        if fresh:
            self._note_rates_seen(now, fresh)
        if self._completions_now:
            self.completions.add(now, self._completions_now)
            self._completions_now = 0
        if self._completions:
            for q, n in self._completions.items():
                self.completions.add((q + 0.5) / 20.0, n)
            self._completions = {}
        self.completed_total += self._completed_fresh
        self._completed_fresh = 0
        if self._ttft_now:
            self.ttft_s.add_many(now, self._ttft_now)
            self._ttft_now = []
        if self._tpot_now:
            self.tpot_s.add_many(now, self._tpot_now)
            self._tpot_now = []
        for value in self._service_now:
            self.service_s.add(now, value)
        self._service_now = []
        if self._ttft or self._tpot or self._service:
            for q, values in self._ttft.items():
                self.ttft_s.add_many((q + 0.5) / 20.0, values)
            for q, values in self._tpot.items():
                self.tpot_s.add_many((q + 0.5) / 20.0, values)
            for q, values in self._service.items():
                at = (q + 0.5) / 20.0
                for value in values:
                    self.service_s.add(at, value)
            self._ttft, self._tpot, self._service = {}, {}, {}

    def _note_rates_seen(self, now: float, fresh: int) -> None:
        """`fresh` arrivals of about now: the rates they arrived into, for `burst_factor`."""
        first = self._first_arrival_at
        if first is None:
            self._first_arrival_at = first = now
        if now - first < self.settings.long_window_s:
            return  # the long window is still filling: it reads the rate low, not the arrivals
        own = (fresh + 1) / 2.0  # each arrival's own place in the batch: not the rate it met
        short = self.arrivals_short.count(now) - own
        long = self.arrivals_long.count(now) - own
        if long > 0:
            self.seen_arrivals.add(now, fresh)
            self.seen_rate.add(
                now,
                fresh * max(short, 0.0) / self.settings.short_window_s,
                fresh * long / self.settings.long_window_s,
            )

    def burst_factor(self, now: float) -> float | None:
        """How much faster than the long-window rate the recent arrivals came, as they saw
        it: over the arrivals of `burst_window_s`, the short-window rate each arrived into over
        the long-window rate (each without the arrival itself; about 1 for a Poisson stream,
        several for load that comes in bursts of seconds). None until `min_burst_arrivals` were
        noted (from a long window after the first arrival: a partial one reads the rate low)."""
        if self.seen_arrivals.count(now) < self.settings.min_burst_arrivals:
            return None
        return self.seen_rate.ratio(now)

    def _forget_by(self, when: float) -> None:
        """A gateway may be forgotten as early as `when` (it was just heard from)."""
        if when - _EPS < self._forget_at:
            self._forget_at = when - _EPS

    def forget_silent(self, now: float) -> list[str]:
        """Drop gateways silent for `forget_after_intervals` snapshot intervals; their names.

        O(1) until the earliest moment one of them could be (`_forget_at`): hearing from a
        gateway only moves its own moment later, and a new gateway or a shorter snapshot
        interval brings the bound forward (`fold`)."""
        gateways = self.gateways
        if now < self._forget_at and len(gateways) <= self._forget_known:
            return []
        limit = self.settings.forget_after_intervals
        gone = []
        earliest = math.inf
        for name, gw in gateways.items():
            if _silent(gw, now, limit):
                gone.append(name)
            else:
                earliest = min(earliest, _heard(gw) + limit * gw.interval_s)
        for name in gone:
            del gateways[name]
        self.forgotten += len(gone)
        self._forget_at = earliest - _EPS  # (a float sum may round either way: look early)
        self._forget_known = len(gateways)
        return gone

    @property
    def queue_depth(self) -> int:
        return sum(gw.queue for gw in self.gateways.values())

    @property
    def in_flight(self) -> int:
        return sum(gw.in_flight for gw in self.gateways.values())

    @property
    def pod_cap(self) -> int | None:
        """The smallest per-pod cap the gateways report (None if none says)."""
        caps = [gw.pod_cap for gw in self.gateways.values() if gw.pod_cap]
        return min(caps) if caps else None

    def concurrency(self, *, fixed: int | None, max_num_seqs: int, tpot_slo_s: float | None) -> int:
        """The per-replica concurrency the spec and the TPOT objective ask for
        (`controller.concurrency`), before the gateway's per-pod cap."""
        learned = (
            None
            if tpot_slo_s is None
            else self.tpot_by_batch.largest_batch(tpot_slo_s, max_num_seqs=max_num_seqs)
        )
        return concurrency_basis(
            fixed=fixed,
            max_num_seqs=max_num_seqs,
            tpot_slo_s=tpot_slo_s,
            learned=learned,
            pod_cap=None,  # the policy caps it (and the status says when the two differ)
        ).value

    def pod_in_flight(self) -> dict[str, int]:
        """Requests in flight per pod (as the gateways name pods), over all gateways."""
        out: dict[str, int] = {}
        for gw in self.gateways.values():
            for pod, n in gw.pods.items():
                out[pod] = out.get(pod, 0) + n
        return out

    def sample(self, now: float, *, ready_replicas: int, concurrency_per_replica: int) -> None:
        """The sampling step, on its own clock (the controller's tick, `controller.scheduler`):
        forget silent gateways, count the capacity interval since the last sample, let the step
        detector's time pass and note the Ready replicas later events are folded against. The
        only place besides the event fold where time changes this state: `observe` reads, so an
        observation does not depend on how often one looks."""
        self.forget_silent(now)
        self._ready = ready_replicas
        self.sample_capacity(now, ready_replicas, concurrency_per_replica)
        if self.step.last_t is not None:
            self.step = self.step.observe(max(now, self.step.last_t))

    def sample_capacity(self, now: float, ready: int, concurrency_per_replica: int) -> None:
        """Count the interval since the last sample if the replicas were full through it."""
        settings = self.settings
        full = self._full_since
        if full is not None:
            since, completed, was_ready = full
            dt = now - since
            if 0 < dt <= settings.max_capacity_gap_s and was_ready > 0:
                self.capacity.add(now, self.completed_total - completed, was_ready * dt)
        cap = ready * max(concurrency_per_replica, 1)
        if ready > 0 and self.in_flight >= settings.saturation_fraction * cap:
            self._full_since = (now, self.completed_total, ready)
            self._capacity_conc = max(concurrency_per_replica, 1)
        else:
            self._full_since = None
        measured = self.capacity.ratio(now, settings.min_capacity_replica_s)
        if measured is not None and measured > 0:
            self._last_capacity = measured

    def measured_capacity(self, now: float) -> float | None:
        """Completions per replica-second while full over the capacity window; once the window
        holds too little, the last such figure a sample saw (full load may be rare, and a quiet
        spell says nothing new about capacity); None before enough of it was ever seen. Reads
        only."""
        measured = self.capacity.ratio(now, self.settings.min_capacity_replica_s)
        if measured is not None and measured > 0:
            return measured
        return self._last_capacity

    def _measured_at(self, concurrency_per_replica: int) -> bool:
        """Whether the measured capacity was taken with the replicas full at (about) this
        concurrency. Replicas "full" at a much smaller one held a few requests each: what they
        completed then is not what they complete holding `concurrency_per_replica` (on 70B code
        4x the learned concurrency fell to 1 for 16 of 8,386 evaluations at a burst's onset,
        54 requests on 58 replicas counted as full, and the 0.88 completions/s per replica
        measured then sized every later burst for 30 nodes)."""
        conc = self._capacity_conc
        if conc is None:
            return True
        return self.settings.saturation_fraction * concurrency_per_replica <= conc

    def stall_rate(self, now: float, tpot_slo_s: float | None) -> float | None:
        """Requests/s per replica the TPOT objective allows under the prefill stall the recent
        completions show (`controller.stall`); None when it does not apply."""
        if tpot_slo_s is None:
            return None
        return stall_rate(
            base_tpot_s=self.tpot_s.quantile(now, BASE_TPOT_QUANTILE),
            prefill_tokens_per_s=self.prefill_rate.quantile(now, PREFILL_RATE_QUANTILE),
            mean_prompt_tokens=self.prompts.mean(now),
            tpot_slo_s=tpot_slo_s,
        )

    def service_rate(self, now: float, concurrency_per_replica: int) -> float | None:
        """Completions/s one replica sustains at its concurrency (see the module docstring).

        The lower of the measured capacity and Little's law on the mean in-pod time
        (`e2e_ms - queue_ms` of completed requests); None before any request completed.
        """
        mean_service = self.service_s.mean(now)
        little = None
        if mean_service is not None:
            # the service time was seen at today's batch; at the concurrency sized for, every
            # token takes longer by what the TPOT-by-batch line says (Little's law alone
            # assumed a full replica finishes a request as fast as a lightly loaded one)
            seen = self.batch_s.mean(now)
            slower = (
                1.0 if seen is None else self.tpot_by_batch.slowdown(seen, concurrency_per_replica)
            )
            little = concurrency_per_replica / (mean_service * slower)
        measured = self.measured_capacity(now)
        if measured is None or measured <= 0 or not self._measured_at(concurrency_per_replica):
            return little
        return measured if little is None else min(little, measured)

    def observe(
        self,
        now: float,
        *,
        cluster: ClusterCounts,
        concurrency_per_replica: int | None,
        max_num_seqs: int = 256,
        tpot_slo_s: float | None = None,
    ) -> Observation:
        """The policy's input for this model at `now`; `concurrency_per_replica` is the spec's
        fixed value (None: from the TPOT objective, else `max_num_seqs`).

        Without side effects (the windows only drop what has expired by `now`): gateways silent
        by `now` are left out rather than forgotten (`sample` and the tick forget them), and the
        capacity is what `sample` has measured."""
        limit = self.settings.forget_after_intervals
        live = [gw for gw in self.gateways.values() if not _silent(gw, now, limit)]
        conc = self.concurrency(
            fixed=concurrency_per_replica, max_num_seqs=max_num_seqs, tpot_slo_s=tpot_slo_s
        )
        mu = self.service_rate(now, conc)
        has_data = self.last_data_at is not None and bool(live)
        trend = self.trend.estimate(now)
        caps = [gw.pod_cap for gw in live if gw.pod_cap]
        return Observation(
            now_data=self.last_data_at if self.last_data_at is not None else now,
            queue_depth=sum(gw.queue for gw in live),
            in_flight=sum(gw.in_flight for gw in live),
            ready_replicas=cluster.ready_replicas,
            starting_replicas=cluster.starting_replicas,
            arrival_rate_short=self.arrivals_short.rate(now),
            arrival_rate_long=self.arrivals_long.rate(now),
            arrival_short_window_s=self.settings.short_window_s,
            service_rate_per_replica=mu,
            ttft_p95_s=self.ttft_s.quantile(now, 0.95),
            tpot_p95_s=self.tpot_s.quantile(now, 0.95),
            last_enqueue_at=self.last_enqueue_at,
            ready_nodes=cluster.ready_nodes,
            starting_nodes=cluster.starting_nodes,
            has_data=has_data,
            arrival_step_rate=self.step.rate(now),
            concurrency_per_replica=conc,
            pod_cap=min(caps) if caps else None,
            stall_rate_per_replica=self.stall_rate(now, tpot_slo_s),
            burst_factor=self.burst_factor(now),
            tpot_base_s=self.tpot_s.quantile(now, BASE_TPOT_QUANTILE),
            arrival_trend=None if trend is None else trend.slope,
            arrival_trend_stderr=None if trend is None else trend.stderr,
        )


class StateStore:
    """All models' state; `ingest` returns which models changed."""

    def __init__(self, settings: StateSettings | None = None) -> None:
        self.settings = settings or StateSettings()
        self.models: dict[str, ModelState] = {}
        self.events = 0
        self.queued: set[str] = set()
        """The models the last `ingest` brought an `enqueue` or a `snapshot` (their queue may
        have grown: the controller evaluates them before the others it touched)."""

    def model(self, name: str) -> ModelState:
        state = self.models.get(name)
        if state is None:
            state = ModelState(name, self.settings)
            self.models[name] = state
        return state

    def ingest(
        self, events: Iterable[Event], now: float, *, wall_ms: int | None = None
    ) -> set[str]:
        """Apply a batch of events received at `now` (wall clock `wall_ms`, which times each
        event by its own `ts_ms`; None: all at `now`); the names of the models they touched."""
        touched: dict[str, ModelState] = {}
        queued: set[str] = set()
        models = self.models
        last_name = ""
        last: ModelState | None = None
        count = 0
        events = events if isinstance(events, list) else list(events)
        first_lag_s = 0.0
        if wall_ms is not None and events:
            first_lag_s = (wall_ms - max(e.ts_ms for e in events)) / 1000.0
        for event in events:
            name = event.model
            if name != last_name or last is None:
                last = touched.get(name)
                if last is None:
                    last = models.get(name) or self.model(name)
                    touched[name] = last
                last_name = name
            last.fold(event, now, wall_ms, first_lag_s)
            kind = event.type
            if kind is _ENQUEUE or kind is _SNAPSHOT:
                queued.add(name)
            count += 1
        for state in touched.values():
            state.commit(now)
        self.events += count
        self.queued = queued
        return set(touched)
