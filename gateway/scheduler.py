"""The asyncio shell around `gateway.admission`: parks request handlers until a slot is theirs.

`Scheduler.admit()` queues a ticket (or raises `Rejected`: queue full, draining) and
`Scheduler.wait()` returns once a pod slot is assigned, or raises `Rejected` (waited too long,
evicted by fair share). Who gets a freed slot is the model's `DispatchPolicy`, applied at the
clock's `now` by `gateway.admission`. Every change that can
free a slot (a request finishing, a pod turning ready, a pod joining) runs `_pump`, which wakes
exactly the handlers that got a slot; so a request held at zero pods is released the moment
discovery reports a ready pod. Deadlines are loop timers, not polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.admission import DispatchPolicy, ModelQueue, Pod, Ticket, TicketState, Verdict
from surgescale.slo import Slo

_DEFAULT_SLO = Slo()


class Rejected(Exception):
    """The request cannot be served now; `status` 429 or 503 with `Retry-After`."""

    def __init__(self, *, status: int, reason: str, message: str, queued: bool) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.queued = queued
        """True if the request had been enqueued (so an `enqueue` event was sent for it)."""


@dataclass(frozen=True, slots=True)
class QueueLimits:
    max_length: int
    max_wait_s: float
    fairness: bool = False
    tenant_limit: int | None = None


class Scheduler:
    """Per-model queues plus the futures of the handlers waiting in them."""

    def __init__(
        self,
        limits: QueueLimits,
        *,
        clock: Callable[[], float],
        policies: Mapping[str, DispatchPolicy] | None = None,
        objectives: Mapping[str, Slo] | None = None,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.policies = dict(policies or {})
        """model -> its dispatch order (models not named get the default deadline order)."""
        self.objectives = dict(objectives or {})
        """model -> its TTFT objective (models not named get `Slo()`)."""
        self.queues: dict[str, ModelQueue] = {}
        self._waiters: dict[Ticket, asyncio.Future[None]] = {}
        self.draining = False

    def queue(self, model: str) -> ModelQueue:
        q = self.queues.get(model)
        if q is None:
            q = self.queues[model] = ModelQueue(
                model,
                max_length=self.limits.max_length,
                fairness=self.limits.fairness,
                tenant_limit=self.limits.tenant_limit,
                policy=self.policies.get(model),
            )
        return q

    def objective(self, model: str) -> Slo:
        """The TTFT objective that sets `model`'s request deadlines."""
        return self.objectives.get(model) or _DEFAULT_SLO

    # ----------------------------------------------------------- discovery
    def set_pods(
        self,
        model: str,
        ready: dict[str, bool],
        *,
        capacity: int,
        limits: Mapping[str, int] | None = None,
    ) -> None:
        """Discovery's pod set; each pod gets `capacity` slots, or its own from `limits`."""
        q = self.queue(model)
        q.sync_pods(ready, capacity=capacity, limits=limits)
        self._pump(q)

    def set_limits(self, model: str, limits: Mapping[str, int]) -> None:
        """Change known pods' slot counts (this instance's shares, `gateway.shares`).

        A lower count only stops new dispatches; requests already there finish."""
        q = self.queue(model)
        for url, limit in limits.items():
            pod = q.pods.get(url)
            if pod is not None:
                pod.capacity = limit
        self._pump(q)

    # ------------------------------------------------------------ requests
    def admit(self, model: str, ticket: Ticket) -> None:
        """Put the ticket in its model's queue (and dispatch at once if a slot is free).

        Raises `Rejected` (not queued) if the queue is full or the gateway is draining.
        """
        if self.draining:
            raise Rejected(
                status=503, reason="draining", message="the gateway is shutting down", queued=False
            )
        q = self.queue(model)
        if q.dispatch_at_once(ticket):
            return
        offer = q.offer(ticket)
        if offer.verdict is Verdict.QUEUE_FULL:
            raise Rejected(
                status=429,
                reason="queue_full",
                message=f"the queue of model {model!r} is full ({q.max_length} requests)",
                queued=False,
            )
        for victim in offer.evicted:
            self._fail(
                victim,
                Rejected(
                    status=429,
                    reason="fair_share",
                    message="the queue is full and this API key holds more than its share",
                    queued=True,
                ),
            )
        self._pump(q)

    async def wait(self, model: str, ticket: Ticket) -> Pod:
        """Wait until the admitted ticket holds a slot; return its pod."""
        if ticket.state is TicketState.ASSIGNED and ticket.pod is not None:
            return ticket.pod
        if ticket.state is not TicketState.QUEUED:
            raise Rejected(status=503, reason="gone", message="request was withdrawn", queued=True)
        q = self.queues[model]
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters[ticket] = fut
        remaining = ticket.arrived + self.limits.max_wait_s - self.clock()
        timer = loop.call_later(max(0.0, remaining), self._expire, q, ticket)
        try:
            await fut
        except BaseException:
            if ticket.pod is not None:
                # Assigned and cancelled in the same tick: give the slot back.
                q.finish(ticket)
                self._pump(q)
            else:
                q.withdraw(ticket)
            raise
        finally:
            timer.cancel()
            self._waiters.pop(ticket, None)
        assert ticket.pod is not None
        return ticket.pod

    def retry(self, model: str, ticket: Ticket, *, failed_pod: str) -> None:
        """Send a dispatched ticket back to the queue front (then `wait` again)."""
        q = self.queues[model]
        q.requeue(ticket, failed_pod=failed_pod)
        self._pump(q)

    def first_token(self, model: str, ticket: Ticket) -> None:
        """The ticket's first token was forwarded: its pod's prefill gate may let the next in."""
        q = self.queues.get(model)
        if q is not None and q.first_token(ticket):
            self._pump(q)

    def finish(self, model: str, ticket: Ticket) -> None:
        """The request is over: free its slot and let the next one in."""
        q = self.queues.get(model)
        if q is None:
            return
        q.finish(ticket)
        self._pump(q)

    def totals(self) -> tuple[int, int]:
        """(queued, in flight) over all models."""
        return (
            sum(q.queued for q in self.queues.values()),
            sum(q.in_flight for q in self.queues.values()),
        )

    # ------------------------------------------------------------ internal
    def _pump(self, q: ModelQueue) -> None:
        for ticket in q.assign(now=self.clock()):
            fut = self._waiters.pop(ticket, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _expire(self, q: ModelQueue, ticket: Ticket) -> None:
        if ticket.state is not TicketState.QUEUED:
            return
        waited = self.clock() - ticket.arrived
        q.withdraw(ticket)
        self._fail(
            ticket,
            Rejected(
                status=503,
                reason="queue_timeout",
                message=(
                    f"no capacity for model {q.model!r} within {waited:.1f}s "
                    f"({q.ready_pods} ready pods)"
                ),
                queued=True,
            ),
        )

    def _fail(self, ticket: Ticket, error: Rejected) -> None:
        fut = self._waiters.pop(ticket, None)
        if fut is not None and not fut.done():
            fut.set_exception(error)
        else:
            ticket.state = TicketState.DONE
