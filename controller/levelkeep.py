"""How long each idle node level is kept: learned from that level's own gaps.

Pure (no I/O, no clock), used by `controller.policy` under node billing. Node level L is the
L-th node the fleet holds; it is idle while demand needs fewer than L nodes, and a *gap* at L
is how long demand stayed below L before it came back. `controller.retention.keep_seconds`
turns gaps into a keep time (rent or buy: keep while that costs less than a return is expected
to cost).

Why per level, and why the short gaps are only counted. The fleet-wide memory
(`retention.Gaps`) pools every level's gaps in the last 32: on the Azure code trace the need
flickers across the lowest levels every few seconds, so it holds little but gaps of 0-30 s,
and a gap of 400 s seen ten minutes ago is pushed out within minutes. A gap shorter than a
reacquire time (node boot + model load) tells nothing about the keep: every admissible keep
(never below a reacquire time) covers it at the same cost. So here a level remembers its long
gaps (the last `MAX_GAPS`) and only counts its short ones (up to `MIN_GAPS`: enough to say "this
level comes back quickly", no more). The levels a fleet holds most of the time (the low ones)
learn that demand returns to them after 5-8 minutes and are kept through it; a level bought
once for a burst learns nothing of the kind and is released after the fleet-wide keep (a
level with fewer than `MIN_GAPS` gaps of its own uses it).

70B TP4 on the Azure code trace at 1x (docs/evaluate.md, branch `code1x`): with the fleet-wide
keep (295 s, learned from one long gap left in the memory) the 5 nodes idle since 2,660 s were
released at 2,892-2,982 s and demand came back at 3,075 s: ~200 requests missed while new
nodes booted. Each level's own gaps (400-990 s at levels 2-5 by then) keep them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MAX_GAPS = 32
"""The most recent long gaps kept per level."""
MIN_GAPS = 3
"""Gaps a level must have seen before its own keep applies (the short ones counted up to it)."""


@dataclass(frozen=True, slots=True)
class LevelGaps:
    """Per node level: since when demand has been below it, its long gaps and its short ones."""

    below_since: tuple[tuple[int, float], ...] = ()
    """(level, time demand fell below it), for the held levels demand is below now."""
    long: tuple[tuple[int, tuple[float, ...]], ...] = ()
    """(level, its gaps longer than `min_gap_s`, oldest first)."""
    short: tuple[tuple[int, int], ...] = ()
    """(level, how many gaps no longer than `min_gap_s` it had, at most `MIN_GAPS`)."""

    def update(self, needed: int, held: int, now: float, *, min_gap_s: float) -> LevelGaps:
        """Fold in that `needed` nodes are needed at `now` while `held` are held."""
        needed = max(needed, 0)
        since = dict(self.below_since)
        ended = [(level, now - t) for level, t in since.items() if level <= needed]
        for level, _ in ended:
            del since[level]
        for level in range(needed + 1, max(held, needed) + 1):
            since.setdefault(level, now)
        if not ended and len(since) == len(self.below_since):
            return self
        long, short = dict(self.long), dict(self.short)
        for level, gap in ended:
            if gap > min_gap_s:
                long[level] = (*long.get(level, ()), gap)[-MAX_GAPS:]
            else:
                short[level] = min(short.get(level, 0) + 1, MIN_GAPS)
        return LevelGaps(
            below_since=tuple(sorted(since.items())),
            long=tuple(sorted(long.items())),
            short=tuple(sorted(short.items())),
        )

    def gaps(self, level: int) -> tuple[float, ...]:
        """The level's gaps as `keep_seconds` reads them: each short one as 0 s (any keep covers
        it), then the long ones."""
        shorts = dict(self.short).get(level, 0)
        return (0.0,) * shorts + dict(self.long).get(level, ())


def kept_nodes(
    levels: LevelGaps,
    *,
    held: int,
    now: float,
    keep: Callable[[tuple[float, ...]], float],
    fleet_keep_s: float,
) -> tuple[int, float]:
    """(held levels to keep, the keep time of the highest held level): a held level demand is
    below is kept while it has been idle for less than its own keep (`keep` of its gaps, or
    `fleet_keep_s` before it has seen `MIN_GAPS` of them)."""
    kept = 0
    top_keep = fleet_keep_s
    for level, since in levels.below_since:
        if level > held:
            continue
        own = levels.gaps(level)
        level_keep = keep(own) if len(own) >= MIN_GAPS else fleet_keep_s
        if level == held:
            top_keep = level_keep
        if now - since < level_keep:
            kept = max(kept, level)
    return kept, top_keep
