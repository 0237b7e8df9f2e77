"""Simulated pods in virtual time: the SAME engine model as the live pod, driven by the clock.

The live pod (`sim.pod`) calls the engine's `step(now)` once per step in real time; here the pod
calls the engine's fast path, `advance(until)`, which jumps over steps whose batch does not change
and returns the first-token and finish events with their exact times. A pod keeps exactly one
wake-up in the clock's queue, at the engine's `next_change_time()`; a generation counter retires
older ones whenever a new request changes the schedule.

Lifecycle states are set by the cluster model (`sim.evaluate.cluster`); routing and the request
records belong to the gateway model (`sim.evaluate.ingress`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from sim.engine import Engine, EngineEvent, EventKind, RequestRejected, get_profile
from sim.evaluate.clock import Clock

if TYPE_CHECKING:
    from sim.evaluate.cluster import Node


class PodState(enum.Enum):
    PENDING = "pending"
    LOADING = "loading"
    READY = "ready"
    TERMINATING = "terminating"
    ENDED = "ended"


class EngineLike(Protocol):
    """The part of `sim.engine.Engine` the evaluator uses."""

    def add(self, request_id: str, prompt_tokens: int, max_tokens: int, now: float) -> Any: ...

    def advance(self, until: float) -> list[EngineEvent]: ...

    def next_change_time(self) -> float | None: ...


EngineFactory = Callable[[int], EngineLike]
"""Builds the engine of the pod with the given sequence number (used as its seed)."""

FIRST_TOKEN = 1
FINISH = 2
REJECTED = 3
"""The engine refused the request (longer than the model or the KV cache takes): it ends at
once without a first token, as vLLM's 400 would."""

Sink = Callable[["Pod", int, str, float], None]
"""Receives (pod, kind, request_id, time) for each engine event, in time order."""


class Pod:
    """One replica: its lifecycle, its engine, its outstanding requests and busy time."""

    __slots__ = (
        "_busy_since",
        "_gen",
        "bound_at",
        "busy_total",
        "clock",
        "created_at",
        "end_at",
        "engine",
        "name",
        "node",
        "node_ref",
        "outstanding",
        "ready_at",
        "rejected",
        "sink",
        "state",
    )

    def __init__(self, *, name: str, created_at: float, engine: EngineLike, clock: Clock) -> None:
        self.name = name
        self.created_at = created_at
        self.engine = engine
        self.clock = clock
        self.state = PodState.PENDING
        self.node: str | None = None
        self.node_ref: Node | None = None
        self.bound_at: float | None = None
        self.ready_at: float | None = None
        self.end_at: float | None = None
        self.outstanding = 0
        self.rejected = 0
        self.busy_total = 0.0
        self._busy_since: float | None = None
        self._gen = 0
        self.sink: Sink | None = None

    def busy_seconds(self, now: float) -> float:
        """Total time this pod had at least one request, up to `now`."""
        extra = 0.0 if self._busy_since is None else now - self._busy_since
        return self.busy_total + extra

    def submit(self, request_id: str, prompt_tokens: int, max_tokens: int) -> None:
        """Hand a request to the engine now."""
        now = self.clock.now
        self._drain(now)
        try:
            self.engine.add(request_id, prompt_tokens, max_tokens, now)
        except RequestRejected:
            self.rejected += 1
            if self.sink is not None:
                self.sink(self, REJECTED, request_id, now)
            return
        if self.outstanding == 0:
            self._busy_since = now
        self.outstanding += 1
        self._reschedule()

    def _wake(self, gen: Any) -> None:
        if gen != self._gen:
            return
        self._drain(self.clock.now)
        self._reschedule()

    def _drain(self, until: float) -> None:
        events = self.engine.advance(until)
        if not events:
            return
        sink = self.sink
        for kind, request_id, when in _translate(events):
            if kind == FINISH:
                self.outstanding -= 1
                if self.outstanding == 0 and self._busy_since is not None:
                    self.busy_total += when - self._busy_since
                    self._busy_since = None
            if sink is not None:
                sink(self, kind, request_id, when)

    def _reschedule(self) -> None:
        self._gen += 1
        nxt = self.engine.next_change_time()
        if nxt is not None:
            self.clock.at(nxt, self._wake, self._gen)


_KINDS = {EventKind.FIRST_TOKEN: FIRST_TOKEN, EventKind.FINISHED: FINISH}


def _translate(events: list[EngineEvent]) -> list[tuple[int, str, float]]:
    """The engine's first-token and finish events as (kind, request_id, time); preemptions are
    internal to the engine and not reported."""
    out: list[tuple[int, str, float]] = []
    for ev in events:
        kind = _KINDS.get(ev.kind)
        if kind is not None:
            out.append((kind, ev.request_id, ev.time))
    return out


def engine_factory(profile: str, *, max_num_seqs: int | None = None) -> EngineFactory:
    """Engines of the named `sim.engine` profile, one per pod."""
    prof = get_profile(profile)

    def make(_: int) -> EngineLike:
        return Engine(prof, max_num_seqs=max_num_seqs)

    return make
