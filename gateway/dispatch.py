"""Who among the queued requests goes next: the dispatch order of `gateway.admission`.

Pure, no clock: every decision takes `now` (seconds, on the same clock as the tickets'
`arrived` and `deadline`). Each queued request is in one of three classes, tried in this order:

1. `OVERDUE`: it has waited `late_max_wait_s` or longer. These go first, oldest first, so no
   request waits past that bound while slots free up (no starvation of late requests).
2. `FRESH`: it can still meet its TTFT deadline if dispatched now, i.e.
   `now + first_token_s <= deadline`, where `first_token_s` is the expected time from dispatch
   to the first token. FIFO among them.
3. `LATE`: it cannot meet its deadline any more. FIFO among them; they use the slots fresh
   requests leave.

With `DispatchOrder.FIFO` nobody is ever classed late: plain arrival order (the old behaviour).
A request only moves down the list as time passes (fresh -> late) and up once its wait reaches
the bound (-> overdue).

The policy also carries the prefill gate (`prefill_limit`: a pod takes a new request only while
fewer than that many of its requests await their first token), which `gateway.admission`
applies when it picks a pod.

`Lane` holds one API key's queued requests in that order (heaps keyed by arrival sequence, with
lazily skipped entries); `gateway.admission.ModelQueue` keeps one lane per key and does the
fairness across keys on top.
"""

from __future__ import annotations

import enum
import heapq
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.admission import Ticket


class DispatchOrder(enum.StrEnum):
    """How a model's queue is ordered."""

    FIFO = "fifo"
    """Arrival order."""
    DEADLINE = "deadline"
    """Requests that can still meet their deadline before those that cannot (see module doc)."""


class Urgency(enum.IntEnum):
    """A queued request's class; lower goes first."""

    OVERDUE = 0
    FRESH = 1
    LATE = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchPolicy:
    """How one model's queue hands out slots. Validate with `DispatchPolicy.checked`."""

    order: DispatchOrder = DispatchOrder.DEADLINE
    first_token_s: float = 0.1
    """Expected time from dispatch to the first token (a request dispatched later than
    `deadline - first_token_s` counts as late). The gateway's default too."""
    late_max_wait_s: float = 30.0
    """A request that has waited this long (from arrival) goes before every newer one."""
    prefill_limit: int | None = None
    """The prefill gate: a pod takes a new request only while fewer than this many of its
    requests await their first token (None or 0: no gate). A prompt's prefill stalls the
    decoding of every request on the pod, so prompts that pile up there push TPOT over."""
    prefill_token_budget: int | None = None
    """Gate on prompt tokens instead (an experiment, not in the gateway's settings): a pod takes
    a new request only while the prompts awaiting their first token there sum to less than
    this (None or 0: no budget)."""
    prefill_min_decoding: int = 0
    """The gates apply only to a pod with at least this many requests past their first token
    (an experiment, not in the gateway's settings; 0: always): a pod decoding less takes
    requests freely up to its cap."""

    @classmethod
    def checked(
        cls,
        *,
        order: DispatchOrder | str = DispatchOrder.DEADLINE,
        first_token_s: float = 0.1,
        late_max_wait_s: float = 30.0,
        prefill_limit: int | None = None,
    ) -> DispatchPolicy:
        """A policy, or `ValueError` naming the field that is unknown, negative or not finite."""
        try:
            kind = DispatchOrder(order)
        except ValueError:
            raise ValueError(f"order must be 'fifo' or 'deadline', got {order!r}") from None
        for name, value in (("first_token_s", first_token_s), ("late_max_wait_s", late_max_wait_s)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if prefill_limit is not None and prefill_limit < 0:
            raise ValueError(f"prefill_limit must be >= 0 (0: no gate), got {prefill_limit!r}")
        return cls(
            order=kind,
            first_token_s=first_token_s,
            late_max_wait_s=late_max_wait_s,
            prefill_limit=prefill_limit or None,
        )

    @property
    def prefill_gated(self) -> bool:
        """A prefill gate is set (`prefill_limit` or `prefill_token_budget`)."""
        return bool(self.prefill_limit or self.prefill_token_budget)

    def prefill_open(self, *, prefilling: int, prompt_tokens: int, decoding: int) -> bool:
        """A pod with `prefilling` requests (`prompt_tokens` in all) awaiting their first token
        and `decoding` past it may take one more (its slot cap aside)."""
        if decoding < self.prefill_min_decoding:
            return True
        if self.prefill_limit and prefilling >= self.prefill_limit:
            return False
        return not (self.prefill_token_budget and prompt_tokens >= self.prefill_token_budget)

    def late_at(self, ticket: Ticket) -> float:
        """The time after which `ticket` can no longer meet its deadline (inf: never late)."""
        if self.order is DispatchOrder.FIFO:
            return math.inf
        return ticket.deadline - self.first_token_s

    def urgency(self, ticket: Ticket, now: float) -> Urgency:
        """The class of a queued `ticket` at `now` (the rule `Lane.best` applies)."""
        if now - ticket.arrived >= self.late_max_wait_s:
            return Urgency.OVERDUE
        if now > self.late_at(ticket):
            return Urgency.LATE
        return Urgency.FRESH


_Entry = tuple[int, int, "Ticket"]
"""(ticket seq, ticket push number, ticket) in a class heap."""


@dataclass(slots=True, eq=False)
class Lane:
    """One API key's queued tickets, ordered by `DispatchPolicy` (see module doc).

    Tickets are keyed by `Ticket.seq` (arrival order; a retry keeps its own, so it keeps its
    place). Removal is lazy: an entry counts only while its ticket is queued and the entry is
    from the ticket's latest push.
    """

    policy: DispatchPolicy
    count: int = 0
    """Queued tickets in this lane."""
    _fresh: list[_Entry] = field(default_factory=list)
    _late: list[_Entry] = field(default_factory=list)
    _turns: list[tuple[float, int, int, Ticket]] = field(default_factory=list)
    """(late_at, seq, push, ticket) of fresh tickets: when each one turns late."""

    def push(self, ticket: Ticket) -> None:
        """Add a queued ticket (new, or back for a retry)."""
        ticket.push += 1
        entry = (ticket.seq, ticket.push, ticket)
        self.count += 1
        if ticket.late:
            heapq.heappush(self._late, entry)
            return
        heapq.heappush(self._fresh, entry)
        late_at = self.policy.late_at(ticket)
        if late_at != math.inf:
            heapq.heappush(self._turns, (late_at, ticket.seq, ticket.push, ticket))

    def best(self, now: float) -> tuple[Urgency, Ticket] | None:
        """The ticket this lane would dispatch at `now`, and its class; None if empty."""
        turns = self._turns
        while turns and turns[0][0] < now:
            _, seq, push, ticket = heapq.heappop(turns)
            if _valid(ticket, push) and not ticket.late:
                ticket.late = True
                heapq.heappush(self._late, (seq, push, ticket))
        fresh = _head(self._fresh, late_ok=False)
        late = _head(self._late, late_ok=True)
        if fresh is None and late is None:
            return None
        oldest = late if fresh is None or (late is not None and late.seq < fresh.seq) else fresh
        assert oldest is not None
        if now - oldest.arrived >= self.policy.late_max_wait_s:
            return Urgency.OVERDUE, oldest
        if fresh is not None:
            return Urgency.FRESH, fresh
        assert late is not None
        return Urgency.LATE, late

    def pop(self, ticket: Ticket) -> None:
        """Take out `ticket`, which `best` just returned (so it heads its class heap)."""
        heap = self._late if ticket.late else self._fresh
        top = heapq.heappop(heap)
        assert top[2] is ticket
        self.count -= 1

    def newest(self) -> Ticket | None:
        """The most recently arrived queued ticket that is not a retry (an eviction victim)."""
        found: Ticket | None = None
        for heap in (self._fresh, self._late):
            for _, push, ticket in heap:
                fits = _valid(ticket, push) and not ticket.attempts
                if fits and (found is None or ticket.seq > found.seq):
                    found = ticket
        return found


def _valid(ticket: Ticket, push: int) -> bool:
    return ticket.waiting and ticket.push == push


def _head(heap: list[_Entry], *, late_ok: bool) -> Ticket | None:
    """The first live ticket of a class heap, dropping dead entries above it."""
    while heap:
        _, push, ticket = heap[0]
        if _valid(ticket, push) and (late_ok or not ticket.late):
            return ticket
        heapq.heappop(heap)
    return None
