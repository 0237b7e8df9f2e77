"""Watch streams: one chunked JSON line per event, plain or as Table rows for kubectl.

A watch starts from the request's `resourceVersion` (replaying the store's history after it),
or with ADDED events for every matching object when there is none; a resourceVersion older than
the history gets an ERROR event carrying a 410 Expired Status, as the real server sends. The
stream ends at `timeoutSeconds` (or the server default), when the client goes away, or when
the store drops a watcher that cannot keep up. With `allowWatchBookmarks=true` an idle stream
gets a BOOKMARK carrying the current resourceVersion every `bookmark_interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from aiohttp import web

from . import errors, tables
from .context import ApiContext, Target, wants_table
from .resources import ResourceType
from .selectors import FieldSelector, LabelSelector
from .store import WatchEvent


async def serve_watch(ctx: ApiContext, request: web.Request, t: Target) -> web.StreamResponse:
    q = request.query
    labels = LabelSelector.parse(q.get("labelSelector"))
    fields = FieldSelector.parse(q.get("fieldSelector"))
    if t.name is not None:
        fields = FieldSelector((*fields.terms, ("metadata.name", True, t.name)))
    timeout = float(q.get("timeoutSeconds") or ctx.default_watch_timeout_s)
    as_table = wants_table(request)
    include = q.get("includeObject", "Metadata")
    bookmarks = q.get("allowWatchBookmarks") in ("true", "1", "True") and not as_table
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    try:
        watcher = ctx.store.watch(
            t.rt, t.namespace, labels=labels, fields=fields, since=q.get("resourceVersion") or None
        )
    except errors.ApiError as exc:
        if exc.code != 410:
            raise
        await response.prepare(request)
        await response.write(orjson.dumps({"type": "ERROR", "object": exc.status()}) + b"\n")
        return response
    await response.prepare(request)
    first = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            wait = min(remaining, ctx.bookmark_interval_s) if bookmarks else remaining
            try:
                event = await asyncio.wait_for(watcher.queue.get(), wait)
            except TimeoutError:
                if bookmarks and loop.time() < deadline:
                    await response.write(_bookmark(t.rt, ctx.store.rv))
                    continue
                break
            if event is None:
                break
            chunks = [event]
            while not watcher.queue.empty():
                nxt = watcher.queue.get_nowait()
                if nxt is None:
                    watcher.closed = True
                    break
                chunks.append(nxt)
            data = bytearray()
            for ev in chunks:
                if as_table:
                    data += _table_event(t.rt, ev, include, first)
                    first = False
                else:
                    data += ev.json_line()
            await response.write(bytes(data))
            if watcher.closed and watcher.queue.empty():
                break
    except ConnectionResetError:
        return response  # the client went away: the normal end of a watch
    finally:
        ctx.store.unwatch(watcher)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


def _bookmark(rt: ResourceType, rv: int) -> bytes:
    """A BOOKMARK: only the resourceVersion the client may resume from (nothing is skipped:
    every change to this watch's objects before `rv` has been sent already)."""
    obj = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": str(rv)}}
    return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"


def _table_event(rt: ResourceType, ev: WatchEvent, include: str, first: bool) -> bytes:
    table = tables.to_table(
        rt, [ev.obj], resource_version=str(ev.rv), include=include, with_definitions=first
    )
    return orjson.dumps({"type": ev.type, "object": table}) + b"\n"
