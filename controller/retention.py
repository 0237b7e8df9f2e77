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

The other side of the same choice is buying: a node asked for now serves only after
`reacquire_s`. `Excursions` remembers how long demand stayed at or above each level (a burst; the
policy feeds it replica counts, which see the many small bursts a node level would not), and
`worth_buying` says whether bursts that lasted as long as the current one mostly went on for
another `reacquire_s`: if not, a new node would arrive after the burst it was bought for.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=256)
def keep_seconds(
    gaps: tuple[float, ...],
    *,
    reacquire_s: float,
    penalty_s: float,
    min_gaps: int = 3,
    max_keep_s: float = 3600.0,
) -> float:
    """How long to keep a node demand no longer needs (see the module docstring). Cached: the
    policy asks on every evaluation and the gaps change only when a burst comes back."""
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


@dataclass(frozen=True, slots=True)
class Excursions:
    """How long demand stayed at or above each node level (a *burst* at that level).

    Dips shorter than `MERGE_S` do not end a burst (the need flickers at a level's edge)."""

    active: tuple[tuple[int, float, float], ...] = ()
    """(level, start, last time at or above it) of the bursts going on."""
    durations: tuple[float, ...] = ()
    """Completed bursts (seconds), oldest first, at most `MAX_GAPS`."""

    def update(self, needed: int, now: float) -> Excursions:
        """Fold in that `needed` nodes are needed at `now`."""
        active = {level: (start, last) for level, start, last in self.active}
        done: list[float] = []
        for level, (start, last) in list(active.items()):
            if level <= needed:
                active[level] = (start, now)
            elif now - last > MERGE_S:
                done.append(last - start)
                del active[level]
        for level in range(1, needed + 1):
            active.setdefault(level, (now, now))
        durations = (self.durations + tuple(done))[-MAX_GAPS:] if done else self.durations
        flat = tuple(sorted((lv, s, e) for lv, (s, e) in active.items()))
        if flat == self.active and durations is self.durations:
            return self
        return Excursions(active=flat, durations=durations)

    def age(self, level: int, now: float) -> float:
        """How long the burst at `level` has been going on (0 if none)."""
        for lv, start, _ in self.active:
            if lv == level:
                return now - start
        return 0.0


MERGE_S = 10.0


def worth_buying(
    durations: tuple[float, ...], *, age: float, reacquire_s: float, min_bursts: int = 3
) -> bool:
    """Whether a node bought now for a burst that has lasted `age` seconds is expected to serve
    it: among the past bursts that lasted at least `age`, at least half lasted `age +
    reacquire_s` (the node is Ready with its replicas by then). Buy when there is no history, and
    when this burst is already longer than any seen (nothing says it ends soon)."""
    if len(durations) < min_bursts:
        return True
    reached = [d for d in durations if d >= age]
    if not reached:
        return True
    lasting = sum(1 for d in reached if d >= age + reacquire_s)
    return 2 * lasting >= len(reached)
