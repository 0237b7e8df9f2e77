"""The shared state of one gateway application, reachable from handlers through a typed AppKey.

`gateway.app` builds it and opens its resources in cleanup contexts; `gateway.proxy` and
`gateway.ops` read it. Nothing here does I/O.
"""

from __future__ import annotations

import hmac
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from gateway.metrics import GatewayMetrics
from gateway.podlink import PodLinks
from gateway.reporting import Reporter, tenant_label
from gateway.scheduler import Scheduler
from gateway.settings import GatewaySettings
from gateway.shares import Shares


@dataclass(slots=True, eq=False)
class GatewayState:
    settings: GatewaySettings
    instance: str
    scheduler: Scheduler
    metrics: GatewayMetrics
    clock: Callable[[], float] = time.monotonic
    """The monotonic clock every duration is measured on."""
    reporter: Reporter | None = None
    session: aiohttp.ClientSession | None = None
    links: PodLinks | None = None
    """Keep-alive connections to the pods for streamed requests (`gateway.podlink`)."""
    shares: Shares | None = None
    """This instance's shares of the pods' slots (None: sharing off, whole caps)."""
    models: frozenset[str] = frozenset()
    worker_socket: str | None = None
    """This worker's private Unix socket when the replica has several workers: `/metrics`
    then sums the series of every worker (`gateway.workermetrics`)."""
    keys: tuple[tuple[bytes, str], ...] = ()
    """(api key, tenant label) pairs."""
    started: bool = False
    draining: bool = False
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def next_request_id(self) -> str:
        return f"{self.instance}-{next(self._ids)}"

    def authenticate(self, header: str | None) -> str | None:
        """The tenant label of a valid `Authorization: Bearer` header; None if refused.

        With no keys configured everybody is let in; the tenant is then the label of whatever
        bearer token came (for fairness) or "". A token that is not UTF-8 is refused either way.
        Every configured key is compared, in constant time, whichever matches.
        """
        token = ""
        if header and header[:7].lower() == "bearer ":
            token = header[7:].strip()
        try:
            # aiohttp decodes header bytes that are not UTF-8 as lone surrogates.
            raw = token.encode()
        except UnicodeEncodeError:
            return None  # not a key anyone was given
        if not self.keys:
            return tenant_label(token) if token and self.settings.fairness else ""
        found: str | None = None
        for key, label in self.keys:
            if hmac.compare_digest(raw, key):
                found = label
        if found is None:
            return None
        return found if self.settings.fairness or self.settings.per_key_concurrency else ""


STATE: web.AppKey[GatewayState] = web.AppKey("surgescale_gateway_state", GatewayState)
