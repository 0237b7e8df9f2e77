"""surgescale.stats.percentile: nearest rank, always an observed value, the evaluator's definition."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from surgescale.stats import percentile


def test_nearest_rank_values() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0  # not 2.5: no interpolation
    assert percentile([4.0, 1.0, 3.0, 2.0], 51) == 3.0
    assert percentile(range(1, 21), 95) == 19  # rank ceil(0.95 * 20) = 19
    assert percentile(range(1, 1001), 99.9) == 999  # not 1000 (0.999 * 1000 rounds up in floats)
    assert percentile([5.0, 1.0], 0) == 1.0
    assert percentile([5.0, 1.0], 100) == 5.0
    with pytest.raises(ValueError, match=r"in 0\.\.100"):
        percentile([1.0], 101)


@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=200),
    st.floats(min_value=0.0, max_value=100.0),
)
def test_at_least_q_percent_are_at_or_below_and_no_smaller_value_qualifies(
    values: list[float], q: float
) -> None:
    p = percentile(values, q)
    assert p is not None
    rank = max(1, math.ceil(q * len(values) / 100))
    assert sum(v <= p for v in values) >= rank
    assert sum(v < p for v in values) < rank


def test_the_evaluator_uses_it_and_reads_a_never_served_request_as_no_answer() -> None:
    from sim.evaluate.metrics import served_percentile

    values = [0.3, 1.7, 0.2, 9.0, 4.4, 0.9, 2.5]
    for q in (0, 10, 50, 90, 95, 99, 100):
        assert served_percentile(values, q) == percentile(values, q)
    # +inf is a request that never got a first token: a rank that falls on one has no value
    unserved = [0.1] * 90 + [math.inf] * 10
    assert served_percentile(unserved, 90) == 0.1
    assert served_percentile(unserved, 91) is None
    assert served_percentile([], 50) is None
