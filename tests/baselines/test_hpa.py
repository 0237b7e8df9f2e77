"""The KEDA/HPA baseline's decision core: the Kubernetes algorithm step by step, fake `now`."""

from __future__ import annotations

import math

import pytest

from sim.baselines.hpa import (
    HpaState,
    KedaSpec,
    KedaState,
    MetricType,
    hpa_sync,
    keda_poll,
    metric_replicas,
)

SPEC = KedaSpec(threshold_s=1.0, min_replicas=1, max_replicas=10)


@pytest.mark.parametrize(
    ("metric", "current", "ready", "metric_type", "expected"),
    [
        pytest.param(1.05, 4, 4, MetricType.VALUE, 4, id="within-tolerance-holds"),
        pytest.param(0.91, 4, 4, MetricType.VALUE, 4, id="within-tolerance-below"),
        pytest.param(3.0, 2, 2, MetricType.VALUE, 6, id="value-ratio-times-ready"),
        pytest.param(3.0, 6, 2, MetricType.VALUE, 6, id="value-counts-ready-not-current"),
        pytest.param(0.2, 5, 5, MetricType.VALUE, 1, id="value-scale-down"),
        pytest.param(2.5, 0, 0, MetricType.VALUE, 3, id="value-at-zero"),
        pytest.param(3.0, 2, 2, MetricType.AVERAGE_VALUE, 3, id="average-value-ignores-current"),
        pytest.param(3.1, 3, 3, MetricType.AVERAGE_VALUE, 3, id="average-value-tolerance"),
    ],
)
def test_metric_replicas(
    metric: float, current: int, ready: int, metric_type: MetricType, expected: int
) -> None:
    spec = KedaSpec(threshold_s=1.0, metric_type=metric_type)
    got, _ = metric_replicas(metric=metric, spec=spec, current=current, ready=ready)
    assert got == expected


def test_scale_up_is_rate_limited_per_period() -> None:
    decision, state = hpa_sync(
        metric=10.0, current=2, ready=2, state=HpaState(), spec=SPEC, now=0.0
    )
    assert decision.raw_desired == 20
    assert decision.replicas == 6  # max(2 + 4 pods, 2 * 200%)
    # 5 s later, same period: the start of the period is still 2 replicas.
    decision, state = hpa_sync(metric=10.0, current=6, ready=2, state=state, spec=SPEC, now=5.0)
    assert decision.replicas == 6
    # a new period: from 6, +100% = 12, capped by max 10.
    decision, _ = hpa_sync(metric=10.0, current=6, ready=2, state=state, spec=SPEC, now=16.0)
    assert decision.replicas == 10


def test_scale_down_waits_for_stabilization_window() -> None:
    state = HpaState()
    decision, state = hpa_sync(metric=3.0, current=2, ready=2, state=state, spec=SPEC, now=0.0)
    assert decision.replicas == 6
    for now in (15.0, 150.0, 299.0):
        decision, state = hpa_sync(metric=0.1, current=6, ready=6, state=state, spec=SPEC, now=now)
        assert decision.replicas == 6, now
    # the recommendation of t=0 has left the 300 s window; the low ones remain.
    decision, state = hpa_sync(metric=0.1, current=6, ready=6, state=state, spec=SPEC, now=301.0)
    assert decision.replicas == 5  # one pod per 60 s (the project's ScaledObject)
    decision, state = hpa_sync(metric=0.1, current=5, ready=5, state=state, spec=SPEC, now=330.0)
    assert decision.replicas == 5
    decision, state = hpa_sync(metric=0.1, current=5, ready=5, state=state, spec=SPEC, now=362.0)
    assert decision.replicas == 4


def test_default_hpa_scale_down_policy_removes_all_at_once() -> None:
    spec = KedaSpec(threshold_s=1.0, scale_down_pods=None, scale_down_period_s=15.0)
    decision, state = hpa_sync(metric=3.0, current=2, ready=2, state=HpaState(), spec=spec, now=0.0)
    decision, _ = hpa_sync(metric=0.1, current=6, ready=6, state=state, spec=spec, now=301.0)
    assert decision.replicas == 1


def test_missing_metric_holds() -> None:
    for metric in (None, math.nan):
        decision, state = hpa_sync(
            metric=metric, current=3, ready=3, state=HpaState(), spec=SPEC, now=0.0
        )
        assert not decision.valid
        assert decision.replicas == 3
        assert state == HpaState()


def test_hpa_is_disabled_at_zero() -> None:
    decision, _ = hpa_sync(metric=9.0, current=0, ready=0, state=HpaState(), spec=SPEC, now=0.0)
    assert decision.replicas == 0


def test_keda_activates_from_zero_and_caches_metric() -> None:
    spec = KedaSpec(min_replicas=0)
    poll, state = keda_poll(metric=math.nan, current=0, state=KedaState(), spec=spec, now=0.0)
    assert poll.scale_to is None
    assert state.cached_metric == 0.0
    poll, state = keda_poll(metric=0.4, current=0, state=state, spec=spec, now=30.0)
    assert poll.scale_to == 1
    assert state.cached_metric == 0.4
    # quiet again: not before the cooldown has passed since the last active poll.
    poll, state = keda_poll(metric=0.0, current=1, state=state, spec=spec, now=60.0)
    assert poll.scale_to is None
    poll, _ = keda_poll(metric=0.0, current=1, state=state, spec=spec, now=330.0)
    assert poll.scale_to == 0


def test_scaled_divides_every_period() -> None:
    scaled = KedaSpec().scaled(10.0)
    assert scaled.scrape_interval_s == 1.5
    assert scaled.query_window_s == 6.0
    assert scaled.polling_interval_s == 3.0
    assert scaled.hpa_sync_s == 1.5
    assert scaled.scale_down_stabilization_s == 30.0
    assert scaled.threshold_s == KedaSpec().threshold_s
    with pytest.raises(ValueError, match="speed"):
        KedaSpec().scaled(0)
