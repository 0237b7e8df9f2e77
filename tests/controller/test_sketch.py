"""`controller.sketch.Sketch` answers exactly as `ddsketch.DDSketch` with the same samples."""

from __future__ import annotations

import gc
import random

from ddsketch import DDSketch

from controller.sketch import Sketch, merged_quantile

QS = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0)


def test_quantiles_equal_ddsketch_for_weighted_samples_zeros_and_merges() -> None:
    rng = random.Random(7)
    for trial in range(40):
        accuracy = (0.01, 0.02, 0.05)[trial % 3]
        ours, ref = Sketch(accuracy), DDSketch(accuracy)
        other, ref_other = Sketch(accuracy), DDSketch(accuracy)
        for _ in range(rng.randrange(1, 400)):
            value = rng.choice((0.0, rng.lognormvariate(-2.0, 2.0), rng.uniform(0, 1e-3)))
            weight = 1 << rng.randrange(0, 4)
            target = rng.random() < 0.5
            (ours if target else other).add(value, weight)
            (ref if target else ref_other).add(value, weight)
        ours.merge(other)
        ref.merge(ref_other)
        assert ours.count == ref.count
        for q in QS:
            expected = ref.get_quantile_value(q)
            assert ours.get_quantile_value(q) == (None if expected is None else float(expected))


def test_an_empty_sketch_has_no_quantile_and_merging_it_changes_nothing() -> None:
    sketch = Sketch(0.01)
    assert sketch.get_quantile_value(0.5) is None
    sketch.add(0.25)
    sketch.merge(Sketch(0.01))
    ref = DDSketch(0.01)
    ref.add(0.25)
    assert sketch.get_quantile_value(0.5) == ref.get_quantile_value(0.5)


def test_sketches_of_different_accuracy_do_not_merge() -> None:
    try:
        Sketch(0.01).merge(Sketch(0.02))
    except ValueError:
        return
    raise AssertionError("merged sketches of different accuracies")


def test_the_bins_are_not_tracked_by_the_garbage_collector() -> None:
    """The point of the class: a full collection does not walk the bins."""
    sketch = Sketch(0.01)
    for i in range(1, 1000):
        sketch.add(i / 100.0)
    assert not gc.is_tracked(sketch._bins)


def test_the_quantile_of_two_sketches_equals_that_of_their_merge_to_the_bit() -> None:
    """`merged_quantile` (the windows' closed buckets with the open one) answers as a new sketch
    with both merged in, bit for bit, including zeros, empty sides and q at the ends."""
    rng = random.Random(11)
    for trial in range(300):
        accuracy = (0.01, 0.02)[trial % 2]
        a, b = Sketch(accuracy), Sketch(accuracy)
        for sketch, n in ((a, rng.randrange(0, 300)), (b, rng.randrange(0, 80))):
            for _ in range(n):
                value = rng.choice((0.0, rng.lognormvariate(-1.0, 1.5), rng.uniform(0, 1e-3)))
                sketch.add(value, 1 << rng.randrange(0, 4))
        merged = Sketch(accuracy)
        merged.merge(a)
        merged.merge(b)
        for q in (*QS, rng.random(), rng.random()):
            assert merged_quantile(a, b, q) == merged.get_quantile_value(q)
    try:
        merged_quantile(Sketch(0.01), Sketch(0.02), 0.5)
    except ValueError:
        return
    raise AssertionError("a quantile over sketches of different accuracies")
