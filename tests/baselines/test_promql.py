"""The baseline's PromQL core against hand-computed Prometheus answers."""

from __future__ import annotations

import math

import pytest

from sim.baselines.promql import (
    INF,
    HistogramSample,
    HistogramStore,
    extrapolated_rate,
    histogram_quantile,
    parse_histogram,
    to_sample,
)

BUCKETS = [(0.1, 10.0), (0.5, 20.0), (1.0, 30.0), (INF, 30.0)]


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        pytest.param(0.5, BUCKETS, 0.3, id="median-interpolates-in-bucket"),
        pytest.param(0.95, BUCKETS, 0.925, id="p95-in-third-bucket"),
        pytest.param(0.05, BUCKETS, 0.015, id="first-bucket-starts-at-zero"),
        pytest.param(
            0.9, [(0.1, 0.0), (1.0, 0.0), (INF, 5.0)], 1.0, id="inf-bucket-gives-last-bound"
        ),
        pytest.param(1.5, BUCKETS, INF, id="q-above-one"),
        pytest.param(-0.1, BUCKETS, -INF, id="q-below-zero"),
        pytest.param(
            0.5, [(0.1, 3.0), (0.5, 2.0), (INF, 4.0)], 0.1 * 2 / 3, id="non-monotonic-fixed"
        ),
    ],
)
def test_histogram_quantile(q: float, buckets: list[tuple[float, float]], expected: float) -> None:
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


@pytest.mark.parametrize(
    "buckets",
    [
        pytest.param([(0.1, 0.0), (INF, 0.0)], id="empty"),
        pytest.param([(INF, 4.0)], id="only-inf"),
        pytest.param([(0.1, 1.0), (1.0, 2.0)], id="no-inf"),
    ],
)
def test_histogram_quantile_without_answer_is_nan(buckets: list[tuple[float, float]]) -> None:
    assert math.isnan(histogram_quantile(0.95, buckets))


@pytest.mark.parametrize(
    ("points", "start", "end", "expected"),
    [
        pytest.param(
            [(15.0, 100.0), (30.0, 115.0), (45.0, 130.0), (60.0, 145.0)],
            0.0,
            60.0,
            1.0,
            id="extrapolates-to-window-start",
        ),
        pytest.param(
            [(15.0, 0.0), (30.0, 15.0), (45.0, 30.0), (60.0, 45.0)],
            0.0,
            60.0,
            0.75,
            id="counter-from-zero-not-extrapolated-below-zero",
        ),
        pytest.param(
            [(1.0, 10.0), (2.0, 20.0), (3.0, 5.0)],
            0.9,
            3.0,
            (15.0 + 0.1 * 7.5) / 2.1,
            id="counter-reset-folded-in",
        ),
        pytest.param(
            [(30.0, 100.0), (40.0, 110.0)],
            0.0,
            60.0,
            20.0 / 60.0,
            id="far-edges-extrapolate-half-an-interval",
        ),
    ],
)
def test_extrapolated_rate(
    points: list[tuple[float, float]], start: float, end: float, expected: float
) -> None:
    got = extrapolated_rate(points, start=start, end=end)
    assert got == pytest.approx(expected)


def test_rate_needs_two_samples() -> None:
    assert extrapolated_rate([(1.0, 5.0)], start=0.0, end=60.0) is None


EXPOSITION = """\
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 4.0
vllm:time_to_first_token_seconds_bucket{le="1.0",model_name="m"} 9.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 10.0
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="other"} 100.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="other"} 100.0
vllm:time_to_first_token_seconds_count{model_name="m"} 10.0
vllm:num_requests_waiting{model_name="m"} 3.0
"""


def test_parse_histogram_filters_labels() -> None:
    got = parse_histogram(EXPOSITION, "vllm:time_to_first_token_seconds", {"model_name": "m"})
    assert got == {0.1: 4.0, 1.0: 9.0, INF: 10.0}


def test_parse_histogram_sums_matching_series() -> None:
    got = parse_histogram(EXPOSITION, "vllm:time_to_first_token_seconds")
    assert got[0.1] == 104.0
    assert got[INF] == 110.0


def test_store_quantile_sums_pods_and_drops_single_samples() -> None:
    store = HistogramStore()
    # pod a: 10 requests in the window, all in (0.1, 1]; pod b: one sample only (ignored).
    store.add("a", HistogramSample(ts=10.0, buckets=((0.1, 0.0), (1.0, 0.0), (INF, 0.0))))
    store.add("a", HistogramSample(ts=25.0, buckets=((0.1, 0.0), (1.0, 10.0), (INF, 10.0))))
    store.add("b", HistogramSample(ts=25.0, buckets=((0.1, 50.0), (1.0, 50.0), (INF, 50.0))))
    got = store.quantile_over_rate(0.5, at=30.0, window_s=60.0)
    assert got == pytest.approx(0.55)
    # later, the first sample of pod a leaves the window: no answer.
    assert math.isnan(store.quantile_over_rate(0.5, at=71.0, window_s=60.0))


def test_to_sample_requires_inf_bucket() -> None:
    assert to_sample(1.0, {0.1: 1.0}) is None
    sample = to_sample(1.0, {INF: 2.0, 0.1: 1.0})
    assert sample is not None
    assert sample.buckets == ((0.1, 1.0), (INF, 2.0))


def test_parse_histogram_unescapes_labels_and_keeps_what_precedes_a_cut_line() -> None:
    text = (
        'x_bucket{le="1",m="a\\"b"} 2\n'
        'x_bucket{le="+Inf",m="a\\"b"} 3\n'
        'x_bucket{le="+Inf",m="other"} 5\n'
        'x_bucket{le="+Inf" 9\n'  # a scrape cut short: the parser rejects it
    )
    assert parse_histogram(text, "x", {"m": 'a"b'}) == {1.0: 2.0, INF: 3.0}
    assert parse_histogram(text, "x") == {1.0: 2.0, INF: 8.0}
