"""A recording proxy in front of the simulated API server: who wrote what, when, and with what
answer; and a place to inject API trouble (a 429 with `Retry-After`).

Each controller gets a kubeconfig pointing at a listener of its own (`RecordingProxy.listen`), so
every request is attributed to one identity without trusting anything the controller says about
itself. Requests are forwarded unchanged to the API server and answers streamed back unchanged
(watches included). Every mutating request (POST, PUT, PATCH, DELETE) is recorded as a `Write`
with the bench's monotonic time of the answer, the path, the status and, for small JSON bodies,
the body sent. `inject` arms a canned answer for the next matching writes of one identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

log = logging.getLogger(__name__)

_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "host",
    "upgrade",
}
_MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Write:
    """One mutating request as the API server answered it."""

    at: float
    """time.monotonic() when the answer came back (or the injected answer was sent)."""
    sent_at: float
    identity: str
    method: str
    path: str
    status: int
    body: Any = None
    injected: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def is_scale(self) -> bool:
        return self.path.endswith("/scale")

    @property
    def is_lease(self) -> bool:
        return "/leases" in self.path

    @property
    def is_status(self) -> bool:
        return self.path.endswith("/status")

    @property
    def replicas(self) -> int | None:
        if not isinstance(self.body, dict):
            return None
        value = (self.body.get("spec") or {}).get("replicas")
        return int(value) if isinstance(value, int) else None

    @property
    def lease_holder(self) -> str | None:
        if not isinstance(self.body, dict):
            return None
        holder = (self.body.get("spec") or {}).get("holderIdentity")
        return str(holder) if holder is not None else None


@dataclass(slots=True)
class Injection:
    """Answer the next `count` writes of `identity` whose path matches with `status`."""

    identity: str
    match: Callable[[str, str], bool]
    status: int
    headers: dict[str, str]
    count: int
    hits: list[float] = field(default_factory=list)


class RecordingProxy:
    """Listeners (one per identity) forwarding to `upstream` and recording writes."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.writes: list[Write] = []
        self.injections: list[Injection] = []
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None

    async def listen(self, identity: str) -> str:
        """Start a listener for `identity` on a free loopback port; its URL."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                auto_decompress=False,
            )
        app = web.Application(client_max_size=64 * 1024 * 1024)

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._forward(identity, request)

        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        return f"http://127.0.0.1:{port}"

    def inject(
        self,
        *,
        identity: str,
        match: Callable[[str, str], bool],
        status: int,
        headers: dict[str, str] | None = None,
        count: int = 1,
    ) -> Injection:
        """Arm a canned answer for the next `count` matching writes (method, path) of `identity`."""
        inj = Injection(identity, match, status, dict(headers or {}), count)
        self.injections.append(inj)
        return inj

    def writes_of(self, identity: str) -> list[Write]:
        return [w for w in self.writes if w.identity == identity]

    async def _forward(self, identity: str, request: web.Request) -> web.StreamResponse:
        sent_at = time.monotonic()
        body = await request.read()
        method = request.method
        path = request.path
        mutating = method in _MUTATING
        parsed: Any = None
        if mutating and 0 < len(body) <= 64 * 1024:
            with contextlib.suppress(orjson.JSONDecodeError):
                parsed = orjson.loads(body)
        if mutating:
            for inj in self.injections:
                if inj.count > 0 and inj.identity == identity and inj.match(method, path):
                    inj.count -= 1
                    inj.hits.append(time.monotonic())
                    self.writes.append(
                        Write(
                            at=time.monotonic(),
                            sent_at=sent_at,
                            identity=identity,
                            method=method,
                            path=path,
                            status=inj.status,
                            body=parsed,
                            injected=True,
                        )
                    )
                    return _status_response(inj.status, inj.headers)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        url = self.upstream + request.path_qs
        try:
            upstream = await self._session.request(method, url, data=body, headers=headers)
        except (aiohttp.ClientError, OSError) as exc:
            if mutating:
                self._record(identity, method, path, 502, parsed, sent_at)
            return web.Response(status=502, text=f"proxy: {exc}")
        try:
            if mutating:
                self._record(identity, method, path, upstream.status, parsed, sent_at)
            out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in _HOP:
                    out.headers[k] = v
            if upstream.headers.get("Content-Encoding"):
                out.headers["Content-Encoding"] = upstream.headers["Content-Encoding"]
            await out.prepare(request)
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, asyncio.TimeoutError):
                async for chunk in upstream.content.iter_any():
                    await out.write(chunk)
                await out.write_eof()
            return out
        finally:
            upstream.release()

    def _record(
        self, identity: str, method: str, path: str, status: int, body: Any, sent_at: float
    ) -> None:
        self.writes.append(
            Write(
                at=time.monotonic(),
                sent_at=sent_at,
                identity=identity,
                method=method,
                path=path,
                status=status,
                body=body,
            )
        )

    async def close(self) -> None:
        for runner in self._runners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner.cleanup(), 3.0)
        self._runners.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None


def _status_response(status: int, headers: dict[str, str]) -> web.Response:
    """A Kubernetes `Status` body, as the API server sends with an error."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "injected by surgescale bench faults",
        "reason": "TooManyRequests" if status == 429 else "InternalError",
        "code": status,
    }
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )
