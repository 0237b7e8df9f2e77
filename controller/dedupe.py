"""Once-only application of events: which `eseq` of a producer incarnation were seen.

The producer (`surgescale.events.producer`) stamps each event with its `origin` (random per
producer start) and a per-(origin, model) `eseq` in stream order. `controller.state` keeps one
`SeqTracker` per origin and model: a high-water mark, plus a few open gaps below it so entries
delivered out of order (reclaimed with XAUTOCLAIM after newer ones were read) still apply once.
Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations


class SeqTracker:
    """Which `eseq` of one origin were applied: a high-water mark and a few open gaps."""

    __slots__ = ("gaps", "high", "max_gaps")

    def __init__(self, max_gaps: int) -> None:
        self.high = 0
        self.gaps: list[list[int]] = []
        """[first, last] ranges below `high` not seen yet, oldest first."""
        self.max_gaps = max_gaps

    def first_time(self, n: int) -> bool:
        """Record `n`; True if it was not seen before."""
        high = self.high
        if n == high + 1:
            self.high = n
            return True
        if n > high:
            if high > 0:  # the first event seen says nothing of what came before it
                self.gaps.append([high + 1, n - 1])
                if len(self.gaps) > self.max_gaps:
                    del self.gaps[0]
            self.high = n
            return True
        for i, gap in enumerate(self.gaps):
            lo, hi = gap
            if lo <= n <= hi:
                if lo == hi:
                    del self.gaps[i]
                elif n == lo:
                    gap[0] = n + 1
                elif n == hi:
                    gap[1] = n - 1
                else:
                    gap[1] = n - 1
                    self.gaps.insert(i + 1, [n + 1, hi])
                return True
        return False
