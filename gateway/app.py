"""`build_app(settings)`: the gateway as an aiohttp Application, resources in cleanup contexts.

Opened in order and closed in reverse: the event producer (Redis), the upstream HTTP session,
the pods' shared slots (`gateway.shares`), pod discovery (static probes or EndpointSlice
watches) and the snapshot ticker. Handlers find
everything through `STATE` (`gateway.state`). The application asks aiohttp to cancel a handler
whose client disconnects (`handler_cancellation`), which is how a queued or streaming request
learns that its client went away, whichever runner serves it. Client connections are bounded
here too (head sizes, body size, `keepalive_timeout` for idle and slow-header connections) and
every HTTP error is OpenAI-shaped (`gateway.connections`).

Serving it (signals, drain, workers) is `gateway.server`; the request path is `gateway.proxy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from gateway import discovery, ops
from gateway.connections import openai_errors
from gateway.metrics import GatewayMetrics
from gateway.openai_api import Endpoint
from gateway.podlink import PodLinks
from gateway.proxy import handler
from gateway.reporting import Reporter, event_producer, snapshot_loop, tenant_label
from gateway.scheduler import QueueLimits, Scheduler
from gateway.settings import GatewaySettings
from gateway.shares import SharesConfig, running_shares
from gateway.state import STATE, GatewayState
from gateway.telemetry import install as install_telemetry

log = logging.getLogger(__name__)


def build_app(
    settings: GatewaySettings,
    *,
    worker: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> web.Application:
    """The gateway application for `settings` (`worker` numbers a process of a multi-worker run)."""
    scheduler = Scheduler(
        QueueLimits(
            max_length=settings.max_queue_length,
            max_wait_s=settings.max_queue_wait_s,
            fairness=settings.fairness,
            tenant_limit=settings.per_key_concurrency,
        ),
        clock=clock,
        policies={m: settings.slo_for(m).policy() for m in settings.model_names()},
        objectives={m: settings.slo_for(m).objective() for m in settings.model_names()},
    )
    state = GatewayState(
        settings=settings,
        instance=settings.instance_id(worker),
        scheduler=scheduler,
        metrics=GatewayMetrics(),
        clock=clock,
        models=frozenset(settings.model_names()),
        keys=tuple(
            (k.get_secret_value().encode(), tenant_label(k.get_secret_value()))
            for k in settings.api_keys
        ),
    )
    for model in settings.model_names():
        scheduler.queue(model)  # known (and in snapshots) before any pod or request
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[openai_errors],
        handler_args={
            "handler_cancellation": True,
            "max_line_size": settings.max_header_bytes,
            "max_field_size": settings.max_header_bytes,
            "keepalive_timeout": settings.keepalive_timeout_s,
        },
    )
    app[STATE] = state
    app.cleanup_ctx.append(_events)
    app.cleanup_ctx.append(_upstream_session)
    app.cleanup_ctx.append(_shares)
    app.cleanup_ctx.append(_discovery)
    app.cleanup_ctx.append(_snapshots)
    app.router.add_post(Endpoint.CHAT.value, handler(Endpoint.CHAT))
    app.router.add_post(Endpoint.COMPLETIONS.value, handler(Endpoint.COMPLETIONS))
    app.router.add_get("/v1/models", ops.models)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    install_telemetry(app, settings)  # OpenTelemetry, when on (gateway.telemetry)
    return app


async def _events(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    s = state.settings
    async with event_producer(
        s.redis_url, prefix=s.events_prefix, buffer_limit=s.event_buffer_limit
    ) as producer:
        reporter = Reporter(
            gateway=state.instance,
            producer=producer,
            pod_cap=s.cap_for,
            linger_s=s.event_linger_ms / 1000.0,
        )
        state.reporter = reporter
        state.metrics.watch(state.scheduler, producer, lambda: state.started and not state.draining)
        try:
            yield
        finally:
            reporter.release()  # before the producer's final flush


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    s = state.settings
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60.0, ttl_dns_cache=10)
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=s.connect_timeout_s,
        sock_connect=s.connect_timeout_s,
        sock_read=s.idle_timeout_s,
    )
    links = PodLinks(connect_timeout_s=s.connect_timeout_s, idle_timeout_s=s.idle_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        state.session, state.links = session, links
        try:
            yield
        finally:
            links.close()
    state.session = state.links = None


async def _shares(app: web.Application) -> AsyncIterator[None]:
    """Each pod's slots shared with the other gateway instances (`gateway.shares`)."""
    state = app[STATE]
    s = state.settings
    if not s.capacity_sharing:
        yield
        return
    config = SharesConfig(
        prefix=s.events_prefix,
        sync_interval_s=s.capacity_sync_interval_ms / 1000.0,
        lease_s=s.capacity_lease_s,
        fallback_instances=s.capacity_fallback_instances or s.workers,
        fallback_hold_s=s.capacity_fallback_hold_s,
    )
    async with running_shares(
        state.scheduler,
        redis_url=s.redis_url,
        config=config,
        caps={m: s.cap_for(m) for m in s.model_names()},
        instance=state.instance,
        clock=state.clock,
    ) as shares:
        state.shares = shares
        state.metrics.watch_shares(shares)
        yield
    state.shares = None


async def _discovery(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    s = state.settings
    scheduler = state.scheduler

    def on_pods(model: str, pods: dict[str, bool]) -> None:
        if state.shares is not None:
            state.shares.on_pods(model, pods)
        else:
            scheduler.set_pods(model, pods, capacity=s.cap_for(model))

    tasks: list[asyncio.Task[None]] = []
    api_client = None
    if s.static_pods:
        assert state.session is not None
        tasks.append(
            asyncio.create_task(
                discovery.probe_static(
                    s.static_pods,
                    session=state.session,
                    on_pods=on_pods,
                    interval_s=s.health_interval_s,
                    path=s.health_path,
                ),
                name="static-pods",
            )
        )
    if s.models:
        api_client = await discovery.make_api_client(s)
        for route in s.models:
            tasks.append(
                asyncio.create_task(
                    discovery.watch_slices(
                        api_client, route, namespace=route.namespace or s.namespace, on_pods=on_pods
                    ),
                    name=f"endpointslices-{route.name}",
                )
            )
    state.started = True
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if api_client is not None:
            await api_client.close()


async def _snapshots(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    reporter = state.reporter
    if reporter is None or not reporter.enabled:
        yield
        return
    queues = state.scheduler.queues

    def depths() -> dict[str, tuple[int, int]]:
        return {m: (q.queued, q.in_flight) for m, q in queues.items()}

    task = asyncio.create_task(
        snapshot_loop(reporter, depths, interval_ms=state.settings.snapshot_interval_ms),
        name="snapshots",
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        reporter.snapshot(depths(), state.settings.snapshot_interval_ms)  # the final word
