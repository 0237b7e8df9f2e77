"""Start and stop simulated vLLM pods in the current asyncio process (interface #1).

`start_pod(PodOptions(...), host=..., port=...)` binds one aiohttp server and one engine task and
returns a `RunningPod`. Many pods can share one process (the simulated cluster runs one per
Ready pod, each on its own 127.x address). HTTP lives in `sim.pod.app`, the engine driver in
`sim.pod.driver`, faults in `sim.pod.faults`, the engine model in `sim.engine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web

from sim.engine import Engine, get_profile
from sim.pod.app import PodState, build_app
from sim.pod.driver import Driver, Stream
from sim.pod.faults import Faults
from sim.pod.metrics import PodMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class PodOptions:
    model: str  # served model name, e.g. "llama3-8b"
    profile: str = "llama3-8b-h200"  # engine/GPU profile name (sim.engine.PROFILE_NAMES)
    load_seconds: float = (
        0.0  # cold start before /health turns 200 (already divided by any speed factor)
    )
    max_num_seqs: int | None = None  # None = profile default
    seed: int = 0
    # additions (owner may add): engine knobs and faults at start
    max_num_batched_tokens: int | None = None
    num_kv_blocks: int | None = None  # None = sized from GPU memory (profile)
    faults: Faults = field(default_factory=Faults)


class RunningPod:
    """A started pod. `url`, `ready`, `stop(grace)`, `faults` / `set_faults(...)`, `engine`."""

    def __init__(
        self,
        *,
        options: PodOptions,
        state: PodState,
        runner: web.AppRunner,
        site: web.TCPSite,
        url: str,
    ) -> None:
        self.options = options
        self.url = url
        self._state = state
        self._runner = runner
        self._site = site
        self._load_task: asyncio.Task[None] | None = None
        self._stopped = False
        self._crash_task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """The model is loaded (and the pod neither stopping nor crashed)."""
        s = self._state
        return s.ready and not s.stopping and not s.faults.crash

    @property
    def engine(self) -> Engine:
        return self._state.driver.engine

    @property
    def driver(self) -> Driver:
        return self._state.driver

    @property
    def faults(self) -> Faults:
        return self._state.faults

    @property
    def stopped(self) -> bool:
        return self._stopped

    async def set_faults(
        self,
        *,
        crash: bool | None = None,
        hang: bool | None = None,
        error_rate: float | None = None,
        slowdown: float | None = None,
    ) -> Faults:
        """Change the given faults now; a crash completes before this returns."""
        f = self._state.faults
        new = Faults(
            crash=f.crash if crash is None else crash,
            hang=f.hang if hang is None else hang,
            error_rate=f.error_rate if error_rate is None else error_rate,
            slowdown=f.slowdown if slowdown is None else slowdown,
        )
        self._state.set_faults(new)
        if self._crash_task is not None:
            await self._crash_task
        return self._state.faults

    def _on_crash(self) -> None:
        if self._crash_task is None:
            self._crash_task = asyncio.get_running_loop().create_task(self._crash())

    async def _crash(self) -> None:
        log.info("pod %s crashing (fault)", self.url)
        self._state.stopping = True
        with contextlib.suppress(Exception):
            await self._site.stop()
        server = self._runner.server
        if server is not None:
            for conn in server.connections:
                if conn.transport is not None:
                    conn.transport.abort()
        await self._state.driver.close()
        await self._shutdown()

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for the cold start to end."""
        if self._load_task is not None:
            await asyncio.wait_for(asyncio.shield(self._load_task), timeout)

    async def stop(self, grace_seconds: float = 0.0) -> None:
        """Stop accepting, let in-flight requests finish up to `grace_seconds`, then close."""
        if self._stopped:
            return
        if self._crash_task is not None:
            await self._crash_task
            return
        self._state.stopping = True
        self._state.unhung.set()
        with contextlib.suppress(Exception):
            await self._site.stop()
        driver = self._state.driver
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(driver.wait_idle(), grace_seconds)
        await driver.close()
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._load_task is not None:
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._load_task
        await self._runner.cleanup()


def _wire_metrics(driver: Driver, metrics: PodMetrics) -> None:
    def admitted(s: Stream, t: float) -> None:
        metrics.queue.observe(t - s.arrival)

    def first_token(s: Stream, t: float) -> None:
        metrics.ttft.observe(t - s.arrival)
        metrics.prompt_tokens.inc(s.prompt_tokens)

    def finished(s: Stream, t: float) -> None:
        metrics.e2e.observe(t - s.arrival)
        metrics.success.inc()

    driver.on_admitted = admitted
    driver.on_first_token = first_token
    driver.on_itl = metrics.itl.observe
    driver.on_finished = finished


async def start_pod(options: PodOptions, *, host: str = "127.0.0.1", port: int = 0) -> RunningPod:
    """Bind the pod's HTTP server on `host:port` (0 = any free port) and start its engine."""
    profile = get_profile(options.profile)
    engine = Engine(
        profile,
        max_num_seqs=options.max_num_seqs,
        max_num_batched_tokens=options.max_num_batched_tokens,
        num_kv_blocks=options.num_kv_blocks,
    )
    driver = Driver(engine)
    metrics = PodMetrics(options.model, engine)
    _wire_metrics(driver, metrics)
    state = PodState(
        model=options.model,
        profile=options.profile,
        driver=driver,
        metrics=metrics,
        default_max_tokens=profile.default_max_tokens,
        seed=options.seed,
        created=int(time.time()),
    )
    state.rng.seed(options.seed)
    state.set_faults(options.faults)
    app = build_app(state)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = port
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            bound = int(addr[1])
            break
    pod = RunningPod(
        options=options, state=state, runner=runner, site=site, url=f"http://{host}:{bound}"
    )
    state.on_crash = pod._on_crash
    driver.start()

    async def load() -> None:
        if options.load_seconds > 0:
            await asyncio.sleep(options.load_seconds)
        state.ready = True

    if options.load_seconds > 0:
        pod._load_task = asyncio.get_running_loop().create_task(load(), name="sim-pod-load")
    else:
        state.ready = True
    return pod
