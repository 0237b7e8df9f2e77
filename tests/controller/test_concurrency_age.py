"""The learned concurrency forgets old TPOT samples (`TpotByBatch.prune`, `tpot_window_s`)."""

from __future__ import annotations

from controller.concurrency import TpotByBatch


def _fill(t: TpotByBatch, batch: float, tpot_s: float, *, at: float, n: int = 30) -> None:
    for _ in range(n):
        t.add(batch, tpot_s, at=at)


def test_a_burst_of_slow_tpot_stops_capping_the_concurrency_once_it_is_old() -> None:
    """Samples from a burst (TPOT 200 ms at batches 12-36) pin the concurrency low; once they
    are older than `max_age_s` they no longer count and the seed (max_num_seqs) is back."""
    t = TpotByBatch(max_age_s=300.0)
    _fill(t, 4.0, 0.007, at=100.0)
    for batch in (12.0, 20.0, 28.0, 36.0):
        _fill(t, batch, 0.2, at=144.0)
    _fill(t, 4.0, 0.007, at=400.0)
    t.prune(300.0)
    learned = t.largest_batch(0.05, max_num_seqs=256)
    assert learned is not None
    assert learned <= 8  # the bin at 12 already misses
    t.prune(445.0)
    assert set(t.bins) == {0}  # the burst's bins (batches 12-36) are gone
    assert t.largest_batch(0.05, max_num_seqs=256) is None  # one bin left: the seed
    assert len(t.bins[0]) == 30  # the fresh samples stay (the old ones at 100 s went)


def test_fresh_samples_are_kept() -> None:
    t = TpotByBatch(max_age_s=300.0)
    _fill(t, 4.0, 0.007, at=0.0)
    _fill(t, 60.0, 0.09, at=0.0)
    t.prune(299.0)
    learned = t.largest_batch(0.05, max_num_seqs=256)
    assert learned is not None
    assert learned < 60
