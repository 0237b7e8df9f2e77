"""Streamed completions to pods over the gateway's own keep-alive HTTP/1.1 connections.

Why not aiohttp's client here: relaying a stream through it costs, per chunk, its response
protocol's Python layers, a `StreamReader`, a future and a task switch before the relay sees
the bytes; a plain aiohttp proxy relays ~25,000 chunks/s per core on the 2-vCPU VM where the
same bytes pushed from the socket callback to the client's socket go at ~47,000 (docs/gateway.md,
"Round five"). So streamed requests take this path: the pod's socket feeds `httptools` (the C
HTTP parser uvicorn uses) and its body callback hands each decoded chunk to the relay's sink in
the same loop callback — one receive, one send, no task switch per chunk. Plain requests and
health checks stay on aiohttp.

`PodLinks` keeps idle connections per pod (plain HTTP, or TLS verified against the system's
trust store), reused while the pod keeps them open and closed after `keepalive_s` idle; `post` sends a request and returns a `PodStream` once the response head is
in. A `PodStream` is read by pulling (`readany`, `read`: the first chunk, an error body) and then,
for the rest of a stream, by pushing (`relay`). Failures are aiohttp's exception types, so the
proxy's retry rules apply unchanged: a refused or dropped connection before the head is a
`ClientConnectionError` (retried on another pod), a body that breaks is a `ClientPayloadError`,
a pod silent for `idle_timeout_s` while a read waits is a `SocketTimeoutError`. `close` before
the end closes the connection (vLLM aborts a request whose client is gone); after a clean end it
returns the connection to its pod's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, cast

import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

Sink = Callable[[bytes], bool]
"""The relay's callback: one decoded chunk of the body; True to stop (the client has its end)."""


def _drop(data: bytes) -> bool:
    """The sink of a body read to its end only to keep the connection."""
    return False


def _settle(future: asyncio.Future[None] | None) -> None:
    """Wake whoever awaits `future` (if anyone still does)."""
    if future is not None and not future.done():
        future.set_result(None)


class PodLinks:
    """Idle keep-alive connections per pod, and the requests sent over them."""

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        idle_timeout_s: float,
        keepalive_s: float = 60.0,
        max_idle_per_pod: int = 512,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`tls`: the context for `https` pods (default: the system's trust store, verified)."""
        self._connect_timeout = connect_timeout_s
        self._idle_timeout = idle_timeout_s
        self._keepalive = keepalive_s
        self._max_idle = max_idle_per_pod
        self._idle: dict[tuple[str, str, int], deque[_Link]] = {}
        self._closed = False
        self._tls = tls

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PodStream:
        """POST `body` to `url` (`http://host:port/path`); the response once its head is in.

        A reused connection the pod closed meanwhile (it sent not a byte back) is replaced by a
        new one once, as the pod never read the request; any other failure is raised."""
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or parsed.host is None or parsed.port is None:
            raise aiohttp.InvalidURL(url)
        key = (parsed.scheme, parsed.host, parsed.port)
        head = _request_head(parsed, body, headers)
        link = self._take(key)
        if link is not None:
            try:
                return await link.send(head, body)
            except aiohttp.ServerDisconnectedError:
                if link.answered:
                    raise
        link = await self._connect(key)
        return await link.send(head, body)

    def close(self) -> None:
        """Close every idle connection; later requests are refused."""
        self._closed = True
        for links in self._idle.values():
            for link in links:
                link.abort()
        self._idle.clear()

    def idle(self) -> int:
        """How many idle connections are kept (all pods)."""
        return sum(len(links) for links in self._idle.values())

    def _take(self, key: tuple[str, str, int]) -> _Link | None:
        links = self._idle.get(key)
        if not links:
            return None
        oldest_kept = time.monotonic() - self._keepalive
        while links:
            link = links.pop()  # the most recent: the likeliest to be open still
            if link.usable() and link.idle_since >= oldest_kept:
                return link
            link.abort()
        return None

    async def _connect(self, key: tuple[str, str, int]) -> _Link:
        if self._closed:
            raise aiohttp.ClientConnectionError("the gateway's pod connections are closed")
        scheme, host, port = key
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, link = await loop.create_connection(
                    lambda: _Link(self, key, self._idle_timeout), host, port, ssl=tls
                )
        except TimeoutError:
            raise aiohttp.ConnectionTimeoutError(
                f"connecting to {host}:{port} took over {self._connect_timeout:g}s"
            ) from None
        except OSError as exc:  # ssl.SSLError included
            raise aiohttp.ClientOSError(exc.errno, f"{host}:{port}: {exc}") from exc
        return link

    def _release(self, link: _Link) -> None:
        """Keep a link whose response ended cleanly for the pod's next request."""
        links = self._idle.setdefault(link.key, deque())
        if self._closed or len(links) >= self._max_idle:
            link.abort()
            return
        link.idle_since = time.monotonic()
        links.append(link)

    def _forget(self, link: _Link) -> None:
        links = self._idle.get(link.key)
        if links:
            with contextlib.suppress(ValueError):
                links.remove(link)


def _request_head(url: URL, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [f"POST {url.raw_path_qs} HTTP/1.1", f"Host: {url.raw_authority}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Link(asyncio.Protocol):
    """One connection to a pod, carrying one response at a time (`stream`)."""

    def __init__(self, pool: PodLinks, key: tuple[str, str, int], idle_timeout_s: float) -> None:
        self.pool = pool
        self.key = key
        self.idle_timeout = idle_timeout_s
        self.idle_since = 0.0
        self.transport: asyncio.Transport | None = None
        self.stream: PodStream | None = None
        self.answered = False
        """A byte of the current response has arrived (a failure is then not a stale link)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def send(self, head: bytes, body: bytes) -> PodStream:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise aiohttp.ServerDisconnectedError()
        self.answered = False
        stream = self.stream = PodStream(self)
        transport.writelines((head, body))
        try:
            await stream.head_in()
        except BaseException:
            stream.close()
            raise
        return stream

    def data_received(self, data: bytes) -> None:
        stream = self.stream
        if stream is None:  # nothing was asked: a confused pod
            self.abort()
            return
        self.answered = True
        stream.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._forget(self)
        stream = self.stream
        if stream is not None:
            stream.lost(exc)

    def done(self, stream: PodStream, *, reusable: bool) -> None:
        """The current response is over; keep the connection if it ended cleanly."""
        if self.stream is not stream:
            return
        self.stream = None
        if reusable and self.usable():
            self.pool._release(self)
        else:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class PodStream:
    """One response from a pod: its status and headers, then its body pulled or pushed."""

    __slots__ = (
        "_body",
        "_complete",
        "_error",
        "_head",
        "_headers",
        "_idle",
        "_keep",
        "_link",
        "_loop",
        "_parser",
        "_raw_headers",
        "_since",
        "_sink",
        "_waiter",
        "status",
    )

    def __init__(self, link: _Link) -> None:
        self._link: _Link | None = link
        self._loop = asyncio.get_running_loop()
        self._parser: Any = httptools.HttpResponseParser(self)
        self._raw_headers: list[tuple[str, str]] = []
        self._headers: CIMultiDictProxy[str] | None = None
        self._head: asyncio.Future[None] | None = self._loop.create_future()
        self._body: list[bytes] = []
        self._complete = False
        self._keep = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        """What `readany` or `relay` awaits: data, the end, a failure, or the sink's stop."""
        self._sink: Sink | None = None
        self._since = 0.0
        self._idle: asyncio.TimerHandle | None = None
        self.status = 0

    # -- what the proxy reads
    @property
    def headers(self) -> CIMultiDictProxy[str]:
        if self._headers is None:
            self._headers = CIMultiDictProxy(CIMultiDict(self._raw_headers))
        return self._headers

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "application/octet-stream").split(";")[0].strip()

    async def head_in(self) -> None:
        if self._head is not None:
            await self._head
        if self._error is not None and not self.status:
            raise self._error

    async def readany(self) -> bytes:
        """The body received since the last read (waiting for some); b"" at its end."""
        while not self._body:
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            await self._wait()
        data = b"".join(self._body) if len(self._body) > 1 else self._body[0]
        self._body.clear()
        return data

    async def read(self) -> bytes:
        """The whole remaining body."""
        parts = []
        while data := await self.readany():
            parts.append(data)
        return b"".join(parts)

    async def relay(self, sink: Sink) -> None:
        """Push the rest of the body to `sink`, chunk by chunk, from the socket's callback;
        return at its end or once `sink` returns True; raise if the body breaks.

        The sink may `pause` this stream (its client's socket is full) and `resume` it."""
        if self._body:
            data = b"".join(self._body)
            self._body.clear()
            if sink(data):
                return
        if self._error is not None:
            raise self._error
        if self._complete:
            return
        self._sink = sink
        try:
            await self._wait()
        finally:
            self._sink = None
        if self._error is not None:
            raise self._error

    async def _wait(self) -> None:
        """Until `_waiter` is settled, the idle timer counting from now."""
        self._waiter = self._loop.create_future()
        self._since = self._loop.time()
        self._watch()
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._since = 0.0

    def interrupt(self) -> None:
        """End a `relay` now (its sink's client is gone)."""
        self._sink = None
        _settle(self._waiter)

    def pause(self) -> None:
        """Stop reading the pod's socket (the idle timer stops too)."""
        self._since = 0.0
        if self._link is not None:
            self._link.pause()

    def resume(self) -> None:
        if self._sink is not None:
            self._since = self._loop.time()
        if self._link is not None:
            self._link.resume()

    def close(self, *, finish_s: float = 0.0) -> None:
        """Done with this response: the connection goes back to the pool if the body ended
        cleanly, else it is closed (the pod sees its client gone).

        With `finish_s`, a body not yet ended is read (and dropped) for up to that long
        first: a stream whose `[DONE]` is relayed keeps its connection when the pod's end of
        the body follows in the next packet, instead of costing the pod a new connection."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        link = self._link
        if link is None:
            return
        if finish_s > 0 and not self._complete and self._error is None and self.status:
            self._sink = _drop
            self._idle = self._loop.call_later(finish_s, self.close)
            link.resume()
            return
        self._link = None
        reusable = self._complete and self._error is None and self._keep
        link.done(self, reusable=reusable)

    # -- fed by the link
    def feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(aiohttp.ClientPayloadError("the pod switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(aiohttp.ClientPayloadError(f"malformed response from the pod: {exc}"))

    def lost(self, exc: Exception | None) -> None:
        if self._complete:
            return
        if self._head is not None:
            failure: BaseException = aiohttp.ServerDisconnectedError(
                f"the pod closed the connection before answering ({exc or 'EOF'})"
            )
        else:
            failure = aiohttp.ClientPayloadError(
                f"the pod closed the connection mid-answer ({exc or 'EOF'})"
            )
        self._fail(failure, close=False)

    def _fail(self, exc: BaseException, *, close: bool = True) -> None:
        if self._error is None and not self._complete:
            self._error = exc
        self._wake()
        if close and self._link is not None:
            self._link.abort()

    def _wake(self) -> None:
        head, self._head = self._head, None
        _settle(head)
        _settle(self._waiter)

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        head, self._head = self._head, None
        _settle(head)

    def on_body(self, body: bytes) -> None:
        sink = self._sink
        if sink is None:
            self._body.append(body)
            _settle(self._waiter)
            return
        if self._since:
            self._since = self._loop.time()
        if sink(body):
            self._sink = None
            _settle(self._waiter)

    def on_message_complete(self) -> None:
        self._complete = True
        self._keep = self._parser.should_keep_alive()  # reset once this callback returns
        if self._sink is _drop:  # the end a `close(finish_s=...)` waited for
            self._sink = None
            self.close()
            return
        self._wake()

    # -- the idle timeout: one timer per stream, re-armed lazily
    def _watch(self) -> None:
        """Arm the timer (if it is not) for the wait that began at `_since`."""
        if self._idle is None and self._link is not None:
            self._idle = self._loop.call_at(self._since + self._link.idle_timeout, self._check)

    def _check(self) -> None:
        self._idle = None
        link = self._link
        if link is None or self._complete or self._error is not None:
            return
        since, now = self._since, self._loop.time()
        if since and now - since >= link.idle_timeout:
            self._fail(aiohttp.SocketTimeoutError("Timeout on reading data from socket"))
            return
        at = since + link.idle_timeout if since else now + link.idle_timeout
        self._idle = self._loop.call_at(at, self._check)
