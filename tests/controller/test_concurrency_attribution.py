"""TPOT attributed to the batch, not to a burst's prefills (`controller.concurrency`), and the
service rate sized at the concurrency it is used for (`controller.state`)."""

from __future__ import annotations

import math
import random

import pytest

from controller.concurrency import TpotByBatch
from controller.state import StateStore
from surgescale.events import Event, EventType

M = "m"
STALL = 7e-5
"""Seconds a decode step loses per prompt token its replica takes in (per output token)."""


def decode_ms(batch: float) -> float:
    return 5.0 + 0.5 * batch  # crosses a 50 ms objective at batch 90


def steady_load(batch: float) -> float:
    return 5.0 * batch  # prompt tokens per output token that a batch brings with it


def fill(curve: TpotByBatch, rng: random.Random, *, bursts: bool) -> None:
    """Steady samples at batches 4..60; with `bursts`, samples at batches 12..36 whose replicas
    took in a burst of long prompts while they decoded (+100..300 ms of stall)."""
    for _ in range(20):
        for batch in range(4, 61, 4):
            load = steady_load(batch) * rng.uniform(0.8, 1.2)
            tpot = decode_ms(batch) / 1000 + STALL * load
            curve.add(batch, tpot * rng.uniform(0.97, 1.03), load)
        if bursts:
            for batch in (12, 20, 28, 36):
                load = steady_load(batch) + rng.uniform(1500.0, 4000.0)
                curve.add(batch, decode_ms(batch) / 1000 + STALL * load, load)


def test_a_bursts_prefill_stall_does_not_collapse_the_concurrency() -> None:
    rng = random.Random(1)
    naive, curve = TpotByBatch(min_fit_samples=10**9), TpotByBatch()
    fill(naive, random.Random(1), bursts=True)
    fill(curve, rng, bursts=True)
    # taking every sample as the batch's fault: the burst bins miss 50 ms, concurrency ~8
    assert (naive.largest_batch(0.050, max_num_seqs=256) or 0) <= 12
    assert curve.stall_s_per_prefill_token() == pytest.approx(STALL, rel=0.25)
    learned = curve.largest_batch(0.050, max_num_seqs=256)
    assert learned is not None
    # the steady load a batch brings stays its own: 5 + 0.85 ms per sequence crosses 50 ms at 53
    assert 45 <= learned <= 60


def test_load_that_grows_with_the_batch_is_the_batchs_own() -> None:
    """Without bursts nothing is removed: prefill load proportional to the batch is part of
    what running that batch costs."""
    curve, naive = TpotByBatch(), TpotByBatch(min_fit_samples=10**9)
    fill(curve, random.Random(2), bursts=False)
    fill(naive, random.Random(2), bursts=False)
    assert curve.largest_batch(0.050, max_num_seqs=256) == pytest.approx(
        naive.largest_batch(0.050, max_num_seqs=256), abs=3
    )


@pytest.mark.parametrize(
    ("seen", "used", "expected"),
    [
        pytest.param(10.0, 90.0, (5 + 45) / (5 + 5), id="larger batch: slower tokens"),
        pytest.param(90.0, 10.0, 1.0, id="smaller batch: not assumed faster"),
        pytest.param(30.0, 30.0, 1.0, id="same batch"),
    ],
)
def test_slowdown_from_the_tpot_line(seen: float, used: float, expected: float) -> None:
    curve = TpotByBatch()
    for _ in range(30):
        for batch in (4, 20, 36, 52):  # bin centres
            curve.add(batch, decode_ms(batch) / 1000)
    assert curve.slowdown(seen, used) == pytest.approx(expected, rel=0.05)
    assert TpotByBatch().slowdown(seen, used) == 1.0  # no line yet: no correction


def ev(kind: EventType, rid: str = "", **kw: object) -> Event:
    return Event(type=kind, model=M, gateway="g", ts_ms=0, request_id=rid, **kw)  # type: ignore[arg-type]


def test_state_feeds_the_prefill_load_each_request_decoded_under() -> None:
    """A request that decoded while its replica took in 4,000 prompt tokens over 10 output
    tokens carries 400 tokens per output token; one that decoded alone carries 0."""
    store = StateStore()
    store.ingest([ev(EventType.SNAPSHOT, queue_depth=0, in_flight=0, interval_ms=1000)], 0.0)
    model = store.model(M)
    model.sample(0.0, ready_replicas=2, concurrency_per_replica=256)
    store.ingest([ev(EventType.ENQUEUE, "a", prompt_tokens=100)], 0.1)
    store.ingest([ev(EventType.DISPATCH, "a")], 0.1)
    for i in range(4):
        store.ingest([ev(EventType.ENQUEUE, f"b{i}", prompt_tokens=2000)], 0.2)
        store.ingest([ev(EventType.DISPATCH, f"b{i}")], 0.2)
    store.ingest([ev(EventType.COMPLETE, "a", tpot_ms=40.0, output_tokens=11)], 1.0)
    (bin_samples,) = [s for s in model.tpot_by_batch.bins.values() if s]
    ((tpot, load),) = bin_samples
    assert tpot == 0.040
    assert load == pytest.approx(8000 / 2 / 10)
    store.ingest([ev(EventType.COMPLETE, "b0", tpot_ms=20.0, output_tokens=11)], 1.0)
    samples = [x for s in model.tpot_by_batch.bins.values() for _, x in s]
    assert samples[-1] == pytest.approx(6000 / 2 / 10)  # b1..b3 came after b0's dispatch


def _p95_from_scratch(curve: TpotByBatch, min_samples: int = 20) -> list[tuple[float, float]]:
    """`p95_by_batch` as it was computed before it kept its ratios sorted: every value
    recomputed and sorted at every call."""
    out = []
    c = curve.stall_s_per_prefill_token()
    per_batch = 0.0
    if c > 0:
        ratios = sorted(x / b for b, x, _ in curve.fit.recent)
        per_batch = ratios[len(ratios) // 2]
    for key in sorted(curve.bins):
        kept = curve.bins[key]
        if c > 0:
            typical = per_batch * (key + 0.5) * curve.bin_width
            samples = sorted(t - c * max(x - typical, 0.0) for t, x in kept)
        else:
            samples = sorted(t for t, _ in kept)
        if len(samples) < min_samples:
            continue
        rank = max(math.ceil(0.95 * len(samples)) - 1, 0)
        out.append(((key + 0.5) * curve.bin_width, samples[rank]))
    return out


def test_incremental_bins_give_exactly_what_a_refit_from_scratch_gives() -> None:
    """The sorted ratios kept per sample (old samples leaving the fit's window included) give the
    same floats (==) as recomputing everything at every sample, on bursts and steady load."""
    rng = random.Random(5)
    curve = TpotByBatch(fit_samples=200, min_fit_samples=32)
    checked = 0
    for i in range(1500):
        batch = rng.choice((1, 3, 7, 9, 15, 16, 17, 30, 31, 44))
        load = steady_load(batch) * rng.uniform(0.5, 1.5)
        if i % 50 < 10:  # a burst of long prompts now and then
            load += rng.uniform(1000.0, 3000.0)
        curve.add(batch, (decode_ms(batch) / 1000 + STALL * load) * rng.uniform(0.9, 1.1), load)
        expected = _p95_from_scratch(curve)
        assert curve.p95_by_batch() == expected, i
        checked += bool(expected) and curve.stall_s_per_prefill_token() > 0
    assert len(curve.fit.recent) == 200  # the window was full: samples left it
    assert checked > 1000  # compared with a fitted stall, not only the plain case
