"""A controller decision that writes a scale becomes one span, with the events behind it.

The controller runs against the simulated cluster (real HTTP) and real Redis; a gateway stand-in
enqueues requests; the decision span is read back from the SDK's in-memory exporter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.telemetry import DecisionTelemetry
from tests.controller.conftest import Gateway, Sim, eventually
from tests.telemetry.conftest import Otel
from tests.waiting import wait_until


async def test_scale_up_decision_span_names_its_trigger_events(
    sim: Sim, gateway_factory: Callable[[], Gateway], otel: Otel
) -> None:
    await sim.create_model("llama", replicas=1)
    ctl = await sim.controller("solo")
    ctl.telemetry = DecisionTelemetry(otel.tracer_provider)
    async with gateway_factory() as gw:

        async def ready() -> bool:
            return (
                ctl.health.ready()[0]
                and ctl.is_leader
                and bool(ctl.consumer and ctl.consumer.streams)
            )

        await eventually(ready, what="controller ready, leading and reading the stream")
        # Before any request: one write, the NodePool from 0 to the node the replica needs.
        await wait_until(otel.spans.get_finished_spans, what="the idle decision's span")
        (idle,) = otel.spans.get_finished_spans()
        idle_attrs = dict(idle.attributes or {})
        assert idle_attrs["surgescale.decision.direction"] == "nodes"
        assert idle_attrs["surgescale.decision.nodes"] == 1
        assert idle_attrs["surgescale.trigger.event_count"] == 0
        otel.spans.clear()
        gw.enqueue(40)

        async def scaled() -> int:
            n = await sim.replicas("llama")
            return n if n > 1 else 0

        await eventually(scaled, timeout=5.0, what="a scale-up PATCH")
    spans = [s for s in otel.spans.get_finished_spans() if s.name == "scale llama3-8b"]
    # The scale-up's span. On a loaded machine a hold can get a span before it: the controller's
    # view of the Deployment (its informer) still lags the replicas it has (seen once).
    ups = [
        s
        for s in spans
        if str((s.attributes or {}).get("surgescale.decision.reason", "")).startswith("ScaleUp")
    ]
    assert ups, [dict(s.attributes or {}) for s in spans]
    first = ups[0]
    attrs: dict[str, Any] = dict(first.attributes or {})
    assert attrs["surgescale.scaler"] == "default/llama"
    assert attrs["surgescale.replicas.before"] == 1
    assert attrs["surgescale.decision.replicas"] == 6
    assert attrs["surgescale.decision.direction"] == "up"
    assert str(attrs["surgescale.decision.reason"]).startswith("ScaleUp")
    assert attrs["surgescale.observation.queue_depth"] >= 1
    # The events behind it: the enqueues, by event id and request id, and as span events.
    count = attrs["surgescale.trigger.event_count"]
    assert isinstance(count, int)
    assert 1 <= count <= 40
    request_ids = list(attrs["surgescale.trigger.request_ids"])
    assert request_ids
    assert all(r.startswith("r") for r in request_ids)
    event_ids = list(attrs["surgescale.trigger.event_ids"])
    assert len(event_ids) == min(count, 32)
    assert all("/" in e for e in event_ids)
    assert {e.name for e in first.events} == {"enqueue"}
    assert first.start_time is not None
    assert all(e.timestamp <= first.start_time for e in first.events)
    assert ctl.telemetry.spans == 1 + len(spans)  # the idle NodePool write, then these
