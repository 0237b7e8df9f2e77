"""Forwarding a pod's SSE stream to the client, chunk by chunk, as it arrives.

`wait_with_keepalive` parks a streaming request in the queue while sending the client an SSE
comment (`: keep-alive`) every `keepalive_interval_s`, so proxies and clients do not time out
while capacity boots; the response head (200, `text/event-stream`) goes out with the first
comment, and from then on a failure reaches the client as an SSE error event (`end_with_error`)
instead of an HTTP status. SSE clients ignore comment lines (the openai client does).
`first_chunk` reads a stream (a `gateway.podlink.PodStream`) up to its first token (the end of
the retry window); `stream_back` sends it on. After the first write, each chunk is pushed from
the pod's socket callback straight to the client's socket (`_Relay.push`, `_ChunkWriter`): no
task switch per chunk. Back-pressure is kept: while the client's socket has not taken a chunk,
the pod's socket is not read (the pod's TCP window fills; vLLM's writer waits), so nothing piles
up here. The relay reads the usage chunk the gateway asked for (and strips it if the client did
not ask), counts chunks, sends the chunk with `[DONE]` together with the response's end, and
ends a stream that breaks mid-way with an SSE error event (docs/gateway.md, "Round five").
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
from gateway.podlink import PodStream
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


async def first_chunk(upstream: PodStream) -> bytes:
    """A 200 stream's bytes up to its first token; a stream that ends before counts as failed."""
    if upstream.status != 200:
        return b""
    read = upstream.readany
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
    upstream: PodStream,
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
    relay = _Relay(strip_usage)
    try:
        out = relay.take(first)
        if relay.done:
            await response.write_eof(out + relay.pending)  # the whole answer and the end
        else:
            await response.write(out)  # the head goes with it (`open_stream`)
        ex.metrics.added.observe(overhead + state.clock() - first_at)
        if not relay.done:
            try:
                last = await _relay_rest(request, response, upstream, relay)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _Broken(type(exc).__name__) from exc
            # The last chunk and the end in one write (after `[DONE]`, the pod's own end is
            # not waited for: the client has its whole answer).
            await response.write_eof(last + relay.pending)
        ex.done_sent = relay.done
    except _Broken as exc:
        ex.status, ex.reason = 502, "upstream_error_mid_stream"
        log.warning("stream %s broke mid-way: %r", ex.ticket.request_id, exc.__cause__)
        with contextlib.suppress(ConnectionResetError):
            await response.write(
                sse_error(f"the pod failed mid-stream ({exc.kind})", code="upstream_error")
            )
            await response.write_eof()
    except ConnectionResetError:
        # The client went away mid-stream: an ordinary end, not a server error to log
        # (one that hangs up after `[DONE]` has completed, not cancelled).
        ex.client_gone = True
    ex.metrics.chunks.inc(relay.events)
    # Without a usage chunk: count events, less `[DONE]` and a chat stream's role-only chunk.
    tokens = relay.tokens
    if tokens is None:
        tokens = max(0, relay.events - (2 if endpoint is Endpoint.CHAT else 1))
    ex.output_tokens = tokens
    return response


async def _relay_rest(
    request: web.Request, response: web.StreamResponse, upstream: PodStream, relay: _Relay
) -> bytes:
    """Send the stream on after its first write, up to what is left to send with its end:
    pushed from the pod's socket callback straight to the client's socket, or, for a client
    `_ChunkWriter` cannot write to (HTTP/1.0, compression), through aiohttp's `write`, which
    waits for the client's socket to drain."""
    direct = _ChunkWriter.of(request, response)
    if direct is not None:
        relay.writer, relay.upstream = direct, upstream
        try:
            await upstream.relay(relay.push)
        finally:
            relay.stop()
        if relay.gone is not None:
            raise relay.gone
        return relay.last
    while data := await upstream.readany():
        out = relay.take(data)
        if relay.done:
            return out
        if out:
            await response.write(out)
    return b""


class _Relay:
    """What a stream's bytes go through on their way to the client: framing on SSE event
    boundaries when a usage chunk is to be read or stripped, counting events, spotting
    `[DONE]`; and, pushed from the pod's socket callback (`push`), the write to the client's
    socket, pausing the pod's socket while the client's is full."""

    __slots__ = (
        "_strip",
        "_waking",
        "done",
        "events",
        "gone",
        "last",
        "pending",
        "tokens",
        "upstream",
        "writer",
    )

    def __init__(self, strip_usage: bool) -> None:
        self._strip = strip_usage
        self.pending = b""
        self.events = 0
        self.tokens: int | None = None
        self.done = False
        self.last = b""
        """What `push` kept of the chunk with `[DONE]`, to go out with the response's end."""
        self.gone: ConnectionResetError | None = None
        self.writer: _ChunkWriter | None = None
        self.upstream: PodStream | None = None
        self._waking: asyncio.Task[None] | None = None

    def take(self, data: bytes) -> bytes:
        """The part of `data` (after what was pending) to send now."""
        if self.pending or has_usage(data) or (self._strip and not data.endswith(b"\n\n")):
            # Frame on event boundaries so a usage chunk can be read (and stripped) whole;
            # whole events without one (nearly every read) go straight through.
            pending = self.pending + data
            cut = pending.rfind(b"\n\n")
            if cut < 0:
                self.pending = pending
                return b""
            out, self.pending = pending[: cut + 2], pending[cut + 2 :]
            if has_usage(out):
                out, seen = take_usage(out, strip=self._strip)
                if seen is not None:
                    self.tokens = seen
        else:
            out = data
        if out:
            self.events += out.count(b"data:")
            if _DONE in out:
                self.done = True
        return out

    def push(self, data: bytes) -> bool:
        """`PodStream.relay`'s sink: send a chunk on; True once `[DONE]` is out (or the client
        is gone)."""
        out = self.take(data)
        if self.done:
            self.last = out
            return True
        writer = self.writer
        assert writer is not None
        try:
            if out and writer.send(out):
                self._hold()
        except ConnectionResetError as exc:
            self.gone = exc
            return True
        return False

    def _hold(self) -> None:
        """The client's socket did not take it all: stop reading the pod until it drains."""
        if self._waking is None and self.upstream is not None and self.writer is not None:
            self.upstream.pause()
            self._waking = asyncio.ensure_future(self._wake(self.upstream, self.writer))

    async def _wake(self, upstream: PodStream, writer: _ChunkWriter) -> None:
        try:
            await writer.drain()
        except ConnectionResetError as exc:
            self.gone = exc
            upstream.interrupt()
            return
        finally:
            self._waking = None
        upstream.resume()

    def stop(self) -> None:
        if self._waking is not None:
            self._waking.cancel()
            self._waking = None


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
