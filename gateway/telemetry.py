"""OpenTelemetry for the gateway (optional): a trace per request and the GenAI server metrics.

Off unless the `otel` setting or `SURGESCALE_OTEL=1` asks for it (`surgescale.telemetry` reads
the `OTEL_*` exporter variables); with it off `install` returns at once and OpenTelemetry is
never imported. On, it adds one middleware and hooks the event reporter, so the request path
itself only calls `inject` (a context-variable lookup when no request is traced).

**Trace.** A SERVER span per completion request, named `{gen_ai.operation.name} {model}` and
parented on an incoming W3C `traceparent` if there is one. Its children follow the request's
event milestones (`gateway.reporting`): `queue_wait` from `enqueue` to `dispatch` (or to its
`reject` / `cancel`), then a CLIENT span `dispatch` for the call to the pod, whose context is sent
to the pod as `traceparent` (so a vLLM started with tracing joins the trace), with a
`first_token` event; the request span gets a `complete` (or `reject` / `cancel`) event.

**Metrics** (GenAI semantic conventions, histograms in seconds, with `gen_ai.operation.name`,
`gen_ai.provider.name`, `gen_ai.request.model` and, on failure, `error.type`):
`gen_ai.server.request.duration` (arrival to last byte, every outcome),
`gen_ai.server.time_to_first_token` and `gen_ai.server.time_per_output_token` (successes).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway.openai_api import Endpoint
from gateway.reporting import Reporter
from gateway.settings import GatewaySettings
from gateway.state import STATE
from surgescale import telemetry as otel
from surgescale.events import EventType

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

log = logging.getLogger(__name__)

PROVIDER = "vllm"
"""`gen_ai.provider.name`: the engine behind the gateway (no registered value covers it)."""
OPERATIONS = {Endpoint.CHAT.value: "chat", Endpoint.COMPLETIONS.value: "text_completion"}
"""Traced paths and their `gen_ai.operation.name`."""

# Bucket boundaries the GenAI conventions advise for these histograms.
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]  # fmt: skip
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]  # fmt: skip
TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]  # fmt: skip

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Request:
    """The spans of one request in flight (reached through `_CURRENT`)."""

    __slots__ = ("error", "model", "operation", "parent", "queue", "root", "telemetry", "upstream")

    def __init__(self, telemetry: GatewayTelemetry, root: Span, operation: str) -> None:
        self.telemetry = telemetry
        self.root = root
        self.parent = telemetry.in_context(root)
        """The context whose parent is the request span (for its children)."""
        self.operation = operation
        self.model: str | None = None
        self.error: str | None = None
        """`error.type` from the request's own outcome (more telling than the HTTP status)."""
        self.queue: Span | None = None
        self.upstream: Span | None = None

    def end_children(self) -> None:
        for span in (self.queue, self.upstream):
            if span is not None and span.is_recording():
                span.end()


_CURRENT: contextvars.ContextVar[_Request | None] = contextvars.ContextVar(
    "surgescale_gateway_trace", default=None
)


def inject(headers: dict[str, str]) -> None:
    """Add the traced request's `traceparent` (its `dispatch` span) to the pod's headers."""
    current = _CURRENT.get()
    if current is not None and current.upstream is not None:
        tel = current.telemetry
        tel.inject(headers, context=tel.in_context(current.upstream))


class GatewayTelemetry:
    """Spans and GenAI metrics from `tracer_provider` / `meter_provider` (tests pass in-memory
    ones; `install` builds them from the environment)."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as names

        # Bound once: an import statement on the request path costs more than the span.
        self.in_context = trace.set_span_in_context
        self.extract = propagate.extract
        self.inject = propagate.inject
        self.kinds = trace.SpanKind
        self.status_error = trace.StatusCode.ERROR
        self._tracer = tracer_provider.get_tracer("surgescale.gateway")
        meter = meter_provider.get_meter("surgescale.gateway")
        self.duration = meter.create_histogram(
            names.GEN_AI_SERVER_REQUEST_DURATION,
            unit="s",
            description="Time from a request's arrival at the gateway to its last byte.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.ttft = meter.create_histogram(
            names.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
            unit="s",
            description="Time from arrival (queueing included) to the first token, successes.",
            explicit_bucket_boundaries_advisory=TTFT_BUCKETS,
        )
        self.tpot = meter.create_histogram(
            names.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
            unit="s",
            description="Time per output token after the first, successes.",
            explicit_bucket_boundaries_advisory=TPOT_BUCKETS,
        )
        self._on_close = on_close

    # --- the request span ----------------------------------------------------------------------

    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        operation = OPERATIONS.get(request.path)
        if operation is None or request.method != "POST":
            return await handler(request)
        root = self._tracer.start_span(
            operation,
            context=self.extract(request.headers),
            kind=self.kinds.SERVER,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": PROVIDER,
                "http.request.method": "POST",
                "url.path": request.path,
            },
        )
        current = _Request(self, root, operation)
        token = _CURRENT.set(current)
        status: int | None = None
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            root.set_attribute("error.type", "cancelled")
            raise
        except Exception as exc:
            root.record_exception(exc)
            root.set_attribute("error.type", type(exc).__qualname__)
            status = 500
            raise
        finally:
            _CURRENT.reset(token)
            current.end_children()
            if status is not None:
                root.set_attribute("http.response.status_code", status)
                if status >= 500:
                    root.set_status(self.status_error)
                    root.set_attribute("error.type", current.error or str(status))
            root.end()

    # --- milestones (from the event reporter) --------------------------------------------------

    def on_event(
        self, kind: EventType, model: str, request_id: str, fields: Mapping[str, Any]
    ) -> None:
        current = _CURRENT.get()
        if current is None or not request_id:
            return
        root = current.root
        parent = current.parent
        if kind is EventType.ENQUEUE:
            current.model = model
            root.update_name(f"{current.operation} {model}")
            root.set_attribute("gen_ai.request.model", model)
            root.set_attribute("surgescale.request_id", request_id)
            attrs = {"surgescale.prompt_tokens_estimate": fields.get("prompt_tokens") or 0}
            current.queue = self._tracer.start_span("queue_wait", context=parent, attributes=attrs)
        elif kind is EventType.DISPATCH:
            if current.queue is not None:
                current.queue.set_attribute("surgescale.queue_ms", fields.get("queue_ms") or 0.0)
                current.queue.end()
            pod = str(fields.get("pod") or "")
            where = urlsplit(pod)
            attrs = {"surgescale.pod": pod, "server.address": where.hostname or ""}
            if where.port:
                attrs["server.port"] = where.port
            current.upstream = self._tracer.start_span(
                "dispatch", context=parent, kind=self.kinds.CLIENT, attributes=attrs
            )
        elif kind is EventType.FIRST_TOKEN:
            if current.upstream is not None:
                current.upstream.add_event(
                    "first_token", _present(fields, "ttft_ms", "deadline_met")
                )
        elif kind in (EventType.COMPLETE, EventType.REJECT, EventType.CANCEL):
            status = fields.get("status")
            error = _error_type(kind, status, fields.get("reason"))
            event = _present(
                fields,
                "status",
                "reason",
                "queue_ms",
                "ttft_ms",
                "tpot_ms",
                "e2e_ms",
                "output_tokens",
            )
            root.add_event(kind.value, event)
            tokens = fields.get("output_tokens")
            if isinstance(tokens, int):
                root.set_attribute("gen_ai.usage.output_tokens", tokens)
            upstream = current.upstream
            if upstream is not None and upstream.is_recording():
                if isinstance(status, int):
                    upstream.set_attribute("http.response.status_code", status)
                if error is not None:
                    upstream.set_status(self.status_error)
                    upstream.set_attribute("error.type", error)
            if error is not None:
                current.error = error
                root.set_attribute("error.type", error)
            current.end_children()
            self._record(current, model, error, fields)

    def _record(
        self, current: _Request, model: str, error: str | None, fields: Mapping[str, Any]
    ) -> None:
        attrs: dict[str, str] = {
            "gen_ai.operation.name": current.operation,
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": model,
        }
        e2e = fields.get("e2e_ms")
        if e2e is None and error is not None:
            e2e = fields.get("queue_ms")
        if isinstance(e2e, int | float):
            self.duration.record(e2e / 1000.0, {**attrs, "error.type": error} if error else attrs)
        if error is not None:
            return
        ttft, tpot = fields.get("ttft_ms"), fields.get("tpot_ms")
        if isinstance(ttft, int | float):
            self.ttft.record(ttft / 1000.0, attrs)
        if isinstance(tpot, int | float):
            self.tpot.record(tpot / 1000.0, attrs)

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()


def _present(fields: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {f"surgescale.{n}": fields[n] for n in names if fields.get(n) is not None}


def _error_type(kind: EventType, status: object, reason: object) -> str | None:
    if kind is EventType.CANCEL:
        return "cancelled"
    if kind is EventType.REJECT:
        return str(reason or status or "rejected")
    if isinstance(status, int) and status >= 400:
        return str(reason or status)
    return None


TELEMETRY: web.AppKey[GatewayTelemetry] = web.AppKey(
    "surgescale_gateway_telemetry", GatewayTelemetry
)


def install(
    app: web.Application, settings: GatewaySettings, telemetry: GatewayTelemetry | None = None
) -> None:
    """Trace `app`'s requests if telemetry is on (or `telemetry` is given); else nothing."""
    if telemetry is None:
        if not otel.requested(settings.otel):
            return
        providers = otel.setup("surgescale-gateway")
        if providers is None:
            return
        telemetry = GatewayTelemetry(
            providers.tracer_provider, providers.meter_provider, on_close=providers.shutdown
        )
    app[TELEMETRY] = telemetry
    traced = telemetry

    @web.middleware
    async def trace_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await traced.middleware(request, handler)

    app.middlewares.insert(0, trace_requests)  # outermost: it sees the final status
    app.on_startup.append(_hook_reporter)  # runs after the cleanup contexts opened the reporter
    app.on_cleanup.append(_close)


async def _hook_reporter(app: web.Application) -> None:
    state = app[STATE]
    if state.reporter is None:
        state.reporter = Reporter(gateway=state.instance, producer=None)
    state.reporter.add_listener(app[TELEMETRY].on_event)


async def _close(app: web.Application) -> None:
    await asyncio.to_thread(app[TELEMETRY].close)
