"""What "within SLO" means: one definition shared by the gateway, the controller and the simulator.

A request's TTFT deadline is set at admission: `arrival + base + per-input-token allowance *
prompt tokens`. The allowance defaults to 0; it exists because a long prompt's prefill alone can
take longer than a flat objective. A request is *within SLO* when its first token arrived by its
deadline and, where a TPOT objective is set, its mean time per output token after the first meets
that objective too.

Pure: no clock, no I/O. Times are seconds on whatever clock the caller uses (the gateway's
monotonic clock, the evaluator's virtual clock); only differences matter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Slo:
    """A model's service-level objective. Validate once where it enters (`Slo.checked`)."""

    ttft_base_s: float = 1.0
    """TTFT allowed to every request, seconds."""
    ttft_per_input_token_s: float = 0.0
    """Extra TTFT allowed per prompt token, seconds (e.g. 0.0002 = 0.2 s per 1,000 tokens)."""
    tpot_s: float | None = None
    """Mean time per output token after the first, seconds; `None` = no TPOT objective."""

    @classmethod
    def checked(
        cls,
        *,
        ttft_base_s: float = 1.0,
        ttft_per_input_token_s: float = 0.0,
        tpot_s: float | None = None,
    ) -> Slo:
        """An `Slo`, or `ValueError` naming the field that is negative or not finite."""
        for name, value in (
            ("ttft_base_s", ttft_base_s),
            ("ttft_per_input_token_s", ttft_per_input_token_s),
            ("tpot_s", tpot_s),
        ):
            if value is None:
                continue
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if ttft_base_s <= 0:
            raise ValueError(f"ttft_base_s must be > 0, got {ttft_base_s!r}")
        return cls(
            ttft_base_s=ttft_base_s,
            ttft_per_input_token_s=ttft_per_input_token_s,
            tpot_s=tpot_s,
        )

    def ttft_budget(self, prompt_tokens: int | None) -> float:
        """Seconds from arrival to the deadline for a prompt of this many tokens (unknown = 0)."""
        tokens = prompt_tokens if prompt_tokens is not None and prompt_tokens > 0 else 0
        return self.ttft_base_s + self.ttft_per_input_token_s * tokens

    def deadline(self, arrival: float, prompt_tokens: int | None) -> float:
        """The time by which this request's first token is due."""
        return arrival + self.ttft_budget(prompt_tokens)

    def ttft_met(self, ttft_s: float | None, prompt_tokens: int | None) -> bool:
        """Whether a first token `ttft_s` after arrival met the deadline (`None` = never came)."""
        return ttft_s is not None and ttft_s <= self.ttft_budget(prompt_tokens)

    def tpot_met(self, tpot_s: float | None) -> bool:
        """Whether a request's mean TPOT meets the objective (always, when none is set or when
        the request produced at most one token and so has no TPOT)."""
        return self.tpot_s is None or tpot_s is None or tpot_s <= self.tpot_s

    def met(self, *, ttft_s: float | None, tpot_s: float | None, prompt_tokens: int | None) -> bool:
        """Within SLO: the TTFT deadline met and, where set, the TPOT objective met."""
        return self.ttft_met(ttft_s, prompt_tokens) and self.tpot_met(tpot_s)
