"""How requests reach the simulated pods: the gateway's own admission core, or a plain Service.

With surgescale's gateway in front (no `rng`), nothing here decides who goes where: each request
becomes a `gateway.admission.Ticket` (deadline from `surgescale.slo.Slo`) in the live gateway's
`ModelQueue` with the model's `DispatchPolicy` (deadline-aware by default: requests that can
still meet their deadline before late ones, with a bounded wait for the late), pods enter and
leave it as discovery would tell it, and whatever `assign(now=...)` hands out is submitted to the
chosen pod's engine — the same code that places requests in the live gateway, driven by the
virtual clock. A request waits while no pod has a free slot
(at zero replicas too: scale from zero) and is placed the moment a slot opens or a pod turns Ready.
A pod's first token of a request goes to `ModelQueue.first_token`, as the live gateway's stream
forwarding does, so the policy's prefill gate (`DispatchPolicy.prefill_limit`) acts here as
there; the run's policy is set with `set_dispatch`.

With `service=True` the ingress is a plain Kubernetes Service instead (a named baseline variant):
kube-proxy sends each request at once to a random Ready endpoint (drawn from the run's `rng`), no
cap, so requests queue inside vLLM; with no Ready endpoint a request waits here.

TTFT is measured as the gateway measures it: from arrival at the ingress to the first token.
Every milestone is passed to the `Listener`s (metrics, and the observation feeds of the policies).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Protocol

from gateway.admission import DispatchPolicy, ModelQueue, Ticket, Verdict
from sim.evaluate.clock import Clock
from sim.evaluate.pods import FINISH, FIRST_TOKEN, REJECTED, Pod, PodState
from surgescale.slo import Slo

QUEUE_LIMIT = 1 << 30
"""The simulated gateway's queue bound: large enough never to refuse (a refusal would be a miss
the policies could not act on; the live gateway's bound is a deployment setting)."""


class Request:
    """One request's record: its demand and the times of its milestones."""

    __slots__ = (
        "arrival",
        "deadline",
        "dispatch",
        "finish",
        "first_token",
        "id",
        "output_tokens",
        "pod",
        "prompt_tokens",
    )

    def __init__(
        self,
        rid: str,
        arrival: float,
        prompt_tokens: int,
        output_tokens: int,
        deadline: float,
    ) -> None:
        self.id = rid
        self.arrival = arrival
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.deadline = deadline
        """When the first token is due (`Slo.deadline`)."""
        self.dispatch: float | None = None
        self.first_token: float | None = None
        self.finish: float | None = None
        self.pod: str | None = None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrival

    @property
    def tpot(self) -> float | None:
        if self.finish is None or self.first_token is None or self.output_tokens <= 1:
            return None
        return (self.finish - self.first_token) / (self.output_tokens - 1)


class Listener(Protocol):
    """Receives the gateway's milestones (the same ones the live gateway turns into events)."""

    def on_enqueue(self, req: Request, now: float) -> None: ...

    def on_dispatch(self, req: Request, now: float) -> None: ...

    def on_first_token(self, req: Request, now: float) -> None: ...

    def on_complete(self, req: Request, now: float) -> None: ...


class Gateway:
    """Admission for one model: the live admission core, or a plain Service."""

    def __init__(
        self,
        *,
        clock: Clock,
        pod_concurrency: int,
        slo: Slo,
        dispatch: DispatchPolicy,
        model: str = "model",
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.pod_concurrency = pod_concurrency
        self.slo = slo
        self.rng = rng
        """With an rng, a Kubernetes Service (random Ready pod, no cap) instead of the gateway."""
        self.admission = ModelQueue(model, max_length=QUEUE_LIMIT, policy=dispatch)
        self.tickets: dict[str, Ticket] = {}
        self.waiting: deque[Request] = deque()
        """Service mode only: requests that arrived while no endpoint was Ready."""
        self.in_flight = 0
        self.listeners: list[Listener] = []
        self.requests: dict[str, Request] = {}
        self.pods: dict[str, Pod] = {}
        """Ready pods by name, in the order they turned Ready."""
        self.drained_callback: _Drained | None = None
        self.completed = 0
        self.rejected = 0

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a pod (never dispatched), as the gateway's snapshot counts them."""
        return len(self.waiting) if self.rng is not None else self.admission.queued

    # ---- inputs ------------------------------------------------------------------------------

    def arrive(self, req: Request) -> None:
        now = self.clock.now
        self.requests[req.id] = req
        for listener in self.listeners:
            listener.on_enqueue(req, now)
        if self.rng is not None:
            self.waiting.append(req)
            self._route_service()
            return
        ticket = Ticket(
            request_id=req.id,
            tenant="",
            arrived=now,
            deadline=req.deadline,
            prompt_tokens=req.prompt_tokens,
        )
        offer = self.admission.offer(ticket)
        if offer.verdict is not Verdict.ADMITTED:  # cannot happen under QUEUE_LIMIT
            raise RuntimeError(f"admission refused {req.id}: {offer.verdict}")
        self.tickets[req.id] = ticket
        self._assign()

    def pod_ready(self, pod: Pod) -> None:
        pod.sink = self._engine_event
        self.pods[pod.name] = pod
        if self.rng is not None:
            self._route_service()
            return
        self.admission.upsert_pod(pod.name, ready=True, capacity=self.pod_concurrency)
        self._assign()

    def set_dispatch(self, policy: DispatchPolicy) -> None:
        """Run with this dispatch policy (a variant's, e.g. its prefill gate), set while no
        request is in the gateway, as a gateway started with those settings."""
        if self.requests:
            raise RuntimeError("the dispatch policy is set while no request is in the gateway")
        self.admission.policy = policy

    def set_pod_cap(self, cap: int) -> None:
        """Apply a new per-pod cap to every pod (the controller's published concurrency,
        `gateway.podcap`); a raised cap hands out what now fits at once."""
        cap = max(cap, 1)
        if cap == self.pod_concurrency:
            return
        raised = cap > self.pod_concurrency
        self.pod_concurrency = cap
        if self.rng is not None:
            return
        for name in self.pods:
            self.admission.upsert_pod(name, ready=True, capacity=cap)
        if raised:
            self._assign()

    def pod_gone(self, pod: Pod) -> None:
        """A pod left the endpoints (terminating or ended): route nothing more to it."""
        if self.pods.pop(pod.name, None) is not None and self.rng is None:
            self.admission.remove_pod(pod.name)

    # ---- routing -----------------------------------------------------------------------------

    def _send(self, req: Request, pod: Pod) -> None:
        now = self.clock.now
        req.dispatch = now
        req.pod = pod.name
        self.in_flight += 1
        for listener in self.listeners:
            listener.on_dispatch(req, now)
        pod.submit(req.id, req.prompt_tokens, req.output_tokens)

    def _assign(self) -> None:
        """Submit whatever the admission core hands out now."""
        for ticket in self.admission.assign(now=self.clock.now):
            assert ticket.pod is not None
            self._send(self.requests[ticket.request_id], self.pods[ticket.pod.url])

    def _route_service(self) -> None:
        rng = self.rng
        assert rng is not None
        while self.waiting:
            ready = [p for p in self.pods.values() if p.state is PodState.READY]
            if not ready:
                return
            self._send(self.waiting.popleft(), rng.choice(ready))

    def _ended(self, req: Request, when: float) -> None:
        req.finish = when
        self.in_flight -= 1
        self.completed += 1
        del self.requests[req.id]
        ticket = self.tickets.pop(req.id, None)
        if ticket is not None:
            self.admission.finish(ticket)
        for listener in self.listeners:
            listener.on_complete(req, when)

    def _engine_event(self, pod: Pod, kind: int, request_id: str, when: float) -> None:
        req = self.requests[request_id]
        if kind == FIRST_TOKEN:
            req.first_token = when
            ticket = self.tickets.get(request_id)
            opened = ticket is not None and self.admission.first_token(ticket)
            for listener in self.listeners:
                listener.on_first_token(req, when)
            if opened:
                self._assign()  # its pod's prefill gate let the next one in
            return
        if kind == REJECTED:  # never served: no first token, counted as a miss
            self.rejected += 1
        elif kind == FINISH and req.first_token is None:
            # a one-token answer: first token and end at once
            req.first_token = when
            for listener in self.listeners:
                listener.on_first_token(req, when)
        self._ended(req, when)
        if pod.state is PodState.TERMINATING and pod.outstanding == 0:
            if self.drained_callback is not None:
                self.drained_callback(pod)
        elif self.rng is None:
            self._assign()


class _Drained(Protocol):
    def __call__(self, pod: Pod) -> None: ...
