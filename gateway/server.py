"""Serving the gateway: uvloop, signals, graceful drain, and several workers on one port.

`serve(settings)` runs one gateway in the current event loop until `stop` is set (or SIGTERM /
SIGINT when `handle_signals`): it then stops admitting (new requests get 503 `draining`,
`/readyz` turns 503 so load balancers move away), lets queued and in-flight requests finish for up
to `drain_timeout_s`, cancels what is left (their clients get a closed stream, the controller a
`cancel`), closes resources and returns. `run(settings)` is the process entry: one worker in
this process, or `workers` child processes that each bind the same port with SO_REUSEPORT (the
kernel spreads connections), supervised and restarted if one dies; they also listen on private
Unix sockets in a directory of the supervisor's, so `/metrics` on any of them sums all
(`gateway.workermetrics`); a worker whose supervisor is killed drains and exits rather than
serving on alone (holding the port and its pod slots). A gateway with no API keys
refuses to start (`OpenAccessRefused`) unless `allow_unauthenticated` says so; the listening
socket caps open connections (`gateway.connections.listen`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from aiohttp import web

from gateway.app import build_app
from gateway.connections import listen
from gateway.settings import GatewaySettings
from gateway.state import STATE
from gateway.workermetrics import socket_path, unix_listener

log = logging.getLogger(__name__)


async def serve(
    settings: GatewaySettings,
    *,
    worker: int | None = None,
    workers_dir: str | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve until stopped, then drain within `settings.drain_timeout_s`."""
    refusal = settings.open_access_refusal()
    if refusal is not None:
        raise OpenAccessRefused(refusal)
    app = build_app(settings, worker=worker)
    state = app[STATE]
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        server, factory = await listen(
            runner,
            host=settings.host,
            port=settings.port,
            max_connections=settings.max_connections,
            reuse_port=settings.workers > 1,
            backlog=1024,
        )
        connections = runner.server
        assert connections is not None
        state.metrics.watch_connections(
            open_now=lambda: len(connections.connections), refused=lambda: factory.refused
        )
        private: asyncio.AbstractServer | None = None
        orphan_watch: asyncio.Task[None] | None = None
        if workers_dir is not None and worker is not None:
            state.worker_socket = socket_path(workers_dir, worker)
            private = await unix_listener(connections, state.worker_socket)
            supervisor = int(os.environ.get(_SUPERVISOR_ENV, "0")) or os.getppid()
            orphan_watch = asyncio.create_task(
                _stop_if_orphaned(stop, supervisor), name="orphan-watch"
            )
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # collector's way, so full collections (pauses on the request path) stay short.
        gc.collect()
        gc.freeze()
        url = _url_of(server, settings)
        log.info("gateway %s listening on %s", state.instance, url)
        if on_listening is not None:
            on_listening(url)
        try:
            await stop.wait()
            await drain(app, settings.drain_timeout_s)
        finally:
            server.close()  # accept nothing more; the runner then closes what is open
            if private is not None:
                private.close()
                _remove_socket(state.worker_socket, workers_dir)
            if orphan_watch is not None:
                orphan_watch.cancel()
    finally:
        await runner.cleanup()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


async def _stop_if_orphaned(stop: asyncio.Event, supervisor: int, interval_s: float = 1.0) -> None:
    """A worker whose supervisor died (SIGKILL) drains and exits instead of serving on alone."""
    while not stop.is_set():
        if os.getppid() != supervisor:
            log.warning("the gateway supervisor is gone; this worker drains and exits")
            stop.set()
            return
        await asyncio.sleep(interval_s)


def _remove_socket(path: str | None, directory: str | None) -> None:
    """Remove this worker's socket, and the directory if it was the last (a killed supervisor
    cannot)."""
    for remove, target in ((os.unlink, path), (os.rmdir, directory)):
        if target is not None:
            with contextlib.suppress(OSError):
                remove(target)


_SUPERVISOR_ENV = "SURGESCALE_SUPERVISOR_PID"
"""Set by the supervisor for its workers (not a setting: `GatewaySettings` never reads it)."""


async def drain(app: web.Application, timeout: float) -> bool:
    """Stop admitting, wait for queued and in-flight requests; True if all finished in time."""
    state = app[STATE]
    state.draining = True
    state.scheduler.draining = True
    deadline = time.monotonic() + timeout
    while state.scheduler.totals() != (0, 0):
        if time.monotonic() >= deadline:
            queued, in_flight = state.scheduler.totals()
            log.warning("drain timed out with %d queued and %d in flight", queued, in_flight)
            return False
        await asyncio.sleep(0.02)
    return True


def _url_of(server: asyncio.Server, settings: GatewaySettings) -> str:
    for sock in server.sockets:
        addr = sock.getsockname()
        if isinstance(addr, tuple) and len(addr) >= 2:
            host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
            return f"http://{host}:{addr[1]}"
    return f"http://{settings.host}:{settings.port}"


class OpenAccessRefused(RuntimeError):
    """No API keys and no explicit permission to serve without them."""


def run_worker(
    settings: GatewaySettings, worker: int | None = None, workers_dir: str | None = None
) -> None:
    """Run one gateway process to completion on uvloop (asyncio if uvloop is missing).

    `workers_dir`: where the workers of one replica find each other's private sockets."""
    _configure_logging(settings.log_level)
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(settings, worker=worker, workers_dir=workers_dir, on_listening=_announce))


def _announce(url: str) -> None:
    print(f"listening on {url}", flush=True)


def run(settings: GatewaySettings) -> int:
    """The process entry point: one worker here, or a supervisor of `workers` processes."""
    refusal = settings.open_access_refusal()
    if refusal is not None:
        print(f"surgescale gateway: refusing to start: {refusal}", file=sys.stderr)
        return 2
    if settings.workers == 1:
        run_worker(settings)
        return 0
    _configure_logging(settings.log_level)
    # Fork (before any event loop exists) starts workers at once with everything imported.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    workers_dir = tempfile.mkdtemp(prefix="surgescale-gateway-")
    try:
        return _supervise(settings, ctx, workers_dir)
    finally:
        shutil.rmtree(workers_dir, ignore_errors=True)


def _supervise(settings: GatewaySettings, ctx: Any, workers_dir: str) -> int:
    """Start `settings.workers` processes and keep them running until SIGTERM / SIGINT."""
    stopping = False
    os.environ[_SUPERVISOR_ENV] = str(os.getpid())  # inherited: workers know whom to outlive

    def start(index: int) -> BaseProcess:
        proc: BaseProcess = ctx.Process(
            target=run_worker, args=(settings, index, workers_dir), name=f"gateway-w{index}"
        )
        proc.start()
        return proc

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()  # SIGTERM: each worker drains

    procs = [start(i) for i in range(settings.workers)]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    restarts: list[float] = []
    while True:
        alive = [p for p in procs if p.is_alive()]
        if stopping and not alive:
            return 0
        if not stopping:
            for i, proc in enumerate(procs):
                if proc.is_alive():
                    continue
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < 60.0] + [now]
                if len(restarts) > 5 * settings.workers:
                    log.error("workers keep dying (last exit code %s); giving up", proc.exitcode)
                    on_signal(signal.SIGTERM, None)
                    for other in procs:
                        other.join(settings.drain_timeout_s + 5.0)
                    return 1
                log.error("worker %d exited with %s; restarting it", i, proc.exitcode)
                procs[i] = start(i)
        time.sleep(0.2)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )
