"""Knative's KPA decider (`sim.baselines.kpa`), pure: stable and panic windows over concurrency."""

from __future__ import annotations

from sim.baselines.kpa import KpaConfig, KpaDecider


def test_no_data_no_decision() -> None:
    assert KpaDecider(KpaConfig(), container_concurrency=10).desired(0.0, ready=1) is None


def test_stable_window_average_over_the_target() -> None:
    kpa = KpaDecider(KpaConfig(), container_concurrency=10)  # target 7 per pod
    for _ in range(60):
        kpa.record(14.0)
    assert kpa.desired(60.0, ready=2) == 2  # ceil(14 / 7)
    assert kpa.panicking_ticks == 0


def test_a_jump_panics_and_panic_never_scales_down_until_a_stable_window_passes() -> None:
    kpa = KpaDecider(KpaConfig(), container_concurrency=10)
    for _ in range(54):
        kpa.record(7.0)
    for _ in range(6):  # the 6 s panic window sees 4x the load
        kpa.record(28.0)
    assert kpa.desired(60.0, ready=1) == 4  # panic: ceil(28 / 7), not the stable ceil(9.1 / 7)
    assert kpa.panicking_ticks == 1
    for _ in range(60):
        kpa.record(0.0)
    assert kpa.desired(62.0, ready=4) == 4  # still in panic (within a stable window): held
    assert kpa.desired(121.0, ready=4) == 2  # panic over; scale-down limited to /2 per tick
