"""How requests reach the simulated pods: the gateway's own admission core, or a plain Service.

With surgescale's gateway in front (no `rng`), nothing here decides who goes where: each request
becomes a `gateway.admission.Ticket` (deadline from `surgescale.slo.Slo`) in the live gateway's
`ModelQueue` with the model's `DispatchPolicy` (deadline-aware by default: requests that can
still meet their deadline before late ones, with a bounded wait for the late), pods enter and
leave it as discovery would tell it, and whatever `assign(now=...)` hands out is submitted to the
chosen pod's engine — the same code that places requests in the live gateway, driven by the
virtual clock. A request waits while no pod has a free slot
(at zero replicas too: scale from zero) and is placed the moment a slot opens or a pod turns Ready.

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
        self.prefill_limit: int | None = None
        """Experiment: at most this many requests per pod before their first token (None: no
        limit); a pod with that many prefilling takes no new request."""
        self.prefill_token_budget: int | None = None
        """Experiment: a pod takes a new request only while the prompt tokens it holds before
        their first token are below this (None: no budget)."""
        self.prefilling: dict[str, list[int]] = {}
        """Per pod: [requests, prompt tokens] dispatched and without a first token yet."""
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
        ticket = Ticket(request_id=req.id, tenant="", arrived=now, deadline=req.deadline)
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
        self.prefilling.setdefault(pod.name, [0, 0])
        self._refresh(pod.name)
        self._assign()

    @property
    def gated(self) -> bool:
        """A prefill gate is set (`set_prefill_gates`)."""
        return self.prefill_limit is not None or self.prefill_token_budget is not None

    def _refresh(self, name: str) -> None:
        """The pod's slots in the admission core: the cap, less what the prefill gates hold
        (set as outstanding + the new requests the gates let in, so one `assign` round cannot
        overshoot them)."""
        cap = self.pod_concurrency
        pf = self.prefilling.get(name)
        apod = self.admission.pods.get(name)
        if pf is not None:
            room = cap
            if self.prefill_limit is not None:
                room = min(room, max(self.prefill_limit - pf[0], 0))
            if self.prefill_token_budget is not None:
                room = min(room, 1 if pf[1] < self.prefill_token_budget else 0)
            cap = min(cap, (0 if apod is None else apod.outstanding) + room)
        self.admission.upsert_pod(name, ready=True, capacity=cap)

    def _prefill(self, req: Request, sign: int) -> None:
        if not self.gated:
            return
        assert req.pod is not None
        pf = self.prefilling.get(req.pod)
        if pf is None:
            return
        pf[0] += sign
        pf[1] += sign * req.prompt_tokens
        if req.pod in self.pods:
            self._refresh(req.pod)

    def set_prefill_gates(self, *, limit: int | None, token_budget: int | None) -> None:
        """Experiment (evaluator only): gate each pod's new requests on its prefill work in
        flight (`prefill_limit`, `prefill_token_budget`)."""
        self.prefill_limit, self.prefill_token_budget = limit, token_budget
        if self.rng is None:
            for name in self.pods:
                self._refresh(name)

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
            self._refresh(name)
        if raised:
            self._assign()

    def pod_gone(self, pod: Pod) -> None:
        """A pod left the endpoints (terminating or ended): route nothing more to it."""
        if self.pods.pop(pod.name, None) is not None and self.rng is None:
            self.admission.remove_pod(pod.name)
            self.prefilling.pop(pod.name, None)

    # ---- routing -----------------------------------------------------------------------------

    def _send(self, req: Request, pod: Pod) -> None:
        now = self.clock.now
        req.dispatch = now
        req.pod = pod.name
        self.in_flight += 1
        for listener in self.listeners:
            listener.on_dispatch(req, now)
        if self.rng is None:
            self._prefill(req, 1)
        pod.submit(req.id, req.prompt_tokens, req.output_tokens)

    def _assign(self) -> None:
        """Submit whatever the admission core hands out now."""
        gated = self.gated
        while True:
            handed = self.admission.assign(now=self.clock.now)
            for ticket in handed:
                assert ticket.pod is not None
                self._send(self.requests[ticket.request_id], self.pods[ticket.pod.url])
            if not (gated and handed):
                return

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
            if self.gated and req.pod in self.pods:  # the slots follow the pod's new outstanding
                self._refresh(req.pod)
        for listener in self.listeners:
            listener.on_complete(req, when)

    def _engine_event(self, pod: Pod, kind: int, request_id: str, when: float) -> None:
        req = self.requests[request_id]
        if kind == FIRST_TOKEN or (req.first_token is None and self.rng is None):
            self._prefill(req, -1)
        if kind == FIRST_TOKEN:
            req.first_token = when
            for listener in self.listeners:
                listener.on_first_token(req, when)
            if self.gated:
                self._assign()
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
