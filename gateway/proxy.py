"""The request path: authenticate, validate, queue, dispatch, stream back, report.

One handler serves `/v1/chat/completions` and `/v1/completions`. A request is admitted into its
model's queue (`enqueue` at once, even at zero pods), waits for a slot (`gateway.scheduler`),
goes to the chosen pod (`dispatch`) and its answer is forwarded: a stream chunk by chunk as it
arrives (each `write` waits for the client's socket to drain, so a slow client slows its own
upstream read and nothing piles up), a plain response whole. A connect error, a 5xx or a stream
that dies before its first byte is retried on another pod; a break after the first byte ends the
stream with an SSE error event. A client that goes away cancels the upstream request (its
connection is closed, which aborts the request in vLLM), frees the slot and is reported as
`cancel`. The event accounting rules are in `gateway.reporting`.

Ops endpoints (`/healthz`, `/readyz`, `/metrics`, `/v1/models`) live in `gateway.ops`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from gateway.admission import Pod, Ticket
from gateway.metrics import ModelMetrics
from gateway.openai_api import (
    Endpoint,
    InvalidRequest,
    ParsedRequest,
    error_response,
    has_output,
    has_usage,
    invalid_response,
    parse_request,
    sse_error,
    take_usage,
    usage_tokens,
    with_usage_requested,
)
from gateway.scheduler import Rejected
from gateway.state import STATE, GatewayState
from surgescale.events import EventType

log = logging.getLogger(__name__)

_RETRYABLE = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
"""Failures before the first byte that another pod may not have (refused, reset, closed)."""


class _UpstreamFailed(Exception):
    """The pod failed before the first byte."""

    def __init__(self, status: int, message: str, body: bytes | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body


@dataclass(slots=True, eq=False)
class _Exchange:
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
    status: int = 200
    output_tokens: int | None = None
    reason: str | None = None

    @property
    def arrived(self) -> float:
        return self.ticket.arrived

    def overhead_before_send(self, sent_at: float) -> float:
        """Gateway time before the request left for the pod, queueing excluded."""
        return (self.admitted_at - self.arrived) + (sent_at - self.slot_at)


def handler(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await serve_completion(request, endpoint)

    return handle


async def serve_completion(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
    state = request.app[STATE]
    arrived = state.clock()
    tenant = state.authenticate(request.headers.get("Authorization"))
    if tenant is None:
        return error_response(
            401, "invalid or missing API key", kind="invalid_request_error", code="invalid_api_key"
        )
    try:
        parsed = parse_request(await _read_body(request, state.settings.max_body_bytes), endpoint)
    except InvalidRequest as exc:
        return invalid_response(exc)
    model = parsed.model
    if model not in state.models:
        return error_response(
            404,
            f"the model {model!r} does not exist",
            kind="invalid_request_error",
            code="model_not_found",
            param="model",
        )
    ticket = Ticket(request_id=state.next_request_id(), tenant=tenant, arrived=arrived)
    ex = _Exchange(state=state, model=model, ticket=ticket, metrics=state.metrics.model(model))
    try:
        state.scheduler.admit(model, ticket)
    except Rejected as rej:
        return _reject(ex, rej)
    ex.admitted_at = state.clock()
    ex.metrics.admitted.inc()
    _emit(
        ex,
        EventType.ENQUEUE,
        prompt_tokens=parsed.prompt_tokens,
        api_key=tenant or None,
    )
    try:
        ex.pod = await state.scheduler.wait(model, ticket)
    except Rejected as rej:
        return _reject(ex, rej)
    except asyncio.CancelledError:
        _report_cancel(ex)
        raise
    ex.slot_at = state.clock()
    queue_s = ex.slot_at - ex.admitted_at
    ex.metrics.queue_wait.observe(queue_s)
    ex.queue_ms = (ex.slot_at - arrived) * 1000.0
    _emit(ex, EventType.DISPATCH, pod=ex.pod.url, queue_ms=ex.queue_ms)
    ex.dispatched = True
    try:
        response = await _forward(request, ex, parsed, endpoint)
    except (asyncio.CancelledError, ConnectionResetError):
        state.scheduler.finish(model, ticket)
        _report_cancel(ex)
        raise
    except Exception:
        # A bug or an error type nobody foresaw: still free the slot and close the books.
        log.exception("request %s failed inside the gateway", ticket.request_id)
        ex.status, ex.reason = 500, "gateway_error"
        state.scheduler.finish(model, ticket)
        _report_complete(ex)
        raise
    state.scheduler.finish(model, ticket)
    _report_complete(ex)
    return response


async def _read_body(request: web.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise InvalidRequest(
            f"request body of {length} bytes exceeds the limit of {limit}", status=413
        )
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise InvalidRequest(
            f"request body exceeds the limit of {limit} bytes", status=413
        ) from None


async def _forward(
    request: web.Request, ex: _Exchange, parsed: ParsedRequest, endpoint: Endpoint
) -> web.StreamResponse:
    """Send to the pod (retrying on another before the first byte); answer the client."""
    state = ex.state
    settings = state.settings
    session = state.session
    assert session is not None
    strip_usage = parsed.stream and settings.request_usage and not parsed.client_wants_usage
    body = with_usage_requested(parsed.payload) if strip_usage else parsed.raw
    headers = {"Content-Type": "application/json", "X-Request-Id": ex.ticket.request_id}
    if settings.upstream_api_key is not None:
        headers["Authorization"] = "Bearer " + settings.upstream_api_key.get_secret_value()
    while True:
        pod = ex.pod
        assert pod is not None
        sent_at = state.clock()
        try:
            async with asyncio.timeout(settings.first_byte_timeout_s):
                upstream = await session.post(pod.url + endpoint.value, data=body, headers=headers)
                try:
                    if upstream.status >= 500:
                        detail = await upstream.read()
                        raise _UpstreamFailed(
                            upstream.status, f"pod answered {upstream.status}", detail
                        )
                    first = await _first_chunk(upstream) if parsed.stream else b""
                except BaseException:
                    upstream.close()
                    raise
        except (_UpstreamFailed, *_RETRYABLE) as exc:
            failure = (
                exc
                if isinstance(exc, _UpstreamFailed)
                else _UpstreamFailed(502, f"pod unreachable: {type(exc).__name__}")
            )
            if ex.ticket.attempts > settings.retries:
                ex.status, ex.reason = failure.status, "upstream_error"
                return _upstream_error(failure)
            log.info("retrying %s after %s on %s", ex.ticket.request_id, failure.message, pod.url)
            ex.metrics.retries.inc()
            state.scheduler.retry(ex.model, ex.ticket, failed_pod=pod.url)
            try:
                ex.pod = await state.scheduler.wait(ex.model, ex.ticket)
            except Rejected as rej:
                ex.status, ex.reason = rej.status, rej.reason
                return _rejection(state, rej)
            ex.slot_at = state.clock()
            continue
        except TimeoutError:
            ex.status, ex.reason = 504, "upstream_timeout"
            return error_response(
                504,
                f"the pod did not answer within {settings.first_byte_timeout_s:g}s",
                kind="upstream_error",
                code="upstream_timeout",
            )
        break
    overhead = ex.overhead_before_send(sent_at)
    try:
        if parsed.stream and upstream.status == 200:
            return await _stream(
                request,
                ex,
                upstream,
                first,
                strip_usage=strip_usage,
                endpoint=endpoint,
                overhead=overhead,
            )
        ex.metrics.added.observe(overhead)
        data = await upstream.read()
        ex.status = upstream.status
        ex.output_tokens = usage_tokens(data) if upstream.status == 200 else None
        return web.Response(
            status=upstream.status,
            body=data,
            content_type=upstream.content_type or "application/json",
            headers={"X-Request-Id": ex.ticket.request_id},
        )
    finally:
        upstream.close()


async def _first_chunk(upstream: aiohttp.ClientResponse) -> bytes:
    """A 200 stream's bytes up to its first token; a stream that ends before counts as failed."""
    if upstream.status != 200:
        return b""
    read = upstream.content.readany
    data = await read()
    while not has_output(data):
        more = await read()
        if not more:
            raise _UpstreamFailed(502, "the pod closed the stream before the first token")
        data += more
    return data


async def _stream(
    request: web.Request,
    ex: _Exchange,
    upstream: aiohttp.ClientResponse,
    first: bytes,
    *,
    strip_usage: bool,
    endpoint: Endpoint,
    overhead: float,
) -> web.StreamResponse:
    """Forward a stream; `overhead` is the gateway's time before the send, queueing excluded."""
    state = ex.state
    ex.first_at = first_at = state.clock()
    ttft_s = first_at - ex.arrived
    ex.metrics.ttft.observe(ttft_s)
    _emit(ex, EventType.FIRST_TOKEN, pod=ex.pod.url if ex.pod else None, ttft_ms=ttft_s * 1000.0)
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": upstream.headers.get("Content-Type", "text/event-stream"),
            "Cache-Control": "no-cache",
            "X-Request-Id": ex.ticket.request_id,
        },
    )
    await response.prepare(request)
    events = 0
    tokens: int | None = None
    pending = b""
    read = _reader(upstream)
    data = first
    try:
        while data:
            if strip_usage or pending or has_usage(data):
                # Frame on event boundaries so a usage chunk can be read (and stripped) whole.
                pending += data
                cut = pending.rfind(b"\n\n")
                if cut < 0:
                    data = await read()
                    continue
                out, pending = pending[: cut + 2], pending[cut + 2 :]
                if has_usage(out):
                    out, seen = take_usage(out, strip=strip_usage)
                    if seen is not None:
                        tokens = seen
            else:
                out = data
            if out:
                first_write = not events
                events += out.count(b"data:")
                await response.write(out)
                if first_write:
                    ex.metrics.added.observe(overhead + state.clock() - first_at)
            data = await read()
        if pending:
            await response.write(pending)
    except _Broken as exc:
        ex.status, ex.reason = 502, "upstream_error_mid_stream"
        log.warning("stream %s broke mid-way: %r", ex.ticket.request_id, exc.__cause__)
        await response.write(
            sse_error(f"the pod failed mid-stream ({exc.kind})", code="upstream_error")
        )
    ex.metrics.chunks.inc(events)
    # Without a usage chunk: count events, less `[DONE]` and a chat stream's role-only chunk.
    if tokens is None:
        tokens = max(0, events - (2 if endpoint is Endpoint.CHAT else 1))
    ex.output_tokens = tokens
    await response.write_eof()
    return response


class _Broken(Exception):
    """The upstream stream failed after its first byte."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _reader(upstream: aiohttp.ClientResponse) -> Callable[[], Awaitable[bytes]]:
    """`readany` of the upstream body, with its failures told apart from the client's."""
    readany = upstream.content.readany

    async def read() -> bytes:
        try:
            return await readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Broken(type(exc).__name__) from exc

    return read


def _emit(ex: _Exchange, kind: EventType, **fields: object) -> None:
    reporter = ex.state.reporter
    if reporter is not None:
        reporter.emit(kind, ex.model, ex.ticket.request_id, **fields)


def _reject(ex: _Exchange, rej: Rejected) -> web.Response:
    ex.state.metrics.rejected(ex.model, rej.reason)
    queue_ms = (ex.state.clock() - ex.arrived) * 1000.0 if rej.queued else None
    _emit(ex, EventType.REJECT, status=rej.status, reason=rej.reason, queue_ms=queue_ms)
    return _rejection(ex.state, rej)


def _rejection(state: GatewayState, rej: Rejected) -> web.Response:
    kind = "rate_limit_error" if rej.status == 429 else "service_unavailable"
    return error_response(
        rej.status,
        rej.message,
        kind=kind,
        code=rej.reason,
        headers={"Retry-After": str(state.settings.retry_after_s)},
    )


def _upstream_error(failure: _UpstreamFailed) -> web.Response:
    if failure.body and failure.body.lstrip().startswith(b'{"error"'):
        return web.Response(
            status=failure.status, body=failure.body, content_type="application/json"
        )
    status = failure.status if failure.status >= 500 else 502
    return error_response(status, failure.message, kind="upstream_error", code="upstream_error")


def _report_cancel(ex: _Exchange) -> None:
    ex.metrics.cancelled.inc()
    pod = ex.pod.url if ex.pod is not None else ""
    _emit(
        ex,
        EventType.CANCEL,
        pod=pod if ex.dispatched else None,
        reason="client_disconnect",
        e2e_ms=(ex.state.clock() - ex.arrived) * 1000.0,
    )


def _report_complete(ex: _Exchange) -> None:
    state = ex.state
    state.metrics.completed(ex.model, ex.status)
    e2e_ms = (state.clock() - ex.arrived) * 1000.0
    ttft_ms = (ex.first_at - ex.arrived) * 1000.0 if ex.first_at is not None else None
    tpot_ms = None
    tokens = ex.output_tokens
    if ttft_ms is not None and tokens is not None and tokens > 1:
        tpot_ms = (e2e_ms - ttft_ms) / (tokens - 1)
    _emit(
        ex,
        EventType.COMPLETE,
        pod=ex.pod.url if ex.pod is not None else None,
        status=ex.status,
        output_tokens=tokens,
        queue_ms=ex.queue_ms,
        ttft_ms=ttft_ms,
        tpot_ms=tpot_ms,
        e2e_ms=e2e_ms,
        reason=ex.reason,
    )
