"""Forwarding a pod's SSE stream to the client, chunk by chunk, as it arrives.

`wait_with_keepalive` parks a streaming request in the queue while sending the client an SSE
comment (`: keep-alive`) every `keepalive_interval_s`, so proxies and clients do not time out
while capacity boots; the response head (200, `text/event-stream`) goes out with the first
comment, and from then on a failure reaches the client as an SSE error event (`end_with_error`)
instead of an HTTP status. SSE clients ignore comment lines (the openai client does).
`first_chunk` reads a stream up to its first token (the end of the retry window);
`stream_back` sends it on: each `write` waits for the client's socket to drain, so a slow client
slows its own upstream read (aiohttp stops reading a full buffer) and nothing piles up here. It
reads the usage chunk the gateway asked for (and strips it if the client did not ask), counts
chunks, and ends a stream that breaks mid-way with an SSE error event. Per chunk it costs one
read and one socket write: chunks after the first go to the socket directly (`_ChunkWriter`),
and the pod's idle timeout is one lazy timer per stream (`_IdleWatch`), not aiohttp's timer
re-armed on every read (docs/gateway.md, "Round four").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

import aiohttp
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from gateway.admission import Pod
from gateway.exchange import Exchange, UpstreamFailed, emit
from gateway.openai_api import (
    Endpoint,
    error_body,
    has_output,
    has_usage,
    sse_error,
    take_usage,
)
from surgescale.events import EventType

log = logging.getLogger(__name__)


KEEPALIVE = b": keep-alive\n\n"
"""An SSE comment: ignored by clients, but traffic for every proxy and timer on the way."""


async def wait_with_keepalive(
    request: web.Request, ex: Exchange, wait: Awaitable[Pod], *, interval_s: float
) -> Pod:
    """Await `wait` (a slot), writing `KEEPALIVE` every `interval_s` until it is done.

    The first comment prepares the response (`ex.response`). If the handler is cancelled or the
    client is gone (ConnectionResetError), the wait is cancelled too, so the ticket leaves the
    queue (or gives back a slot it got in the same tick) before the error propagates.
    """
    task = asyncio.ensure_future(wait)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval_s)
            if done:
                return task.result()
            if ex.response is None:
                ex.response = await open_stream(request, ex, "text/event-stream")
            await ex.response.write(KEEPALIVE)
    except BaseException:
        task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.shield(task)
        if task.done() and not task.cancelled() and task.exception() is None:
            ex.state.scheduler.finish(ex.model, ex.ticket)  # got a slot in the same tick
        raise


class _HeadWithFirstWrite(web.StreamResponse):
    """A stream response whose head goes out with its first write: one write to the socket
    instead of two (aiohttp holds the head of a response that does not send it at `prepare`).
    Every caller of `open_stream` writes at once (a keep-alive, the first chunk, an error)."""

    _send_headers_immediately = False


async def open_stream(request: web.Request, ex: Exchange, content_type: str) -> web.StreamResponse:
    """Start a 200 event stream to the client (its head leaves with the first write)."""
    response = _HeadWithFirstWrite(
        status=200,
        headers={
            "Content-Type": content_type,
            "Cache-Control": "no-cache",
            "X-Request-Id": ex.ticket.request_id,
        },
    )
    await response.prepare(request)
    return response


async def end_with_error(response: web.StreamResponse, error: web.Response) -> web.StreamResponse:
    """End an already-started stream with `error` (an OpenAI-style error) as an SSE event."""
    body = error.body if isinstance(error.body, bytes) else b""
    if not body.lstrip().startswith(b'{"error"'):
        body = error_body(
            f"the request failed with status {error.status}", kind="api_error", code=None
        )
    with contextlib.suppress(ConnectionResetError):
        await response.write(b"data: " + body + b"\n\n")
        await response.write_eof()
    return response


async def first_chunk(upstream: aiohttp.ClientResponse) -> bytes:
    """A 200 stream's bytes up to its first token; a stream that ends before counts as failed."""
    if upstream.status != 200:
        return b""
    read = upstream.content.readany
    data = await read()
    while not has_output(data):
        more = await read()
        if not more:
            raise UpstreamFailed(502, "the pod closed the stream before the first token")
        data += more
    return data


async def stream_back(
    request: web.Request,
    ex: Exchange,
    upstream: aiohttp.ClientResponse,
    first: bytes,
    *,
    strip_usage: bool,
    endpoint: Endpoint,
    overhead: float,
) -> web.StreamResponse:
    """Forward a stream; `overhead` is the gateway's time before the send, queueing excluded.

    The response is `ex.response` if keep-alives already started it, else a new one."""
    state = ex.state
    ex.first_at = first_at = state.clock()
    state.scheduler.first_token(ex.model, ex.ticket)  # ends its prefill (the gate opens)
    ttft_s = first_at - ex.arrived
    ex.metrics.ttft.observe(ttft_s)
    emit(
        ex,
        EventType.FIRST_TOKEN,
        pod=ex.pod.url if ex.pod else None,
        ttft_ms=ttft_s * 1000.0,
        deadline_met=first_at <= ex.ticket.deadline,
        soon=True,
    )
    response = ex.response
    if response is None:
        content_type = upstream.headers.get("Content-Type", "text/event-stream")
        response = ex.response = await open_stream(request, ex, content_type)
    events = 0
    tokens: int | None = None
    pending = b""
    readany = upstream.content.readany
    direct = _ChunkWriter.of(request, response)
    idle = _IdleWatch(upstream, state.settings.idle_timeout_s)
    time = idle.time
    data = first
    try:
        while data:
            if pending or has_usage(data) or (strip_usage and not data.endswith(b"\n\n")):
                # Frame on event boundaries so a usage chunk can be read (and stripped) whole;
                # whole events without one (nearly every read) go straight through.
                pending += data
                cut = pending.rfind(b"\n\n")
                if cut < 0:
                    out = b""
                else:
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
                done = _DONE in out
                if done and not pending:
                    await response.write_eof(out)  # the last chunk and the end in one write
                elif first_write or direct is None:
                    await response.write(out)  # the head goes with it (`open_stream`)
                elif direct.send(out):  # no coroutine per chunk unless the socket is full
                    await direct.drain()
                if first_write:
                    ex.metrics.added.observe(overhead + state.clock() - first_at)
                if done:
                    # The client has its whole answer; do not wait for the upstream's close
                    # (a client that hangs up now has completed, not cancelled).
                    ex.done_sent = True
                    break
            # The read inline, not in a helper coroutine: one frame less per chunk.
            idle.since = time()
            try:
                data = await readany()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _Broken(type(exc).__name__) from exc
            idle.since = 0.0
        if pending:
            await response.write(pending)
    except _Broken as exc:
        ex.status, ex.reason = 502, "upstream_error_mid_stream"
        log.warning("stream %s broke mid-way: %r", ex.ticket.request_id, exc.__cause__)
        with contextlib.suppress(ConnectionResetError):
            await response.write(
                sse_error(f"the pod failed mid-stream ({exc.kind})", code="upstream_error")
            )
    except ConnectionResetError:
        # The client went away mid-stream: an ordinary end, not a server error to log.
        ex.client_gone = True
        ex.metrics.chunks.inc(events)
        return response
    finally:
        idle.stop()
    ex.metrics.chunks.inc(events)
    # Without a usage chunk: count events, less `[DONE]` and a chat stream's role-only chunk.
    if tokens is None:
        tokens = max(0, events - (2 if endpoint is Endpoint.CHAT else 1))
    ex.output_tokens = tokens
    with contextlib.suppress(ConnectionResetError):  # all was sent; only the terminator was lost
        await response.write_eof()
    return response


_DONE = b"data: [DONE]"


class _Broken(Exception):
    """The upstream stream failed after its first byte."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _ChunkWriter:
    """Writes a chunk of an answer whose head is out straight to the client's socket, in
    HTTP/1.1 chunked framing, as aiohttp's `StreamResponse.write` would (same bytes), without
    its two coroutine layers and framing helpers.

    Public aiohttp API only: the request's transport and writer. Back-pressure is kept: when the
    socket did not take everything, `writer.drain()` waits while the transport is paused (it
    returns at once otherwise), as aiohttp's own write does every 64 KiB. A closed client
    connection raises `ConnectionResetError`, as aiohttp's write does."""

    __slots__ = ("_transport", "_writer")

    def __init__(self, transport: asyncio.Transport, writer: AbstractStreamWriter) -> None:
        self._transport = transport
        self._writer = writer

    @classmethod
    def of(cls, request: web.Request, response: web.StreamResponse) -> _ChunkWriter | None:
        """The direct writer of `response`, or None when it is not chunked (an HTTP/1.0
        client) or has no transport: then every chunk goes through `response.write`."""
        transport = request.transport
        chunked = response.headers.get(hdrs.TRANSFER_ENCODING) == "chunked"  # set at prepare
        if transport is None or not chunked or response.compression:
            return None
        return cls(transport, request.writer)

    def send(self, data: bytes) -> bool:
        """Write one chunk; True if the socket did not take it all (then `drain`)."""
        transport = self._transport
        if transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        return bool(transport.get_write_buffer_size())

    async def drain(self) -> None:
        """Wait while the transport is paused (above its high-water mark); else return."""
        await self._writer.drain()


class _IdleWatch:
    """The pod's idle timeout (`idle_timeout_s`, aiohttp's `sock_read`) while a stream is
    relayed, with one loop timer per stream instead of one per read.

    aiohttp cancels and re-arms a loop timer on every read from the upstream socket (about
    2 us of a chunk's ~25 us); after the first chunk the relay turns that off for this response
    and arms this timer once. `since` is when the relay's pending read began (0 while it is
    writing: a slow client's backpressure is not the pod's silence, as aiohttp's timer stops
    while reading is paused); when the timer fires it fails the read that has waited
    `timeout_s`, else re-arms itself for the pending read's deadline (or a full period). The
    failure is aiohttp's own (`SocketTimeoutError` on the response body), so the relay ends
    the stream as before: an SSE error, status 502 `upstream_error_mid_stream`.
    """

    __slots__ = ("_content", "_handle", "_loop", "_timeout", "since", "time")

    def __init__(self, upstream: aiohttp.ClientResponse, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._timeout = timeout_s
        self._content = upstream.content
        self.time = loop.time
        self.since = 0.0
        connection = upstream.connection
        protocol = connection.protocol if connection is not None else None
        if protocol is not None:  # reset by aiohttp for the connection's next request
            protocol.read_timeout = None
        self._handle: asyncio.TimerHandle | None = loop.call_later(timeout_s, self._check)

    def _check(self) -> None:
        since = self.since
        now = self._loop.time()
        if since and now - since >= self._timeout:
            self._handle = None
            self._content.set_exception(
                aiohttp.SocketTimeoutError("Timeout on reading data from socket")
            )
            return
        at = since + self._timeout if since else now + self._timeout
        self._handle = self._loop.call_at(at, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
