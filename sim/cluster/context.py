"""Shared pieces of the HTTP layer: the handler context, the parsed request target, helpers.

`server.py` routes and serves the verbs; `scale.py` the scale subresource; `watchstream.py` the
watch streams. They share `ApiContext` (registry, store, admission chain) through the aiohttp
app key `CTX`, and `Target`, the resource/namespace/name/subresource a URL names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from . import errors
from .faults import Faults
from .resources import Registry, ResourceType
from .store import Obj, Store

Admission = Callable[[ResourceType, Obj, Obj | None], None]
"""Mutates (defaults) and/or validates an object before it is stored; raises ApiError."""


@dataclass
class ApiContext:
    """What the handlers need: the registry, the store and the admission chain."""

    registry: Registry
    store: Store
    admission: list[Admission] = field(default_factory=list)
    server_address: str = ""
    default_watch_timeout_s: float = 1800.0
    bookmark_interval_s: float = 60.0
    faults: Faults = field(default_factory=Faults)
    """Injected API trouble (`faults.py`); empty unless a test or benchmark sets rules."""

    def admit(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        for hook in self.admission:
            hook(rt, obj, old)


CTX: web.AppKey[ApiContext] = web.AppKey("surgescale_sim_cluster_ctx", ApiContext)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(exc: errors.ApiError) -> web.Response:
    return json_response(exc.status(), status=exc.code)


def wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "as=Table" in accept and "g=meta.k8s.io" in accept


@dataclass(frozen=True, slots=True)
class Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    sub: str | None
    watch_path: bool = False
