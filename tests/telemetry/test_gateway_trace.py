"""One request through a real gateway (loopback) to a simulated pod, traced in memory.

Checks the span tree (request span → queue_wait, dispatch with its first_token event), that the
pod received the dispatch span's `traceparent`, that an incoming `traceparent` is honoured, and
that the GenAI metrics are recorded under their convention names and unit.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.sdk.metrics.export import HistogramDataPoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from gateway.app import build_app
from gateway.state import STATE
from gateway.telemetry import TELEMETRY, GatewayTelemetry, install
from sim.localredis.server import free_port
from tests.gateway.conftest import MODEL, Harness, RunningGateway, wait_for
from tests.telemetry.conftest import Otel

INCOMING_TRACE = "0af7651916cd43dd8448eb211c80319c"
INCOMING = f"00-{INCOMING_TRACE}-b7ad6b7169203331-01"


async def _traced_gateway(harness: Harness, otel: Otel, **overrides: Any) -> RunningGateway:
    """A gateway on loopback in front of the harness's pod, traced into `otel`, pod probed
    (`pod_url` given: a pod that is not there, and no wait)."""
    pod_url = overrides.pop("pod_url", None)
    url = pod_url or harness.pods[0].url
    app = build_app(harness.settings(static_pods=[{"model": MODEL, "url": url}], **overrides))
    assert TELEMETRY not in app  # off by default
    install(app, app[STATE].settings, GatewayTelemetry(otel.tracer_provider, otel.meter_provider))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    gw = RunningGateway(url=f"http://{host}:{port}", app=app, runner=runner)
    harness.gateways.append(gw)
    if pod_url is not None:
        return gw
    await wait_for(
        lambda: gw.state.scheduler.queue(MODEL).ready_pods > 0, what="the pod to be probed ready"
    )
    return gw


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def _hex(n: int, width: int) -> str:
    return format(n, f"0{width}x")


async def _one_request(url: str, *, stream: bool, headers: dict[str, str]) -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 8,
        "stream": stream,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        await resp.read()


async def test_streamed_request_trace_and_metrics(harness: Harness, otel: Otel) -> None:
    pod = await harness.pod()
    url = (await _traced_gateway(harness, otel)).url
    await _one_request(url, stream=True, headers={"traceparent": INCOMING})

    spans = otel.spans.get_finished_spans()
    named = _by_name(spans)
    assert set(named) == {f"chat {MODEL}", "queue_wait", "dispatch"}, [s.name for s in spans]
    root, queue, dispatch = named[f"chat {MODEL}"], named["queue_wait"], named["dispatch"]
    # The incoming traceparent is honoured: same trace, the caller's span is the parent.
    assert root.context is not None
    assert root.parent is not None
    assert _hex(root.context.trace_id, 32) == INCOMING_TRACE
    assert _hex(root.parent.span_id, 16) == "b7ad6b7169203331"
    assert root.kind is SpanKind.SERVER
    assert dispatch.kind is SpanKind.CLIENT
    for child in (queue, dispatch):
        assert child.parent is not None
        assert child.parent.span_id == root.context.span_id
        assert child.context is not None
        assert child.context.trace_id == root.context.trace_id
    attrs = dict(root.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["http.response.status_code"] == 200
    assert "error.type" not in attrs
    assert [e.name for e in root.events] == ["complete"]
    assert [e.name for e in dispatch.events] == ["first_token"]
    assert dict(dispatch.attributes or {})["surgescale.pod"] == pod.url
    # Order: queued before dispatched, first token within the dispatch, all within the request.
    assert root.start_time is not None
    assert root.end_time is not None
    assert queue.start_time is not None
    assert queue.end_time is not None
    assert dispatch.start_time is not None
    assert dispatch.end_time is not None
    assert root.start_time <= queue.start_time <= queue.end_time <= dispatch.start_time
    assert dispatch.start_time <= dispatch.events[0].timestamp <= dispatch.end_time
    assert dispatch.end_time <= root.end_time

    # The pod saw the dispatch span's context as its parent.
    seen = pod._state.last_traceparent
    assert dispatch.context is not None
    assert seen == f"00-{INCOMING_TRACE}-{_hex(dispatch.context.span_id, 16)}-01"

    data = otel.metrics.get_metrics_data()
    assert data is not None
    points: dict[str, tuple[str, Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points[metric.name] = (metric.unit or "", metric.data.data_points)
    for name in (
        "gen_ai.server.request.duration",
        "gen_ai.server.time_to_first_token",
        "gen_ai.server.time_per_output_token",
    ):
        assert name in points, sorted(points)
        unit, dps = points[name]
        assert unit == "s"
        (dp,) = dps
        assert dp.count == 1
        assert dict(dp.attributes) == {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "vllm",
            "gen_ai.request.model": MODEL,
        }
    assert points["gen_ai.server.time_to_first_token"][1][0].sum > 0
    assert (
        points["gen_ai.server.time_to_first_token"][1][0].sum
        <= points["gen_ai.server.request.duration"][1][0].sum
    )


async def test_new_trace_without_incoming_and_unknown_model_is_an_error_span(
    harness: Harness, otel: Otel
) -> None:
    pod = await harness.pod()
    url = (await _traced_gateway(harness, otel)).url
    await _one_request(url, stream=False, headers={})
    root = _by_name(otel.spans.get_finished_spans())[f"chat {MODEL}"]
    assert root.parent is None
    assert root.context is not None
    assert pod._state.last_traceparent is not None
    assert pod._state.last_traceparent.split("-")[1] == _hex(root.context.trace_id, 32)
    otel.spans.clear()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/completions", json={"model": "nope", "prompt": "x"}) as resp,
    ):
        assert resp.status == 404
    (span,) = otel.spans.get_finished_spans()
    assert span.name == "text_completion"  # no model known: the operation alone
    assert dict(span.attributes or {})["http.response.status_code"] == 404


async def test_request_that_times_out_in_the_queue(harness: Harness, otel: Otel) -> None:
    """No pod comes: the request waits, is rejected (503 queue_timeout); the spans and the
    duration metric say so, and no TTFT is recorded."""
    nowhere = f"http://127.0.0.1:{free_port()}"
    gw = await _traced_gateway(harness, otel, pod_url=nowhere, max_queue_wait_s=0.3)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    async with (
        aiohttp.ClientSession() as session,
        session.post(gw.url + "/v1/chat/completions", json=body) as resp,
    ):
        assert resp.status == 503
    named = _by_name(otel.spans.get_finished_spans())
    assert set(named) == {f"chat {MODEL}", "queue_wait"}
    root = named[f"chat {MODEL}"]
    attrs = dict(root.attributes or {})
    assert attrs["http.response.status_code"] == 503
    assert attrs["error.type"] == "queue_timeout"  # the reason, more telling than the status
    assert [e.name for e in root.events] == ["reject"]
    assert dict(root.events[0].attributes or {})["surgescale.reason"] == "queue_timeout"
    data = otel.metrics.get_metrics_data()
    assert data is not None
    names = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert "gen_ai.server.time_to_first_token" not in names
    (dp,) = names["gen_ai.server.request.duration"].data.data_points
    assert isinstance(dp, HistogramDataPoint)
    assert dict(dp.attributes or {})["error.type"] == "queue_timeout"
    assert dp.sum >= 0.3
