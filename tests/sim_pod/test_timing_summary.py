"""The pod's timing-error summary (`/admin/stats`, read by `surgescale bench pod`): magnitudes in
ms, percentiles by the project's one definition (nearest rank, `surgescale.stats.percentile`)."""

from __future__ import annotations

import pytest

from sim.pod.app import timing_summary


def test_empty() -> None:
    assert timing_summary([]) == {
        "tokens": 0,
        "mean_ms": 0.0,
        "p50_ms": 0.0,
        "p99_ms": 0.0,
        "max_ms": 0.0,
    }


def test_percentiles_are_observed_magnitudes_not_interpolations() -> None:
    # 100 tokens: 98 at 1 ms late, one 4 ms early, one 20 ms late
    signed = [0.001] * 98 + [-0.004, 0.020]
    s = timing_summary(signed)
    assert s["tokens"] == 100
    assert s["mean_ms"] == pytest.approx((0.098 - 0.004 + 0.020) * 10)  # signed mean
    assert s["p50_ms"] == pytest.approx(1.0)
    assert s["p99_ms"] == pytest.approx(4.0)  # the 99th of 100 magnitudes, not between 4 and 20
    assert s["max_ms"] == pytest.approx(20.0)
