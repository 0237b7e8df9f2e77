"""The last fence before a write leaves the process, in the HTTP client itself.

The actuator, the pod ranker and the status writer each check leadership before they write
(`controller.lease`, `controller.shards`), but between that check and the request's bytes leaving
lies the client's own work (building and serialising the request, taking a pooled connection).
A process paused there (SIGSTOP, a stalled host) would, on waking, send a write it checked under a
leadership that is gone. So every mutating request is checked once more, from aiohttp's
`on_request_start` trace hook, immediately before the connection is taken and the request sent:
`fence(method, path)` says how long the writer may still write for what the path names (a scale
subresource, an InferenceScaler's status, a model's pod), and at <= 0 the request is refused
with `FencedWrite` (a `TemporaryError`: the writers retry, and their own fence then drops it).
Paths that name nothing model-specific (Leases, which are conditional on their resourceVersion;
Events) are let through.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from controller.actuator import ScaleTarget, TargetKind
from surgescale.retry import TemporaryError

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

_DEPLOYMENT_SCALE = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)/scale$")
_NODEPOOL_SCALE = re.compile(r"^/apis/karpenter\.sh/[^/]+/nodepools/([^/]+)/scale$")
_SCALER = re.compile(r"^/apis/[^/]+/[^/]+/namespaces/([^/]+)/inferencescalers/([^/]+)(?:/status)?$")
_POD = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)$")


class FencedWrite(TemporaryError):
    """A write refused at the last moment: leadership for its object is no longer valid."""


@dataclass(frozen=True, slots=True)
class Written:
    """What a write's path names."""

    scale: ScaleTarget | None = None
    scaler: tuple[str, str] | None = None
    pod: tuple[str, str] | None = None


def written(path: str) -> Written | None:
    """What a request path writes, if it is one of the controller's model-specific writes."""
    if m := _DEPLOYMENT_SCALE.match(path):
        return Written(scale=ScaleTarget(TargetKind.DEPLOYMENT, m[2], m[1]))
    if m := _NODEPOOL_SCALE.match(path):
        return Written(scale=ScaleTarget(TargetKind.NODEPOOL, m[1]))
    if m := _SCALER.match(path):
        return Written(scaler=(m[1], m[2]))
    if m := _POD.match(path):
        return Written(pod=(m[1], m[2]))
    return None


Fence = Callable[[str, str], float]
"""(method, path) -> seconds the write may still go out for (<= 0: refuse)."""


def install(api: client.ApiClient, fence: Fence) -> None:
    """Check `fence` before every mutating request `api` sends."""

    async def on_start(_session: Any, _ctx: SimpleNamespace, params: Any) -> None:
        if params.method in WRITES:
            path = params.url.path
            if fence(params.method, path) <= 0:
                raise FencedWrite(f"{params.method} {path}: leadership no longer valid")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    trace.freeze()
    api.rest_client.pool_manager.trace_configs.append(trace)
