"""The engine's value types: what goes in (requests) and what comes out (steps, events).

`Req` is the engine's mutable per-request state (internal to `sim.engine`); the rest are
immutable results. The scheduler is `sim.engine.core`; the virtual-time skipping of decode runs
is `sim.engine.decoderun`.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class RequestRejected(ValueError):
    """The request can never be served (too long for the model or the cache, or bad sizes)."""


class EventKind(enum.Enum):
    FIRST_TOKEN = "first_token"
    FINISHED = "finished"
    PREEMPTED = "preempted"


class EngineEvent(NamedTuple):
    """Something that happened to one request at an exact (model) time. A NamedTuple, like
    `TokenOutput`: virtual time makes one per first token and finish, and a frozen dataclass
    costs several times more to build."""

    time: float
    request_id: str
    kind: EventKind
    output_tokens: int


class TokenOutput(NamedTuple):
    """One request's output of one step: one new token (`total` so far). A NamedTuple: a big
    batch makes thousands per step, and a frozen dataclass costs several times more to build."""

    request_id: str
    total: int
    first: bool
    finished: bool


class StepResult(NamedTuple):
    """A planned step: when it starts and ends, what it emits at its end, whom it preempted.
    A NamedTuple (immutable, cheap to build: virtual time plans one per uneventful step)."""

    start: float
    end: float
    outputs: tuple[TokenOutput, ...]
    preempted: tuple[str, ...]
    admitted: tuple[str, ...]  # requests that left the waiting queue for the first time
    num_decode: int
    num_prefill_tokens: int

    @property
    def duration(self) -> float:
        return self.end - self.start


class Req:
    """A request inside the engine (mutable; internal to `sim.engine`)."""

    __slots__ = ("arrival", "blocks", "computed", "generated", "id", "max_tokens", "prompt")

    def __init__(self, request_id: str, prompt: int, max_tokens: int, arrival: float) -> None:
        self.id = request_id
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.arrival = arrival
        self.computed = 0  # tokens whose KV is in the cache
        self.generated = 0  # output tokens sampled so far
        self.blocks = 0
