"""The learned concurrency is clamped to `[1, max_num_seqs]` (`controller.concurrency`): cases
where the fitted TPOT line crosses the objective outside that range, so a missing bound shows."""

from __future__ import annotations

import pytest

from controller.concurrency import BIN_WIDTH, TpotByBatch


def tpot_s(batch: float) -> float:
    return (5.0 + 0.5 * batch) / 1000  # crosses 50 ms at batch 90


def learned_from_batches_up_to_60() -> TpotByBatch:
    curve = TpotByBatch()
    for _ in range(20):
        for batch in range(4, 61, 4):
            curve.add(batch, tpot_s(batch))
    return curve


@pytest.mark.parametrize(
    ("objective_s", "max_num_seqs", "expected", "within"),
    [
        # the line goes through the bins' centres, so the crossing is found to within a bin
        pytest.param(0.050, 256, 90, BIN_WIDTH, id="inside the range: where the line crosses"),
        pytest.param(0.050, 64, 64, 0, id="crossing above max_num_seqs: the engine's limit"),
        pytest.param(0.050, 1, 1, 0, id="max_num_seqs of one"),
        pytest.param(0.004, 256, 1, 0, id="objective below the line's intercept: one sequence"),
    ],
)
def test_the_learned_concurrency_stays_within_one_and_max_num_seqs(
    objective_s: float, max_num_seqs: int, expected: int, within: int
) -> None:
    got = learned_from_batches_up_to_60().largest_batch(objective_s, max_num_seqs=max_num_seqs)
    assert got is not None
    assert abs(got - expected) <= within, got
    assert 1 <= got <= max_num_seqs
