"""Client connections: a cap on how many are open, and OpenAI-shaped JSON for every HTTP error.

What aiohttp already gives is used as is: `keepalive_timeout` closes a connection that has not
sent a complete request head within that long of opening or of its last response (which sheds
idle and slow-header "slowloris" connections alike), `max_line_size`/`max_field_size` bound the
head, `client_max_size` the body (all set by `gateway.app`). Two things it does not give live
here:

- `listen()` opens the listening socket with a protocol factory that refuses connections beyond
  `max_connections` (a 503 and close, before any byte is read), so a flood cannot exhaust the
  process's file descriptors; it is checked at accept time, so a burst accepted in one loop
  iteration may overshoot by that burst.
- `OpenAIErrorHandler`, aiohttp's request handler with one method changed: the errors the HTTP
  layer answers by itself (a malformed request line or header, an unhandled exception) come out
  as `{"error": {...}}` JSON like every other error, never as text or a traceback. Errors the
  router raises (404, 405) are turned into the same shape by the `openai_errors` middleware
  (under any runner) and, under `listen()`, also those raised before middlewares run (an unknown
  `Expect` header: 417).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.openai_api import status_error_body

log = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


@web.middleware
async def openai_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Give the router's and aiohttp's HTTP exceptions (404, 405, 413, ...) an OpenAI body."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _as_json(request, exc)


def _as_json(request: web.BaseRequest, exc: web.HTTPException) -> web.Response:
    message = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else ""
    headers = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
    return web.Response(
        status=exc.status,
        body=status_error_body(
            exc.status, message or f"{exc.reason or _phrase(exc.status)} ({request.path})"
        ),
        content_type="application/json",
        headers=headers,
    )


_ServerHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def _json_http_errors(inner: _ServerHandler) -> _ServerHandler:
    """The application's entry, with HTTP exceptions raised before its middlewares run (an
    unknown `Expect` on a path with no route) answered as OpenAI-shaped JSON too."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await inner(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _as_json(request, exc)

    return handle


_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


class OpenAIErrorHandler(RequestHandler):
    """aiohttp's connection handler, answering its own errors with OpenAI-shaped JSON."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
            text = "the gateway failed to handle the request"
        else:
            log.debug("bad request from %s: %s", request.remote, message)
            text = f"{_phrase(status)}: {message}" if message else _phrase(status)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent; cannot send an error")
        resp = web.Response(
            status=status, body=status_error_body(status, text), content_type="application/json"
        )
        resp.force_close()
        return resp


def _refusal() -> bytes:
    body = status_error_body(503, "too many open connections to this gateway; retry later")
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class _Refuse(asyncio.Protocol):
    """Answers 503 at once and closes (the connection is over the cap)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSAL)
        transport.close()


_REFUSAL = _refusal()


class CappedFactory:
    """Protocol factory over an aiohttp `Server`: its handlers up to `limit`, then refusals."""

    def __init__(self, server: web.Server, *, limit: int) -> None:
        self.server = server
        self.limit = limit
        self.refused = 0
        """Connections refused for being over the cap."""

    def __call__(self) -> asyncio.Protocol:
        server = self.server
        if len(server.connections) >= self.limit:
            self.refused += 1
            return _Refuse()
        # The same construction `Server.__call__` does, with our handler class.
        return OpenAIErrorHandler(server, loop=server._loop, **server._kwargs)


async def listen(
    runner: web.AppRunner,
    *,
    host: str,
    port: int,
    max_connections: int,
    reuse_port: bool,
    backlog: int,
) -> tuple[asyncio.Server, CappedFactory]:
    """Listen on host:port for `runner` (after `setup()`); close the server before cleanup."""
    assert runner.server is not None, "call runner.setup() first"
    runner.server.request_handler = _json_http_errors(runner.server.request_handler)
    factory = CappedFactory(runner.server, limit=max_connections)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory, host, port, backlog=backlog, reuse_address=True, reuse_port=reuse_port or None
    )
    return server, factory
