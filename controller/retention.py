"""When to release a GPU node: a rent-or-buy choice learned from the gaps between bursts.

Pure (no I/O, no clock), used by `controller.policy` under node billing. A node that demand no
longer needs can be kept (rent: its price per second, while idle) or released (and, if demand comes
back, bought again: the node boots and the model loads before it serves, `reacquire_s`, during
which the node is billed and the requests it should have served miss their deadline; the policy
values such a return at `penalty_s` node-seconds, by default twice `reacquire_s`).

`Gaps` remembers how long demand stayed below each node level before it came back (a *gap*), and
`keep_seconds` picks the idle time after which to release: the threshold `T` that minimizes the
cost over the gaps seen, where a gap `g <= T` costs `g` (kept through it) and a longer one costs
`T + penalty_s` (released, then bought back). Until `min_gaps` gaps have been seen it is the
deterministic rent-or-buy rule `T = penalty_s` (never worse than twice the best choice in
hindsight); it is never below `reacquire_s` (releasing for less time than it takes to get the
node back saves nothing) nor above `max_keep_s`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

MAX_GAPS = 32
"""The most recent gaps kept."""


@dataclass(frozen=True, slots=True)
class Gaps:
    """Per node level, since when demand has been below it; and the recent completed gaps."""

    below_since: tuple[tuple[int, float], ...] = ()
    """(level, time demand fell below it), for the levels demand is below now."""
    gaps: tuple[float, ...] = ()
    """Completed gaps (seconds), oldest first, at most `MAX_GAPS`."""
    peak: int = 0
    """The highest node level ever needed (levels above it are not gaps)."""

    def update(self, needed: int, now: float) -> Gaps:
        """Fold in that `needed` nodes are needed at `now`."""
        needed = max(needed, 0)
        peak = max(self.peak, needed)
        since = dict(self.below_since)
        done: list[float] = []
        for level in list(since):
            if level <= needed:
                done.append(now - since.pop(level))
        for level in range(needed + 1, peak + 1):
            since.setdefault(level, now)
        if not done and peak == self.peak and len(since) == len(self.below_since):
            return self
        gaps = (self.gaps + tuple(g for g in done if g > 0))[-MAX_GAPS:]
        return replace(self, below_since=tuple(sorted(since.items())), gaps=gaps, peak=peak)


def keep_seconds(
    gaps: tuple[float, ...],
    *,
    reacquire_s: float,
    penalty_s: float,
    min_gaps: int = 3,
    max_keep_s: float = 3600.0,
) -> float:
    """How long to keep a node demand no longer needs (see the module docstring)."""
    low = max(reacquire_s, 0.0)
    high = max(max_keep_s, low)
    penalty = max(penalty_s, 0.0)
    if len(gaps) < min_gaps:
        return min(max(penalty, low), high)
    candidates = sorted({low, high, *(g for g in gaps if low <= g <= high)})
    best, best_cost = high, float("inf")
    for threshold in candidates:
        cost = sum(g if g <= threshold else threshold + penalty for g in gaps)
        if cost < best_cost - 1e-9:
            best, best_cost = threshold, cost
    return best
