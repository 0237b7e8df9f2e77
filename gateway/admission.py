"""The admission core of one model: its FIFO queue, its pods' slots, and who goes where.

Pure bookkeeping, no I/O and no clock: callers pass times in and act on what comes back.
`ModelQueue.offer()` admits or refuses a request (bounded queue, optional fair share across API
keys), `assign()` hands queued requests to pods with a free slot (least outstanding requests
first, per-key concurrency limits respected), `finish()` frees a slot, and the pod methods follow
discovery (a pod that leaves gets no new work while its in-flight requests finish).

The asyncio shell that parks request handlers on these decisions is `gateway.scheduler`.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field


class TicketState(enum.Enum):
    NEW = "new"
    QUEUED = "queued"
    ASSIGNED = "assigned"
    DONE = "done"


@dataclass(slots=True, eq=False)
class Pod:
    """One upstream pod of a model and its slot count."""

    url: str
    capacity: int
    ready: bool = False
    leaving: bool = False
    """Gone from discovery: no new work; forgotten once its outstanding requests finish."""
    outstanding: int = 0
    dispatched: int = 0
    """Requests ever sent here (a tie-breaker that spreads equal loads)."""

    @property
    def eligible(self) -> bool:
        return self.ready and not self.leaving

    @property
    def free(self) -> bool:
        return self.ready and not self.leaving and self.outstanding < self.capacity


@dataclass(slots=True, eq=False)
class Ticket:
    """One request's place in the admission system."""

    request_id: str
    tenant: str
    """Fairness key ("" when fairness is off or the request has no key)."""
    arrived: float
    state: TicketState = TicketState.NEW
    pod: Pod | None = None
    attempts: int = 0
    """Dispatches so far (a retry re-enters the queue at its front)."""
    exclude: frozenset[str] = field(default_factory=frozenset)
    """Pods to avoid if any other ready pod exists (the ones that failed this request)."""


class Verdict(enum.Enum):
    ADMITTED = "admitted"
    QUEUE_FULL = "queue_full"


@dataclass(frozen=True, slots=True)
class Offer:
    """What `offer()` decided; `evicted` lost their place to a fairer share (reject them)."""

    verdict: Verdict
    evicted: tuple[Ticket, ...] = ()


class ModelQueue:
    """Queue and pod slots of one model."""

    def __init__(
        self,
        model: str,
        *,
        max_length: int,
        fairness: bool = False,
        tenant_limit: int | None = None,
    ) -> None:
        self.model = model
        self.max_length = max_length
        self.fairness = fairness
        self.tenant_limit = tenant_limit
        self.pods: dict[str, Pod] = {}
        self._waiting: dict[str, deque[Ticket]] = {}
        """tenant -> its queued tickets (withdrawn ones are skipped lazily)."""
        self._queued_by: dict[str, int] = {}
        self._running_by: dict[str, int] = {}
        self._rotation: deque[str] = deque()
        """Tenants with waiting tickets, in round-robin order."""
        self.queued = 0
        """Requests waiting that were never dispatched (what `enqueue`/`dispatch` count)."""
        self.requeued = 0
        """Requests waiting again for a retry (counted as in flight, not as queued)."""
        self.in_flight = 0
        """Requests holding a pod slot, plus those waiting for a retry."""

    # ----------------------------------------------------------------- pods
    def upsert_pod(self, url: str, *, ready: bool, capacity: int) -> Pod:
        pod = self.pods.get(url)
        if pod is None:
            pod = self.pods[url] = Pod(url=url, capacity=capacity)
        pod.ready = ready
        pod.leaving = False
        pod.capacity = capacity
        return pod

    def remove_pod(self, url: str) -> None:
        """The pod left discovery: stop sending it work; forget it once idle."""
        pod = self.pods.get(url)
        if pod is None:
            return
        pod.leaving = True
        if pod.outstanding == 0:
            del self.pods[url]

    def sync_pods(self, ready: dict[str, bool], *, capacity: int) -> None:
        """Make the pod set equal to `ready` (url -> ready), marking the missing ones leaving."""
        for url, is_ready in ready.items():
            self.upsert_pod(url, ready=is_ready, capacity=capacity)
        for url in [u for u in self.pods if u not in ready]:
            self.remove_pod(url)

    @property
    def ready_pods(self) -> int:
        return sum(1 for p in self.pods.values() if p.eligible)

    @property
    def free_slots(self) -> int:
        return sum(p.capacity - p.outstanding for p in self.pods.values() if p.free)

    # ---------------------------------------------------------------- queue
    def offer(self, ticket: Ticket) -> Offer:
        """Admit `ticket` into the queue, or refuse it because the queue is full."""
        evicted: tuple[Ticket, ...] = ()
        if self.queued >= self.max_length:
            victim = self._fair_victim(ticket.tenant) if self.fairness else None
            if victim is None:
                return Offer(Verdict.QUEUE_FULL)
            self.withdraw(victim)
            evicted = (victim,)
        self._push(ticket, front=False)
        self.queued += 1
        return Offer(Verdict.ADMITTED, evicted)

    def requeue(self, ticket: Ticket, *, failed_pod: str | None) -> None:
        """Put a dispatched ticket back at the front of the queue for a retry."""
        self._release(ticket)
        if failed_pod is not None:
            ticket.exclude = ticket.exclude | {failed_pod}
        self._push(ticket, front=True)
        self.requeued += 1
        self.in_flight += 1

    def withdraw(self, ticket: Ticket) -> None:
        """Take a queued ticket out (cancelled, timed out, evicted); no-op otherwise."""
        if ticket.state is not TicketState.QUEUED:
            return
        ticket.state = TicketState.DONE
        _decrement(self._queued_by, ticket.tenant)
        if ticket.tenant not in self._queued_by:
            self._forget_waiting(ticket.tenant)
        if ticket.attempts:
            self.requeued -= 1
            self.in_flight -= 1
        else:
            self.queued -= 1

    def finish(self, ticket: Ticket) -> None:
        """The request is over (any outcome): free its slot or its queue place."""
        if ticket.state is TicketState.QUEUED:
            self.withdraw(ticket)
        elif ticket.state is TicketState.ASSIGNED:
            self._release(ticket)
        ticket.state = TicketState.DONE

    def assign(self) -> list[Ticket]:
        """Hand as many queued tickets as possible to pods with a free slot.

        Without fairness the oldest eligible ticket goes first (FIFO, skipping keys at their
        concurrency limit); with fairness keys take turns, each in its own FIFO order.
        """
        out: list[Ticket] = []
        while True:
            picked = self._next_eligible()
            if picked is None:
                return out
            ticket, pod = picked
            queue = self._waiting[ticket.tenant]
            queue.popleft()
            _decrement(self._queued_by, ticket.tenant)
            self._dispatch(ticket, pod)
            out.append(ticket)
            if self.fairness and self._rotation and self._rotation[0] == ticket.tenant:
                self._rotation.rotate(-1)

    def _next_eligible(self) -> tuple[Ticket, Pod] | None:
        """The ticket to dispatch next and its pod, or None if nobody can go now."""
        rotation = self._rotation
        limit = self.tenant_limit
        best: tuple[Ticket, Pod] | None = None
        for _ in range(len(rotation)):
            if not rotation:
                break
            tenant = rotation[0]
            queue = self._waiting[tenant]
            while queue and queue[0].state is not TicketState.QUEUED:
                queue.popleft()
            if not queue:
                rotation.popleft()
                del self._waiting[tenant]
                continue
            head = queue[0]
            under_limit = limit is None or self._running_by.get(tenant, 0) < limit
            if under_limit and (best is None or head.arrived < best[0].arrived):
                pod = self._choose(head.exclude)
                if pod is None and not head.exclude:
                    return None  # no free slot for anyone
                if pod is not None:
                    best = (head, pod)
                    if self.fairness:
                        return best  # its turn
            rotation.rotate(-1)
        return best

    # ------------------------------------------------------------- internal
    def _push(self, ticket: Ticket, *, front: bool) -> None:
        tenant = ticket.tenant
        queue = self._waiting.get(tenant)
        if queue is None:
            queue = self._waiting[tenant] = deque()
            self._rotation.append(tenant)
        if front:
            queue.appendleft(ticket)
        else:
            queue.append(ticket)
        self._queued_by[tenant] = self._queued_by.get(tenant, 0) + 1
        ticket.state = TicketState.QUEUED

    def _forget_waiting(self, tenant: str) -> None:
        """A tenant with nothing queued leaves the rotation (per-tenant state stays bounded)."""
        if self._waiting.pop(tenant, None) is not None:
            self._rotation.remove(tenant)

    def _dispatch(self, ticket: Ticket, pod: Pod) -> None:
        if ticket.attempts:
            self.requeued -= 1
        else:
            self.queued -= 1
            self.in_flight += 1
        ticket.attempts += 1
        ticket.state = TicketState.ASSIGNED
        ticket.pod = pod
        pod.outstanding += 1
        pod.dispatched += 1
        self._running_by[ticket.tenant] = self._running_by.get(ticket.tenant, 0) + 1

    def _release(self, ticket: Ticket) -> None:
        pod = ticket.pod
        if ticket.state is not TicketState.ASSIGNED or pod is None:
            return
        ticket.state = TicketState.DONE
        ticket.pod = None
        pod.outstanding -= 1
        self.in_flight -= 1
        _decrement(self._running_by, ticket.tenant)
        if pod.leaving and pod.outstanding == 0 and self.pods.get(pod.url) is pod:
            del self.pods[pod.url]

    def _choose(self, exclude: Iterable[str]) -> Pod | None:
        """Least outstanding requests among free pods, avoiding `exclude` if anyone else is up."""
        best: Pod | None = None
        avoided = False
        for pod in self.pods.values():
            if not pod.free:
                continue
            if pod.url in exclude:
                avoided = True
                continue
            if best is None or (pod.outstanding, pod.dispatched) < (
                best.outstanding,
                best.dispatched,
            ):
                best = pod
        if best is None and avoided:
            others = any(p.eligible and p.url not in exclude for p in self.pods.values())
            if not others:  # the failed pod is the only one left: better it than nothing
                best = min(
                    (p for p in self.pods.values() if p.free),
                    key=lambda p: (p.outstanding, p.dispatched),
                )
        return best

    def _fair_victim(self, tenant: str) -> Ticket | None:
        """When full: the newest ticket of the tenant holding most above the arrival's share."""
        holders = {t: n for t, n in self._queued_by.items() if n > 0}
        mine = holders.get(tenant, 0)
        share = self.max_length // max(1, len(holders | {tenant: mine}))
        if mine >= share:
            return None
        top = max(holders, key=lambda t: holders[t], default=None)
        if top is None or top == tenant or holders[top] <= share:
            return None
        for ticket in reversed(self._waiting[top]):
            if ticket.state is TicketState.QUEUED and not ticket.attempts:
                return ticket
        return None


def _decrement(counts: dict[str, int], tenant: str) -> None:
    """Count one less for `tenant`, forgetting it at zero (keys come and go)."""
    left = counts[tenant] - 1
    if left:
        counts[tenant] = left
    else:
        del counts[tenant]
