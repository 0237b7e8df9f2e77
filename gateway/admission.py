"""The admission core of one model: its queue, its pods' slots, and who goes where.

Pure bookkeeping, no I/O and no clock: callers pass times in and act on what comes back. This is
the one admission implementation: the live gateway (`gateway.scheduler`) and the virtual-time
evaluator drive it alike.

- `ModelQueue.offer(ticket)` admits a request or refuses it (bounded queue; with fairness a full
  queue evicts the newest request of the key holding most above its share).
- `assign(now=...)` hands queued requests to pods with a free slot, in the order of the model's
  `DispatchPolicy` (`gateway.dispatch`: overdue, then fresh, then late, FIFO within each), each to
  the pod with the fewest outstanding requests; per-key concurrency limits are respected and
  with fairness keys take turns within the most urgent class present.
- `finish(ticket)` frees a slot or a queue place (any outcome); `withdraw(ticket)` takes a queued
  one out; `requeue(ticket, failed_pod=...)` puts a dispatched one back for a retry (it keeps
  its place: its arrival order).
- The prefill gate (`DispatchPolicy.prefill_limit`): each pod counts its requests dispatched
  and without a first token yet (`Pod.prefilling`, streams only: a non-streaming answer arrives
  whole, so its first token is never seen); with a gate set a pod takes a new request only
  while that count is below the limit. `first_token(ticket)` ends a ticket's prefill; a slot
  freed before it (finish, requeue) ends it too.
- `upsert_pod`, `remove_pod`, `sync_pods` follow discovery (a pod that leaves gets no new work
  while its in-flight requests finish); `Pod.capacity` is the per-pod cap.

Tickets must be offered in arrival order (their `seq` is the order of `offer`); `Ticket.deadline`
is the time the first token is due (`surgescale.slo.Slo.deadline`; infinity = none).
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.dispatch import DispatchOrder, DispatchPolicy, Lane, Urgency

__all__ = [
    "DispatchOrder",
    "DispatchPolicy",
    "ModelQueue",
    "Offer",
    "Pod",
    "Ticket",
    "TicketState",
    "Urgency",
    "Verdict",
]


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
    prefilling: int = 0
    """Requests here (streams) that have not had their first token yet."""
    prefill_tokens: int = 0
    """Their prompt tokens (`Ticket.prompt_tokens`), for a token budget."""

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
    deadline: float = math.inf
    """When the first token is due, on the clock of `arrived` (inf: no deadline)."""
    state: TicketState = TicketState.NEW
    pod: Pod | None = None
    attempts: int = 0
    """Dispatches so far (a retry re-enters the queue at its old place)."""
    exclude: frozenset[str] = field(default_factory=frozenset)
    """Pods to avoid if any other ready pod exists (the ones that failed this request)."""
    seq: int = -1
    """Arrival order in its queue (set by `offer`)."""
    late: bool = False
    """Classed late while queued (it can no longer meet its deadline); never reset."""
    push: int = 0
    """How often it entered the queue (to tell its live queue entry from stale ones)."""
    stream: bool = True
    """Its first token is seen (`ModelQueue.first_token`): only then does it count against its
    pod's prefill gate."""
    prompt_tokens: int = 0
    """Its prompt's size (estimated), for a prefill token budget."""
    prefilling: bool = False
    """Dispatched and counted in its pod's `prefilling` (no first token yet)."""

    @property
    def waiting(self) -> bool:
        return self.state is TicketState.QUEUED


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
        policy: DispatchPolicy | None = None,
    ) -> None:
        self.model = model
        self.max_length = max_length
        self.fairness = fairness
        self.tenant_limit = tenant_limit
        self.policy = policy if policy is not None else DispatchPolicy()
        """The dispatch order (default: deadline-aware, `gateway.dispatch`)."""
        self.pods: dict[str, Pod] = {}
        self._lanes: dict[str, Lane] = {}
        """tenant -> its queued tickets, in dispatch order."""
        self._running_by: dict[str, int] = {}
        self._rotation: deque[str] = deque()
        """Tenants with waiting tickets, in round-robin order (the next turn first)."""
        self._seq = 0
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

    def sync_pods(
        self,
        ready: dict[str, bool],
        *,
        capacity: int,
        limits: Mapping[str, int] | None = None,
    ) -> None:
        """Make the pod set equal to `ready` (url -> ready), marking the missing ones leaving.

        Every pod gets `capacity` slots, or its own from `limits` (this instance's share of it,
        `gateway.shares`)."""
        for url, is_ready in ready.items():
            cap = capacity if limits is None else limits.get(url, capacity)
            self.upsert_pod(url, ready=is_ready, capacity=cap)
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
        ticket.seq = self._seq
        self._seq += 1
        self._push(ticket)
        self.queued += 1
        return Offer(Verdict.ADMITTED, evicted)

    def dispatch_at_once(self, ticket: Ticket) -> bool:
        """When nobody waits: admit `ticket` straight to the pod `offer` then `assign` would
        give it now (the usual case, without a trip through the lanes); False (nothing done)
        if it has to be `offer`ed instead: others wait, the queue takes none, its key is at
        its limit, or no pod is open."""
        if self.queued or self.requeued or self.max_length <= 0 or self._at_limit(ticket.tenant):
            return False
        pod = self._choose(ticket.exclude)
        if pod is None:
            return False
        ticket.seq = self._seq
        self._seq += 1
        self.queued += 1  # `_dispatch` takes it off again
        self._dispatch(ticket, pod)
        return True

    def requeue(self, ticket: Ticket, *, failed_pod: str | None) -> None:
        """Put a dispatched ticket back in the queue for a retry, at its old place."""
        self._release(ticket)
        if failed_pod is not None:
            ticket.exclude = ticket.exclude | {failed_pod}
        self._push(ticket)
        self.requeued += 1
        self.in_flight += 1

    def withdraw(self, ticket: Ticket) -> None:
        """Take a queued ticket out (cancelled, timed out, evicted); no-op otherwise."""
        if ticket.state is not TicketState.QUEUED:
            return
        ticket.state = TicketState.DONE
        lane = self._lanes[ticket.tenant]
        lane.count -= 1
        if not lane.count:  # a key with nothing queued is forgotten (state stays bounded)
            del self._lanes[ticket.tenant]
            self._rotation.remove(ticket.tenant)
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

    def first_token(self, ticket: Ticket) -> bool:
        """The ticket's first token arrived: it no longer counts against its pod's prefill gate.

        True if a gate may have opened (the caller runs `assign`); no-op for a ticket that is not
        prefilling."""
        if not ticket.prefilling:
            return False
        self._prefilled(ticket)
        return self.policy.prefill_gated

    def assign(self, *, now: float) -> list[Ticket]:
        """Hand as many queued tickets as possible to pods with a free slot, at time `now`.

        The most urgent class present goes first (`gateway.dispatch`), oldest first; keys at
        their concurrency limit are skipped; with fairness, keys with a ticket of that class
        take turns.
        """
        out: list[Ticket] = []
        while self.queued or self.requeued:  # an empty queue (nearly always) costs no scan
            picked = self._next_eligible(now)
            if picked is None:
                return out
            ticket, pod = picked
            self._lanes[ticket.tenant].pop(ticket)
            self._dispatch(ticket, pod)
            out.append(ticket)
        self._drop_empty_lanes()  # the last pop may have emptied a lane
        return out

    def urgency(self, ticket: Ticket, *, now: float) -> Urgency:
        """The class of a queued ticket at `now` (for reports and tests)."""
        return self.policy.urgency(ticket, now)

    def _next_eligible(self, now: float) -> tuple[Ticket, Pod] | None:
        """The ticket to dispatch next and its pod, or None if nobody can go now."""
        best: tuple[tuple[int, int], Ticket, Pod] | None = None
        for index, tenant in enumerate(list(self._rotation)):
            lane = self._lanes[tenant]
            head = lane.best(now) if lane.count else None
            if head is None:
                continue
            if self._at_limit(tenant):
                continue
            urgency, ticket = head
            # Fairness: the first key in turn order within the most urgent class present.
            key = (int(urgency), index if self.fairness else ticket.seq)
            if best is not None and key >= best[0]:
                continue
            pod = self._choose(ticket.exclude)
            if pod is None:
                if not ticket.exclude:
                    return None  # no free slot for anyone
                continue  # only the pods it failed on are free: let others go
            best = (key, ticket, pod)
        self._drop_empty_lanes()
        if best is None:
            return None
        _, ticket, pod = best
        if self.fairness:  # its turn is used: to the back of the rotation
            self._rotation.remove(ticket.tenant)
            self._rotation.append(ticket.tenant)
        return ticket, pod

    # ------------------------------------------------------------- internal
    def _at_limit(self, tenant: str) -> bool:
        """The key holds as many slots as it may (`tenant_limit`)."""
        limit = self.tenant_limit
        return limit is not None and self._running_by.get(tenant, 0) >= limit

    def _push(self, ticket: Ticket) -> None:
        tenant = ticket.tenant
        lane = self._lanes.get(tenant)
        if lane is None:
            lane = self._lanes[tenant] = Lane(self.policy)
            self._rotation.append(tenant)
        ticket.state = TicketState.QUEUED
        lane.push(ticket)

    def _drop_empty_lanes(self) -> None:
        if all(self._lanes[t].count for t in self._rotation):
            return
        kept = [t for t in self._rotation if self._lanes[t].count]
        for tenant in self._rotation:
            if not self._lanes[tenant].count:
                del self._lanes[tenant]
        self._rotation = deque(kept)

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
        if ticket.stream:
            ticket.prefilling = True
            pod.prefilling += 1
            pod.prefill_tokens += ticket.prompt_tokens
        self._running_by[ticket.tenant] = self._running_by.get(ticket.tenant, 0) + 1

    def _release(self, ticket: Ticket) -> None:
        pod = ticket.pod
        if ticket.state is not TicketState.ASSIGNED or pod is None:
            return
        if ticket.prefilling:  # freed before its first token
            self._prefilled(ticket)
        ticket.state = TicketState.DONE
        ticket.pod = None
        pod.outstanding -= 1
        self.in_flight -= 1
        _decrement(self._running_by, ticket.tenant)
        if pod.leaving and pod.outstanding == 0 and self.pods.get(pod.url) is pod:
            del self.pods[pod.url]

    def _prefilled(self, ticket: Ticket) -> None:
        pod = ticket.pod
        assert pod is not None
        ticket.prefilling = False
        pod.prefilling -= 1
        pod.prefill_tokens -= ticket.prompt_tokens

    def _open(self, pod: Pod) -> bool:
        """The pod has a free slot and its prefill gate (if any) lets one more in."""
        if not pod.free:
            return False
        policy = self.policy
        if not pod.prefilling or not policy.prefill_gated:
            return True  # nothing in prefill: as eligible as without a gate
        return policy.prefill_open(
            prefilling=pod.prefilling,
            prompt_tokens=pod.prefill_tokens,
            decoding=pod.outstanding - pod.prefilling,
        )

    def _choose(self, exclude: Iterable[str]) -> Pod | None:
        """Least outstanding requests among open pods (`_open`), avoiding `exclude` if anyone
        else is up."""
        best: Pod | None = None
        avoided = False
        for pod in self.pods.values():
            if not self._open(pod):
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
                    (p for p in self.pods.values() if self._open(p)),
                    key=lambda p: (p.outstanding, p.dispatched),
                )
        return best

    def _fair_victim(self, tenant: str) -> Ticket | None:
        """When full: the newest ticket of the tenant holding most above the arrival's share."""
        holders = {t: lane.count for t, lane in self._lanes.items() if lane.count > 0}
        mine = holders.get(tenant, 0)
        share = self.max_length // max(1, len(holders | {tenant: mine}))
        if mine >= share:
            return None
        top = max(holders, key=lambda t: holders[t], default=None)
        if top is None or top == tenant or holders[top] <= share:
            return None
        return self._lanes[top].newest()


def _decrement(counts: dict[str, int], tenant: str) -> None:
    """Count one less for `tenant`, forgetting it at zero (keys come and go)."""
    left = counts[tenant] - 1
    if left:
        counts[tenant] = left
    else:
        del counts[tenant]
