"""The one SLO definition: deadlines, TTFT/TPOT checks and validation of bad settings."""

from __future__ import annotations

import math

import pytest

from surgescale.slo import Slo


@pytest.mark.parametrize(
    ("slo", "prompt", "budget"),
    [
        pytest.param(Slo(ttft_base_s=1.0), 5000, 1.0, id="flat"),
        pytest.param(Slo(ttft_base_s=1.0, ttft_per_input_token_s=0.001), 500, 1.5, id="per-token"),
        pytest.param(Slo(ttft_base_s=0.5, ttft_per_input_token_s=0.001), None, 0.5, id="unknown"),
        pytest.param(Slo(ttft_base_s=0.5, ttft_per_input_token_s=0.001), -3, 0.5, id="negative"),
    ],
)
def test_budget_and_deadline(slo: Slo, prompt: int | None, budget: float) -> None:
    assert slo.ttft_budget(prompt) == pytest.approx(budget)
    assert slo.deadline(100.0, prompt) == pytest.approx(100.0 + budget)


def test_met_needs_ttft_and_tpot() -> None:
    slo = Slo(ttft_base_s=1.0, tpot_s=0.05)
    assert slo.met(ttft_s=1.0, tpot_s=0.05, prompt_tokens=10)
    assert not slo.met(ttft_s=1.01, tpot_s=0.01, prompt_tokens=10)
    assert not slo.met(ttft_s=0.2, tpot_s=0.06, prompt_tokens=10)
    assert not slo.met(ttft_s=None, tpot_s=None, prompt_tokens=10)
    assert slo.met(ttft_s=0.2, tpot_s=None, prompt_tokens=10)  # one token: no TPOT
    assert Slo(ttft_base_s=1.0).met(ttft_s=0.9, tpot_s=9.0, prompt_tokens=1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"ttft_base_s": -1.0}, "ttft_base_s", id="base-negative"),
        pytest.param({"ttft_base_s": 0.0}, "ttft_base_s", id="base-zero"),
        pytest.param({"ttft_per_input_token_s": -0.1}, "ttft_per_input_token_s", id="allowance"),
        pytest.param({"tpot_s": math.nan}, "tpot_s", id="tpot-nan"),
        pytest.param({"ttft_base_s": math.inf}, "ttft_base_s", id="base-inf"),
    ],
)
def test_checked_names_the_bad_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Slo.checked(**kwargs)


def test_checked_accepts_good_values() -> None:
    assert Slo.checked(ttft_base_s=2.0, ttft_per_input_token_s=0.0002, tpot_s=0.05) == Slo(
        ttft_base_s=2.0, ttft_per_input_token_s=0.0002, tpot_s=0.05
    )
