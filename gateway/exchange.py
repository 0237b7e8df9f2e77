"""One request's trip through the gateway, and the events it produces.

`Exchange` carries what the proxy learns about a request as it goes (pod, timings, outcome);
`emit` sends one of its events. Shared by `gateway.proxy` (the request path) and
`gateway.streaming` (forwarding a stream).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.admission import Pod, Ticket, TicketState
from gateway.metrics import ModelMetrics
from gateway.state import GatewayState
from surgescale.events import EventType


class UpstreamFailed(Exception):
    """The pod failed before the first byte."""

    def __init__(self, status: int, message: str, body: bytes | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body


@dataclass(slots=True, eq=False)
class Exchange:
    """One request's trip through the gateway (mutable: the pod changes on a retry)."""

    state: GatewayState
    model: str
    ticket: Ticket
    metrics: ModelMetrics
    pod: Pod | None = None
    admitted_at: float = 0.0
    slot_at: float = 0.0
    queue_ms: float | None = None
    dispatched: bool = False
    """A `dispatch` event went out (so the controller counts this request as in flight)."""
    first_at: float | None = None
    client_gone: bool = False
    """The client disconnected while its answer was being written."""
    done_sent: bool = False
    """The stream's `[DONE]` terminator reached the client: the answer is whole."""
    status: int = 200
    output_tokens: int | None = None
    reason: str | None = None
    response: web.StreamResponse | None = None
    """The client's response once its head was sent (keep-alives or the stream itself)."""

    @property
    def arrived(self) -> float:
        return self.ticket.arrived

    def overhead_before_send(self, sent_at: float) -> float:
        """Gateway time before the request left for the pod, queueing excluded."""
        return (self.admitted_at - self.arrived) + (sent_at - self.slot_at)


def emit(ex: Exchange, kind: EventType, *, soon: bool = False, **fields: object) -> None:
    """Send one event about this request (a no-op when events are off); an `enqueue` that has
    to wait for a slot is urgent (`Reporter.emit`: it goes to Redis at once). `soon`: at the
    loop's next turn, off the way to the first byte (`Reporter.emit`)."""
    reporter = ex.state.reporter
    if reporter is not None:
        urgent = kind is EventType.ENQUEUE and ex.ticket.state is not TicketState.ASSIGNED
        reporter.emit(kind, ex.model, ex.ticket.request_id, urgent=urgent, soon=soon, **fields)
