"""The gateway's admission model in virtual time: what `gateway/` does, minus HTTP.

One FIFO queue per model (one model here); each Ready pod takes at most `pod_concurrency`
requests at once; the head of the queue goes to the Ready pod with the fewest outstanding
requests (ties: the oldest pod). With an `rng` the model is a plain Kubernetes Service instead
(kube-proxy picks a random Ready endpoint; no cap, so requests queue inside vLLM). A request waits in the queue while no pod has a free slot — at
zero replicas too (scale from zero) — and is released the moment a slot opens or a pod turns
Ready. Terminating pods get nothing new and are reported to the cluster once drained.

TTFT is measured as the gateway measures it: from arrival at the gateway to the first token.
Every milestone is passed to the `Listener`s (metrics, and the observation feeds of the policies).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Protocol

from sim.evaluate.clock import Clock
from sim.evaluate.pods import FINISH, FIRST_TOKEN, REJECTED, Pod, PodState


class Request:
    """One request's record: its demand and the times of its milestones."""

    __slots__ = (
        "arrival",
        "dispatch",
        "finish",
        "first_token",
        "id",
        "output_tokens",
        "pod",
        "prompt_tokens",
    )

    def __init__(self, rid: str, arrival: float, prompt_tokens: int, output_tokens: int) -> None:
        self.id = rid
        self.arrival = arrival
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
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
    """Admission queue and pod choice for one model."""

    def __init__(
        self, *, clock: Clock, pod_concurrency: int, rng: random.Random | None = None
    ) -> None:
        self.clock = clock
        self.pod_concurrency = pod_concurrency
        self.rng = rng
        """With an rng, pick a random Ready pod (a Kubernetes Service) instead of least-outstanding."""
        self.queue: deque[Request] = deque()
        self.in_flight = 0
        self.listeners: list[Listener] = []
        self.requests: dict[str, Request] = {}
        self.pods: list[Pod] = []
        """Ready pods, in the order they turned Ready."""
        self.drained_callback: _Drained | None = None
        self.completed = 0
        self.rejected = 0

    # ---- inputs ------------------------------------------------------------------------------

    def arrive(self, req: Request) -> None:
        now = self.clock.now
        self.requests[req.id] = req
        self.queue.append(req)
        for listener in self.listeners:
            listener.on_enqueue(req, now)
        self._dispatch()

    def pod_ready(self, pod: Pod) -> None:
        pod.sink = self._engine_event
        self.pods.append(pod)
        self._dispatch()

    def pod_gone(self, pod: Pod) -> None:
        """A pod left the endpoints (terminating or ended): route nothing more to it."""
        if pod in self.pods:
            self.pods.remove(pod)

    # ---- routing -----------------------------------------------------------------------------

    def _pick(self) -> Pod | None:
        if self.rng is not None:
            ready = [p for p in self.pods if p.state is PodState.READY]
            return self.rng.choice(ready) if ready else None
        best: Pod | None = None
        cap = self.pod_concurrency
        for pod in self.pods:
            if pod.state is not PodState.READY or pod.outstanding >= cap:
                continue
            if best is None or pod.outstanding < best.outstanding:
                best = pod
        return best

    def _dispatch(self) -> None:
        queue = self.queue
        while queue:
            pod = self._pick()
            if pod is None:
                return
            req = queue.popleft()
            now = self.clock.now
            req.dispatch = now
            req.pod = pod.name
            self.in_flight += 1
            for listener in self.listeners:
                listener.on_dispatch(req, now)
            pod.submit(req.id, req.prompt_tokens, req.output_tokens)

    def _engine_event(self, pod: Pod, kind: int, request_id: str, when: float) -> None:
        req = self.requests[request_id]
        if kind == FIRST_TOKEN:
            req.first_token = when
            for listener in self.listeners:
                listener.on_first_token(req, when)
        elif kind == REJECTED:  # never served: no first token, counted as a miss
            req.finish = when
            self.in_flight -= 1
            self.completed += 1
            self.rejected += 1
            del self.requests[request_id]
            for listener in self.listeners:
                listener.on_complete(req, when)
        elif kind == FINISH:
            if req.first_token is None:  # a one-token answer: first token and end at once
                req.first_token = when
                for listener in self.listeners:
                    listener.on_first_token(req, when)
            req.finish = when
            self.in_flight -= 1
            self.completed += 1
            del self.requests[request_id]
            for listener in self.listeners:
                listener.on_complete(req, when)
            if pod.state is PodState.TERMINATING and pod.outstanding == 0:
                if self.drained_callback is not None:
                    self.drained_callback(pod)
            else:
                self._dispatch()


class _Drained(Protocol):
    def __call__(self, pod: Pod) -> None: ...
