"""Detect a step up in the arrival rate within a few arrivals: CUSUM tests on a Poisson process.

Pure (no I/O, no clock: every call takes `now`); `controller.state` feeds it the arrivals and puts
its verdict in the policy's `Observation` (`arrival_step_rate`).

The arrivals are modelled as a Poisson process of rate `baseline` (an exponentially weighted
rate with time constant `baseline_tau_s`). For each alternative `ratio` in `ratios` a one-sided
CUSUM accumulates the log-likelihood ratio of "rate is `ratio * baseline`" against "rate is
`baseline`": `n * ln(ratio) - (ratio - 1) * baseline * dt` for `n` arrivals in `dt` seconds, reset
at zero. When one of them passes `threshold` (`ln(10^6)` ~ 13.8, so that under a steady rate a
false alarm is rare), the step is *certain*: the
rate since that statistic last left zero (the change point estimate) becomes the new baseline and
is reported as the step rate for `hold_s`. A large step is caught within a handful of arrivals
(at 8x the baseline each arrival adds ~1.2, so about six of them); a small one takes more, and the
ordinary rate windows answer it anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

DEFAULT_RATIOS = (2.0, 4.0, 8.0, 16.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSettings:
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    threshold: float = math.log(1e6)
    baseline_tau_s: float = 30.0
    min_baseline: float = 0.05
    """Floor of the baseline rate (req/s), so the very first arrivals are not infinitely
    surprising."""
    hold_s: float = 5.0
    """How long a detected step rate is reported after the alarm."""
    min_gain: float = 1.5
    """An alarm counts only when the new rate is at least this multiple of the baseline."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepDetector:
    """The detector's state; every method returns a new one."""

    settings: StepSettings = field(default_factory=StepSettings)
    baseline: float = 0.0
    last_t: float | None = None
    scores: tuple[float, ...] = ()
    """One CUSUM statistic per ratio."""
    starts: tuple[tuple[float, int], ...] = ()
    """Per ratio, (time, arrivals counted since) from when its statistic last left zero."""
    step_rate: float | None = None
    step_at: float | None = None
    alarms: int = 0

    def observe(self, now: float, arrivals: int = 0) -> StepDetector:
        """`arrivals` arrived at `now` (0: just let time pass)."""
        s = self.settings
        if self.last_t is None:
            return replace(
                self,
                last_t=now,
                baseline=max(s.min_baseline, 0.0),
                scores=tuple(0.0 for _ in s.ratios),
                starts=tuple((now, 0) for _ in s.ratios),
            )
        dt = max(now - self.last_t, 0.0)
        base = max(self.baseline, s.min_baseline)
        scores: list[float] = []
        starts: list[tuple[float, int]] = []
        alarm: tuple[float, int] | None = None
        for ratio, score, (t0, n0) in zip(s.ratios, self.scores, self.starts, strict=True):
            llr = arrivals * math.log(ratio) - (ratio - 1.0) * base * dt
            if score <= 0.0:
                t0, n0 = self.last_t, 0  # the statistic leaves zero here: a candidate change
            score = max(score + llr, 0.0)
            n0 += arrivals
            if score >= s.threshold and alarm is None:
                alarm = (t0, n0)
            scores.append(score)
            starts.append((t0, n0) if score > 0 else (now, 0))
        # The baseline follows the arrivals with an exponential weight (a rate estimate).
        decay = math.exp(-dt / s.baseline_tau_s) if s.baseline_tau_s > 0 else 0.0
        baseline = base * decay + (arrivals / s.baseline_tau_s if s.baseline_tau_s > 0 else 0.0)
        step_rate, step_at, alarms = self.step_rate, self.step_at, self.alarms
        if alarm is not None:
            t0, n = alarm
            span = max(now - t0, 1e-3)
            # (n - 1) / T is unbiased for n Poisson arrivals in T; one standard deviation below
            # it, as a step seen over ~10 arrivals is uncertain by ~30 % (the rate windows
            # follow within seconds). Requests that arrive together (a client's batch) say the
            # rate rose, not that it is their count per millisecond, so the estimate is capped at
            # the largest alternative tested.
            k = max(n - 1, 1)
            rate = min(max(k - math.sqrt(k), 1.0) / span, max(s.ratios) * base)
            if rate >= s.min_gain * base:
                step_rate, step_at, alarms = rate, now, alarms + 1
                baseline = max(baseline, rate)
            scores = [0.0 for _ in s.ratios]
            starts = [(now, 0) for _ in s.ratios]
        if step_at is not None and now - step_at > s.hold_s:
            step_rate, step_at = None, None
        return StepDetector(  # direct: `replace` cost more than the test (called per event)
            settings=s,
            last_t=now,
            baseline=baseline,
            scores=tuple(scores),
            starts=tuple(starts),
            step_rate=step_rate,
            step_at=step_at,
            alarms=alarms,
        )

    def rate(self, now: float) -> float | None:
        """The detected step rate if an alarm fired within `hold_s` before `now`."""
        if self.step_at is None or now - self.step_at > self.settings.hold_s:
            return None
        return self.step_rate
