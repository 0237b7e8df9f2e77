"""OpenTelemetry for the controller (optional): a span per decision that writes a scale.

Off unless `--otel` / `SURGESCALE_CONTROLLER_OTEL` / `SURGESCALE_OTEL=1` asks for it
(`surgescale.telemetry` reads the `OTEL_*` exporter variables); off, `from_env` returns None,
the loop's two hook calls are skipped and OpenTelemetry is never imported.

On, the loop tells `DecisionTelemetry` about every batch of events it folds in (`ingested`:
per model, the newest `keep` events since the model's last decision span are remembered, and how
many there were) and about every evaluation that leads to a scale write (`decided`: the leader's
valid decision whose replicas differ from the current ones, or whose node count changed). Such
a decision becomes a span `scale {model}` carrying the Decision (replicas, nodes, reason and its
numbers), the Observation behind it (queue, in flight, replicas ready / starting, rates, TTFT)
and the events that led to it: their ids (`origin/eseq`) and request ids as attributes, and one
span event each, stamped with the event's own time. A gateway traced too puts the same request
id on its request span (`surgescale.request_id`), which is how the two are joined. The span is
built in a later loop callback, after the scale write just submitted has gone out.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from controller.policy import Decision, Observation
from controller.scaler import Key, Scaler
from surgescale import telemetry as otel
from surgescale.events import Event, EventType

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

log = logging.getLogger(__name__)

KEEP = 32
"""Events remembered per model between two decision spans (the newest)."""


@dataclass(slots=True)
class _Behind:
    """The events of one model since its last decision span."""

    events: deque[Event] = field(default_factory=lambda: deque(maxlen=KEEP))
    count: int = 0


def event_id(event: Event) -> str:
    """`origin/eseq`, the id the producer stamps on an event (`gateway/ts_ms` without one)."""
    if event.origin is not None and event.eseq is not None:
        return f"{event.origin}/{event.eseq}"
    return f"{event.gateway}/{event.ts_ms}"


class DecisionTelemetry:
    """Decision spans into `tracer_provider` (tests pass an in-memory one; see `from_env`)."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        *,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._tracer = tracer_provider.get_tracer("surgescale.controller")
        self._behind: dict[str, _Behind] = {}
        self._nodes: dict[Key, int] = {}
        self._on_close = on_close
        self.spans = 0

    def ingested(self, events: Iterable[Event]) -> None:
        """Remember the request events just folded in (snapshots say nothing new)."""
        behind = self._behind
        for event in events:
            if event.type is EventType.SNAPSHOT:
                continue
            b = behind.get(event.model)
            if b is None:
                b = behind[event.model] = _Behind()
            b.events.append(event)
            b.count += 1

    def decided(self, scaler: Scaler, obs: Observation, decision: Decision, current: int) -> None:
        """A span for a decision the leader is writing (replicas or nodes change); else nothing."""
        model = scaler.model
        if model is None or not decision.valid:
            return
        nodes_before = self._nodes.get(scaler.key)
        writes_nodes = scaler.node_target() is not None and nodes_before != decision.nodes
        if decision.replicas == current and not writes_nodes:
            return
        self._nodes[scaler.key] = decision.nodes
        behind = self._behind.pop(model, None) or _Behind()
        try:
            # After the scale write the loop just submitted: the PATCH goes out first.
            asyncio.get_running_loop().call_soon(
                self._span, model, scaler.name, obs, decision, current, nodes_before, behind
            )
        except RuntimeError:  # no loop (a synchronous caller)
            self._span(model, scaler.name, obs, decision, current, nodes_before, behind)

    def _span(
        self,
        model: str,
        scaler: str,
        obs: Observation,
        decision: Decision,
        current: int,
        nodes_before: int | None,
        behind: _Behind,
    ) -> None:
        attributes: dict[str, str | bool | int | float | list[str]] = {
            "surgescale.model": model,
            "surgescale.scaler": scaler,
            "surgescale.replicas.before": current,
            "surgescale.decision.replicas": decision.replicas,
            "surgescale.decision.nodes": decision.nodes,
            "surgescale.decision.reason": decision.reason.value,
            "surgescale.decision.detail": decision.detail,
            "surgescale.decision.recommended": decision.recommended,
            "surgescale.decision.service_rate": decision.service_rate,
            "surgescale.decision.concurrency": decision.concurrency,
            "surgescale.observation.queue_depth": obs.queue_depth,
            "surgescale.observation.in_flight": obs.in_flight,
            "surgescale.observation.ready_replicas": obs.ready_replicas,
            "surgescale.observation.starting_replicas": obs.starting_replicas,
            "surgescale.observation.arrival_rate_short": obs.arrival_rate_short,
            "surgescale.observation.arrival_rate_long": obs.arrival_rate_long,
            "surgescale.trigger.event_count": behind.count,
            "surgescale.trigger.event_ids": [event_id(e) for e in behind.events],
            "surgescale.trigger.request_ids": sorted(
                {e.request_id for e in behind.events if e.request_id}
            ),
        }
        if nodes_before is not None:
            attributes["surgescale.nodes.before"] = nodes_before
        if obs.ttft_p95_s is not None:
            attributes["surgescale.observation.ttft_p95_s"] = obs.ttft_p95_s
        direction = (
            "up"
            if decision.replicas > current
            else "down"
            if decision.replicas < current
            else "nodes"
        )
        attributes["surgescale.decision.direction"] = direction
        span = self._tracer.start_span(f"scale {model}", attributes=attributes)
        for e in behind.events:
            span.add_event(
                e.type.value,
                {
                    "surgescale.event_id": event_id(e),
                    "surgescale.request_id": e.request_id,
                    "surgescale.gateway": e.gateway,
                },
                timestamp=e.ts_ms * 1_000_000,
            )
        span.end()
        self.spans += 1

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()


def from_env(flag: bool = False) -> DecisionTelemetry | None:
    """Decision spans exported as the `OTEL_*` variables say, if asked for; else None."""
    if not otel.requested(flag):
        return None
    providers = otel.setup("surgescale-controller")
    if providers is None:
        return None
    return DecisionTelemetry(providers.tracer_provider, on_close=providers.shutdown)
