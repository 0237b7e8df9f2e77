"""Injected API-server trouble for tests and benchmarks: error statuses, Retry-After, slowness,
hung (half-open) requests.

A `Faults` holds rules; `middleware` applies the first rule matching a request (method, a
substring of the path, watch or not) before the request is served: it waits `delay_s` (a slow
server), then either answers with `status` (a `kind: Status` body, plus a `Retry-After` header
sent verbatim, so clients can be fed `30`, `inf` or `-1`), or holds the request open without
ever answering (`hang`, what a half-open connection looks like to the client) until the client
gives up, or serves it normally. Each rule applies `times` times (None: until removed) and counts
its `hits`.

Rules are set in-process (`RunningCluster.ctx.faults.add(...)`) or over HTTP by another process:
`POST /_sim/faults` with a rule as JSON, `GET /_sim/faults` to read them with their hits,
`DELETE /_sim/faults` to clear them. Nothing here runs unless a rule is set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import errors

ADMIN_PATH = "/_sim/faults"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FaultRule(BaseModel):
    """One injected fault."""

    model_config = ConfigDict(extra="forbid")

    path: str = ""
    """Applies to requests whose path contains this (empty: every resource request)."""
    method: str | None = None
    """HTTP method to match (None: any)."""
    watch: bool | None = None
    """True: only watch requests; False: only non-watch ones; None: both."""
    status: Annotated[int, Field(ge=400, le=599)] | None = None
    """Answer with this HTTP status instead of serving the request."""
    retry_after: str | None = None
    """`Retry-After` header of that answer, sent as given."""
    delay_s: Annotated[float, Field(ge=0, le=3600)] = 0.0
    """Wait this long first (then answer `status`, hang, or serve normally)."""
    hang: bool = False
    """Never answer: hold the request until the client closes it."""
    times: Annotated[int, Field(ge=1)] | None = 1
    """How many requests this rule applies to (None: until cleared)."""
    hits: int = 0

    def matches(self, request: web.Request) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and request.method.upper() != self.method.upper():
            return False
        if self.path and self.path not in request.path:
            return False
        if self.watch is not None:
            is_watch = "/watch/" in request.path or request.query.get("watch") in (
                "true",
                "1",
                "True",
            )
            if is_watch != self.watch:
                return False
        return True


class Faults:
    """The active fault rules of one simulated API server."""

    def __init__(self) -> None:
        self.rules: list[FaultRule] = []

    def add(self, rule: FaultRule | None = None, **fields: object) -> FaultRule:
        """Add a rule (a `FaultRule`, or its fields as keywords); returns it (see its `hits`)."""
        made = rule if rule is not None else FaultRule.model_validate(fields)
        self.rules.append(made)
        return made

    def clear(self) -> None:
        self.rules.clear()

    def match(self, request: web.Request) -> FaultRule | None:
        for rule in self.rules:
            if rule.matches(request):
                rule.hits += 1
                return rule
        return None

    async def admin(self, request: web.Request) -> web.Response:
        """`/_sim/faults`: GET lists, POST adds one rule, DELETE clears."""
        if request.method == "POST":
            try:
                rule = FaultRule.model_validate_json(await request.read())
            except ValidationError as exc:
                raise errors.bad_request(f"bad fault rule: {exc.errors()}") from exc
            self.add(rule)
        elif request.method == "DELETE":
            self.clear()
        elif request.method != "GET":
            raise errors.method_not_allowed(f"{request.method} is not supported on {ADMIN_PATH}")
        body = orjson.dumps([r.model_dump() for r in self.rules])
        return web.Response(body=body, content_type="application/json")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == ADMIN_PATH:
            try:
                return await self.admin(request)
            except errors.ApiError as exc:
                return web.json_response(exc.status(), status=exc.code)
        rule = self.match(request) if self.rules else None
        if rule is None:
            return await handler(request)
        if rule.delay_s:
            await asyncio.sleep(rule.delay_s)
        if rule.hang:  # until the client gives up and closes the connection
            # aiohttp has no event for "the client closed": poll the transport.
            while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            raise ConnectionResetError("client closed a hung request")
        if rule.status is None:
            return await handler(request)
        fault = errors.ApiError(rule.status, _reason(rule.status), "injected fault")
        headers = {"Retry-After": rule.retry_after} if rule.retry_after is not None else None
        return web.json_response(fault.status(), status=rule.status, headers=headers)


def _reason(status: int) -> str:
    return {
        409: "Conflict",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }.get(status, "InternalError" if status >= 500 else "BadRequest")
