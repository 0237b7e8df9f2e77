"""The two records every kind of run shares: a trace row (`TraceRequest`) and what became of one
request (`RequestResult`).

A trace row is what the trace readers (`sim.load.trace`), the synthetic patterns
(`sim.load.patterns`), the demo's schedule (`sim.demo.scenario`) and the evaluator
(`sim.evaluate.trace`) produce and replay: an arrival time in seconds from the start and token
counts. A request result is what the load generator (`sim.load.runner`) records for every request
it was given, whatever happened to it; the load summary (`sim.load.summary`) and the demo's
record, summary and report (`sim.demo.record`, `.summary`, `.report`) read it. The evaluator's
simulated requests (`sim.evaluate.ingress.Request`) are a model's state, not a record, and stay
its own.

A leaf module: it imports nothing from the project.
"""

from __future__ import annotations

from dataclasses import dataclass

OK = "ok"
"""The status of a request that streamed to its end. The others: "http_<code>", "timeout",
"connection_error", "protocol_error", "cancelled" (the run ended before it finished)."""


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request of a trace: when it arrives (seconds from the start, trace time, before any
    time scaling) and its token counts."""

    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestResult:
    """One request as the load generator saw it; every request given has one, ending in a status.

    Times are seconds from the run's start (wall clock, after time scaling); the fields are in
    the order of `surgescale sim load --out`'s CSV columns."""

    index: int = 0
    """Its place in the schedule."""
    request_id: str = ""
    scheduled_s: float
    """When it was due."""
    sent_s: float | None = None
    """When it went out (None: never sent)."""
    status: str
    """`OK` or one of the failure statuses (see `OK`)."""
    http_status: int | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    """(e2e - ttft) / (output tokens - 1), for requests with more than one token."""
    e2e_s: float | None = None
    prompt_tokens: int = 0
    output_tokens_requested: int = 0
    output_tokens: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def started_s(self) -> float:
        """When it went out, or when it was due if it never did."""
        return self.scheduled_s if self.sent_s is None else self.sent_s
