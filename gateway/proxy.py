"""The request path: authenticate, validate, queue, dispatch, stream back, report.

One handler serves `/v1/chat/completions` and `/v1/completions`. A request gets its TTFT
deadline (`surgescale.slo.Slo` of its model, from the estimated prompt size), is admitted into its
model's queue (`enqueue` at once, even at zero pods), waits for a slot (`gateway.scheduler`; the
queue is ordered by deadline, `gateway.dispatch`; a waiting stream gets SSE keep-alives),
goes to the chosen pod (`dispatch`) and its answer is forwarded: a stream chunk by chunk as it
arrives (each `write` waits for the client's socket to drain, so a slow client slows its own
upstream read and nothing piles up), a plain response whole. A connect error, a 5xx or a stream
that dies before its first byte is retried on another pod; a break after the first byte ends the
stream with an SSE error event. A client that goes away cancels the upstream request (its
connection is closed, which aborts the request in vLLM), frees the slot and is reported as
`cancel`. The event accounting rules are in `gateway.reporting`.

Forwarding a stream is `gateway.streaming`; ops endpoints (`/healthz`, `/readyz`, `/metrics`,
`/v1/models`) live in `gateway.ops`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from gateway.admission import Pod, Ticket, TicketState
from gateway.exchange import Exchange, UpstreamFailed, emit
from gateway.openai_api import (
    Endpoint,
    InvalidRequest,
    ParsedRequest,
    check_bounds,
    error_response,
    invalid_response,
    parse_request,
    usage_tokens,
    with_usage_requested,
)
from gateway.podlink import PodStream
from gateway.scheduler import Rejected
from gateway.state import STATE, GatewayState
from gateway.streaming import end_with_error, first_chunk, stream_back, wait_with_keepalive
from gateway.telemetry import inject as inject_trace
from surgescale.events import EventType

log = logging.getLogger(__name__)

_RETRYABLE = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
"""Failures before the first byte that another pod may not have (refused, reset, closed)."""


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
        body = await _read_body(
            request, state.settings.max_body_bytes, timeout=state.settings.body_timeout_s
        )
        parsed = parse_request(body, endpoint)
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
    max_n, max_output_tokens = state.settings.limits_for(model)
    try:
        check_bounds(parsed, max_n=max_n, max_output_tokens=max_output_tokens)
    except InvalidRequest as exc:
        return invalid_response(exc)
    budget = state.scheduler.objective(model).ttft_budget(parsed.prompt_tokens)
    ticket = Ticket(
        request_id=state.next_request_id(),
        tenant=tenant,
        arrived=arrived,
        deadline=arrived + budget,
        stream=parsed.stream,
        prompt_tokens=parsed.prompt_tokens,
    )
    ex = Exchange(state=state, model=model, ticket=ticket, metrics=state.metrics.model(model))
    try:
        state.scheduler.admit(model, ticket)
    except Rejected as rej:
        return _reject(ex, rej)
    ex.admitted_at = state.clock()
    ex.metrics.admitted.inc()
    emit(
        ex,
        EventType.ENQUEUE,
        prompt_tokens=parsed.prompt_tokens,
        api_key=tenant or None,
        deadline_ms=budget * 1000.0,
        soon=True,
    )
    try:
        ex.pod = await _wait_for_slot(request, ex, stream=parsed.stream)
    except Rejected as rej:
        return await _answer(ex, _reject(ex, rej))
    except (asyncio.CancelledError, ConnectionResetError):
        _report_cancel(ex)
        raise
    ex.slot_at = state.clock()
    queue_s = ex.slot_at - ex.admitted_at
    ex.metrics.queue_wait.observe(queue_s)
    ex.queue_ms = (ex.slot_at - arrived) * 1000.0
    emit(ex, EventType.DISPATCH, pod=ex.pod.url, queue_ms=ex.queue_ms, soon=True)
    ex.dispatched = True
    try:
        response = await _answer(ex, await _forward(request, ex, parsed, endpoint))
    except (asyncio.CancelledError, ConnectionResetError):
        state.scheduler.finish(model, ticket)
        if ex.done_sent:
            _report_complete(ex)  # the client hung up after the whole answer
        else:
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
    if ex.client_gone and not ex.done_sent:
        _report_cancel(ex)
    else:
        _report_complete(ex)
    return response


async def _wait_for_slot(request: web.Request, ex: Exchange, *, stream: bool) -> Pod:
    """The pod slot of an admitted request; a queued stream gets keep-alive comments meanwhile."""
    scheduler = ex.state.scheduler
    interval = ex.state.settings.keepalive_interval_s
    wait = scheduler.wait(ex.model, ex.ticket)
    if not stream or interval <= 0 or ex.ticket.state is TicketState.ASSIGNED:
        return await wait
    return await wait_with_keepalive(request, ex, wait, interval_s=interval)


async def _answer(ex: Exchange, response: web.StreamResponse) -> web.StreamResponse:
    """`response`, or, once keep-alives started the client's stream, it as an SSE error event."""
    if ex.response is None or response is ex.response:
        return response
    assert isinstance(response, web.Response)
    return await end_with_error(ex.response, response)


async def _read_body(request: web.Request, limit: int, *, timeout: float) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise InvalidRequest(
            f"request body of {length} bytes exceeds the limit of {limit}", status=413
        )
    try:
        if request.content.is_eof():  # all in already (nearly every request): no timer needed
            return await request.read()
        async with asyncio.timeout(timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise InvalidRequest(
            f"request body exceeds the limit of {limit} bytes", status=413
        ) from None
    except web.RequestPayloadError as exc:  # e.g. a Content-Encoding that does not decode
        raise InvalidRequest(f"the request body could not be read: {exc}") from None
    except TimeoutError:
        raise InvalidRequest(
            f"the request body did not arrive within {timeout:g}s",
            status=408,
            code="request_timeout",
        ) from None


async def _forward(
    request: web.Request, ex: Exchange, parsed: ParsedRequest, endpoint: Endpoint
) -> web.StreamResponse:
    """Send to the pod (retrying on another before the first byte); answer the client."""
    state = ex.state
    settings = state.settings
    session, links = state.session, state.links
    assert session is not None
    assert links is not None
    strip_usage = parsed.stream and settings.request_usage and not parsed.client_wants_usage
    body = with_usage_requested(parsed.payload) if strip_usage else parsed.raw
    headers = {"Content-Type": "application/json", "X-Request-Id": ex.ticket.request_id}
    if settings.upstream_api_key is not None:
        headers["Authorization"] = "Bearer " + settings.upstream_api_key.get_secret_value()
    inject_trace(headers)  # W3C traceparent of a traced request (gateway.telemetry)
    while True:
        pod = ex.pod
        assert pod is not None
        sent_at = state.clock()
        upstream: PodStream | aiohttp.ClientResponse
        try:
            async with asyncio.timeout(settings.first_byte_timeout_s):
                if parsed.stream:  # relayed chunk by chunk: the gateway's own connections
                    upstream = await links.post(pod.url + endpoint.value, body, headers)
                else:
                    upstream = await session.post(
                        pod.url + endpoint.value, data=body, headers=headers
                    )
                try:
                    if upstream.status >= 500:
                        detail = await upstream.read()
                        raise UpstreamFailed(
                            upstream.status, f"pod answered {upstream.status}", detail
                        )
                    first = await first_chunk(upstream) if isinstance(upstream, PodStream) else b""
                except BaseException:
                    upstream.close()
                    raise
        except (UpstreamFailed, *_RETRYABLE) as exc:
            failure = (
                exc
                if isinstance(exc, UpstreamFailed)
                else UpstreamFailed(502, f"pod unreachable: {type(exc).__name__}")
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
        if isinstance(upstream, PodStream) and upstream.status == 200:
            return await stream_back(
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
        if isinstance(upstream, PodStream) and ex.done_sent:
            upstream.close(finish_s=_FINISH_S)  # keep the connection if the pod's end follows
        else:
            upstream.close()


_FINISH_S = 1.0
"""How long a stream whose `[DONE]` went out may take to end at the pod, its connection kept."""


def _reject(ex: Exchange, rej: Rejected) -> web.Response:
    ex.state.metrics.rejected(ex.model, rej.reason)
    queue_ms = (ex.state.clock() - ex.arrived) * 1000.0 if rej.queued else None
    emit(ex, EventType.REJECT, status=rej.status, reason=rej.reason, queue_ms=queue_ms)
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


def _upstream_error(failure: UpstreamFailed) -> web.Response:
    if failure.body and failure.body.lstrip().startswith(b'{"error"'):
        return web.Response(
            status=failure.status, body=failure.body, content_type="application/json"
        )
    status = failure.status if failure.status >= 500 else 502
    return error_response(status, failure.message, kind="upstream_error", code="upstream_error")


def _report_cancel(ex: Exchange) -> None:
    ex.metrics.cancelled.inc()
    pod = ex.pod.url if ex.pod is not None else ""
    emit(
        ex,
        EventType.CANCEL,
        pod=pod if ex.dispatched else None,
        reason="client_disconnect",
        e2e_ms=(ex.state.clock() - ex.arrived) * 1000.0,
    )


def _report_complete(ex: Exchange) -> None:
    state = ex.state
    state.metrics.completed(ex.model, ex.status)
    e2e_ms = (state.clock() - ex.arrived) * 1000.0
    ttft_ms = (ex.first_at - ex.arrived) * 1000.0 if ex.first_at is not None else None
    tpot_ms = None
    tokens = ex.output_tokens
    if ttft_ms is not None and tokens is not None and tokens > 1:
        tpot_ms = (e2e_ms - ttft_ms) / (tokens - 1)
    emit(
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
