"""The pure decision core of the KEDA + Prometheus + HPA baseline (no I/O, time is an argument).

What a user who follows the usual guide runs: Prometheus scrapes every vLLM pod's `/metrics`
every 15 s; a KEDA ScaledObject with a `prometheus` trigger on the TTFT p95 over the last minute
(`metricType: Value`, threshold = the TTFT SLO) is polled every 30 s; the HPA that KEDA creates
syncs every 15 s and applies the Kubernetes algorithm (pkg/controller/podautoscaler):

- external metric, target type Value: `usageRatio = metric / target`; within the 10% tolerance
  nothing changes, else `desired = ceil(usageRatio * readyPods)` (or `ceil(usageRatio)` at zero);
- the default behavior: scale-up stabilization 0 s, scale-up limited per 15 s period to
  `max(+4 pods, +100%)`; scale-down stabilization 300 s (the highest recommendation of the
  window wins); scale-down limited to 1 pod per 60 s as in `manifests/keda/scaledobject.yaml`
  (`scale_down_pods=None` gives the HPA default, -100% per 15 s);
- clamped to [minReplicas, maxReplicas]; HPA does nothing while the target is at 0 replicas
  (KEDA activates 0 -> 1 on its own poll when the metric is above the activation threshold).

The metric the HPA reads is the value KEDA fetched at its last poll (`useCachedMetrics: true`),
so the polling interval sits in the loop (the README's scrape + query window + KEDA poll + HPA
sync); `use_cached_metrics=False` makes the HPA query Prometheus on each sync instead (KEDA's
default when the flag is off).

All periods live in `KedaSpec`; `KedaSpec.scaled(speed)` divides them by the demo's speed factor
so that they keep their proportion to the compressed cold starts and node boots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum


class MetricType(StrEnum):
    """How the HPA compares the external metric with the target (KEDA's `metricType`)."""

    VALUE = "Value"
    AVERAGE_VALUE = "AverageValue"


@dataclass(frozen=True, slots=True, kw_only=True)
class KedaSpec:
    """The baseline's configuration: Prometheus, KEDA ScaledObject and HPA defaults."""

    scrape_interval_s: float = 15.0
    """Prometheus `scrape_interval`."""
    query_window_s: float = 60.0
    """The range of `rate(...[1m])` in the trigger's query."""
    quantile: float = 0.95
    """The quantile of the trigger's `histogram_quantile`."""
    threshold_s: float = 1.0
    """The trigger's `threshold`: the TTFT p95 target, in seconds."""
    activation_threshold_s: float = 0.0
    """The trigger's `activationThreshold` (KEDA activates 0 -> 1 above it)."""
    metric_type: MetricType = MetricType.VALUE
    polling_interval_s: float = 30.0
    """ScaledObject `pollingInterval`."""
    use_cached_metrics: bool = True
    """The HPA reads the value of KEDA's last poll (True) or queries Prometheus itself (False)."""
    hpa_sync_s: float = 15.0
    """kube-controller-manager `--horizontal-pod-autoscaler-sync-period`."""
    tolerance: float = 0.1
    """`--horizontal-pod-autoscaler-tolerance`."""
    scale_up_stabilization_s: float = 0.0
    scale_up_pods: int = 4
    scale_up_percent: float = 100.0
    scale_up_period_s: float = 15.0
    scale_down_stabilization_s: float = 300.0
    scale_down_pods: int | None = 1
    """A `Pods` scale-down policy (as in manifests/keda/scaledobject.yaml: 1 pod per 60 s);
    None = the HPA default, `scale_down_percent` per period."""
    scale_down_percent: float = 100.0
    scale_down_period_s: float = 60.0
    cooldown_period_s: float = 300.0
    """ScaledObject `cooldownPeriod`: KEDA's wait before 1 -> 0 (only with min_replicas 0)."""
    min_replicas: int = 1
    max_replicas: int = 10

    def scaled(self, speed: float) -> KedaSpec:
        """The same configuration with every period divided by `speed` (> 0)."""
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        return replace(
            self,
            scrape_interval_s=self.scrape_interval_s / speed,
            query_window_s=self.query_window_s / speed,
            polling_interval_s=self.polling_interval_s / speed,
            hpa_sync_s=self.hpa_sync_s / speed,
            scale_up_stabilization_s=self.scale_up_stabilization_s / speed,
            scale_up_period_s=self.scale_up_period_s / speed,
            scale_down_stabilization_s=self.scale_down_stabilization_s / speed,
            scale_down_period_s=self.scale_down_period_s / speed,
            cooldown_period_s=self.cooldown_period_s / speed,
        )


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """A rescale the HPA made: when, and by how many replicas (positive up, negative down)."""

    at: float
    change: int


@dataclass(frozen=True, slots=True)
class HpaState:
    """What the HPA remembers between syncs: its recent recommendations and rescales."""

    recommendations: tuple[tuple[float, int], ...] = ()
    scale_events: tuple[ScaleEvent, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class HpaDecision:
    """The outcome of one HPA sync. `valid=False` means the metric was missing: hold."""

    valid: bool
    replicas: int
    reason: str
    raw_desired: int | None = None
    """The replica count from the metric alone, before stabilization and rate limits."""


def metric_replicas(*, metric: float, spec: KedaSpec, current: int, ready: int) -> tuple[int, str]:
    """The HPA replica calculator for one external metric (Value or AverageValue target)."""
    target = spec.threshold_s
    if spec.metric_type is MetricType.VALUE:
        ratio = metric / target
        if current == 0:
            return math.ceil(ratio), f"metric {metric:.3f}s / target {target:.3f}s at 0 replicas"
        if abs(1.0 - ratio) <= spec.tolerance:
            return current, f"ratio {ratio:.2f} within tolerance {spec.tolerance:.0%}"
        return (
            math.ceil(ratio * ready),
            f"metric {metric:.3f}s / target {target:.3f}s x {ready} ready",
        )
    wanted = math.ceil(metric / target)
    if current != 0:
        ratio = metric / (target * current)
        if abs(1.0 - ratio) <= spec.tolerance:
            return current, f"ratio {ratio:.2f} within tolerance {spec.tolerance:.0%}"
    return wanted, f"metric {metric:.3f}s / average target {target:.3f}s"


def _changes_in_period(
    events: tuple[ScaleEvent, ...], *, now: float, period: float
) -> tuple[int, int]:
    added = sum(e.change for e in events if e.change > 0 and e.at > now - period)
    removed = sum(-e.change for e in events if e.change < 0 and e.at > now - period)
    return added, removed


def hpa_sync(
    *,
    metric: float | None,
    current: int,
    ready: int,
    state: HpaState,
    spec: KedaSpec,
    now: float,
) -> tuple[HpaDecision, HpaState]:
    """One HPA reconcile: the replica count to set (maybe `current`) and the next state."""
    if current == 0:
        # The HPA disables itself at zero replicas; KEDA's poll does 0 -> 1.
        return HpaDecision(valid=True, replicas=0, reason="scaling disabled at 0 replicas"), state
    if metric is None or math.isnan(metric):
        return HpaDecision(valid=False, replicas=current, reason="no metric: hold"), state
    hpa_min = max(1, spec.min_replicas)  # KEDA creates its HPA with minReplicas >= 1
    raw, why = metric_replicas(metric=metric, spec=spec, current=current, ready=ready)

    # Stabilization: the lowest recommendation of the up window, the highest of the down window.
    up_cut = now - spec.scale_up_stabilization_s
    down_cut = now - spec.scale_down_stabilization_s
    up_rec = raw
    down_rec = raw
    for at, rec in state.recommendations:
        if at > up_cut:
            up_rec = min(up_rec, rec)
        if at > down_cut:
            down_rec = max(down_rec, rec)
    stabilized = max(current, up_rec)
    stabilized = min(stabilized, down_rec)
    keep = max(spec.scale_up_stabilization_s, spec.scale_down_stabilization_s)
    recommendations = (*(r for r in state.recommendations if r[0] > now - keep), (now, raw))

    # Rate limits (behavior policies, selectPolicy Max), then minReplicas/maxReplicas.
    desired = stabilized
    reason = why
    if desired > current:
        added, removed = _changes_in_period(
            state.scale_events, now=now, period=spec.scale_up_period_s
        )
        start = current - added + removed
        limit = max(
            start + spec.scale_up_pods, math.ceil(start * (1 + spec.scale_up_percent / 100))
        )
        limit = max(limit, current)
        allowed = min(spec.max_replicas, limit)
        if desired > allowed:
            desired = allowed
            reason += f"; capped at {allowed} (scale-up limit/max)"
    elif desired < current:
        added, removed = _changes_in_period(
            state.scale_events, now=now, period=spec.scale_down_period_s
        )
        start = current - added + removed
        if spec.scale_down_pods is not None:
            limit = start - spec.scale_down_pods
        else:
            limit = int(start * (1 - spec.scale_down_percent / 100))
        limit = min(limit, current)
        floor = max(hpa_min, limit)
        if desired < floor:
            desired = floor
            reason += f"; floored at {floor}"
    if stabilized != raw:
        reason += f"; stabilized {raw} -> {stabilized}"
    desired = max(hpa_min, min(spec.max_replicas, desired))
    events = tuple(e for e in state.scale_events if e.at > now - keep)
    if desired != current:
        events += (ScaleEvent(at=now, change=desired - current),)
    return (
        HpaDecision(valid=True, replicas=desired, reason=reason, raw_desired=raw),
        HpaState(recommendations=recommendations, scale_events=events),
    )


@dataclass(frozen=True, slots=True)
class KedaState:
    """KEDA operator memory: the cached metric, when it last saw the trigger active."""

    cached_metric: float | None = None
    last_active_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class KedaPoll:
    """The outcome of one KEDA poll: maybe a 0 <-> 1 scale of its own."""

    active: bool
    scale_to: int | None
    reason: str


def keda_poll(
    *, metric: float, current: int, state: KedaState, spec: KedaSpec, now: float
) -> tuple[KedaPoll, KedaState]:
    """One KEDA polling cycle: cache the metric, activate from zero, deactivate after cooldown.

    `metric` is what the trigger's query returned; NaN (no data) counts as 0, as the Prometheus
    scaler does with `ignoreNullValues: true` (its default).
    """
    value = 0.0 if math.isnan(metric) else metric
    active = value > spec.activation_threshold_s
    last_active = now if active else state.last_active_at
    new_state = KedaState(cached_metric=value, last_active_at=last_active)
    if current == 0 and active:
        return KedaPoll(
            active=True, scale_to=max(1, spec.min_replicas), reason="activated"
        ), new_state
    if (
        current > 0
        and not active
        and spec.min_replicas == 0
        and (last_active is None or now - last_active >= spec.cooldown_period_s)
    ):
        return KedaPoll(active=False, scale_to=0, reason="cooldown over: to zero"), new_state
    return KedaPoll(active=active, scale_to=None, reason="poll"), new_state
