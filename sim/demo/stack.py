"""One run of the demo scenario with one autoscaler: bring the loop up, drive load, tear it down.

`run_arm(config, arm)` starts, all on loopback:

- the simulated cluster (`surgescale sim cluster`, a child process: it also runs every simulated
  vLLM pod, so its token streaming gets a core of its own) with the GPU NodePool — static and
  scaled by our controller, or dynamic (Karpenter provisions for Pending pods) under the KEDA
  baseline, which is how a KEDA user runs Karpenter;
- the gateway (`surgescale gateway`, a child) routing the model by its Service's EndpointSlices;
  under the baseline its per-pod cap is lifted so it behaves like a plain Service and requests
  queue inside vLLM, where the TTFT histogram the baseline scrapes can see them;
- the autoscaler: our controller (`surgescale controller`, a child) or the KEDA + Prometheus +
  HPA loop (`sim.baselines.keda_live`, in this process, its periods divided by the speed factor);
- in this process: the load generator (`sim.load.runner.run_load`), the cluster informers
  (`sim.demo.observe`), the events follower and the live view (`sim.demo.live`).

Everything is stopped in reverse order in `finally` blocks, so the end of the run, an error and a
Ctrl-C (task cancellation) all leave no process, port or Redis key behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import random
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
from rich.console import Console

from sim.baselines.hpa import KedaSpec
from sim.baselines.keda_live import KedaBaseline, running
from sim.demo import commands, objects, startup
from sim.demo.live import (
    EventTally,
    LiveView,
    ViewState,
    events_from_now,
    follow_events,
    stop_following,
)
from sim.demo.observe import ClusterObserver, ObservedNames
from sim.demo.procs import Children, StartError, spawn, wait_http
from sim.demo.record import RunRecord
from sim.load.records import RequestResult, TraceRequest
from sim.load.runner import run_load
from sim.localredis.server import free_port
from surgescale.events import StreamKeys

log = logging.getLogger(__name__)


class Arm(enum.StrEnum):
    """Which autoscaler drives the run (and, for ours, the gateway's dispatch order)."""

    OURS = "surgescale"
    KEDA = "keda"
    OURS_FIFO = "surgescale-fifo"
    """Ours with the gateway's old FIFO dispatch: the gain of the deadline order alone."""

    @property
    def ours(self) -> bool:
        return self is not Arm.KEDA

    @property
    def dispatch(self) -> str:
        """The gateway's dispatch order in this arm."""
        return "fifo" if self is Arm.OURS_FIFO else "deadline"

    @property
    def label(self) -> str:
        return {
            Arm.OURS: "surgescale (events, ms)",
            Arm.KEDA: "KEDA + Prometheus + HPA",
            Arm.OURS_FIFO: "surgescale, FIFO dispatch",
        }[self]


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoConfig:
    """Everything one demo run needs."""

    setup: objects.ModelSetup = field(default_factory=objects.ModelSetup)
    speed: float = 10.0
    schedule: tuple[TraceRequest, ...] = ()
    duration_s: float = 100.0
    load_step_at: float | None = None
    burst_end_at: float | None = None
    phases: tuple[tuple[float, str], ...] = ()
    """(start time, name) of the scenario's phases, for the live view."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    kubeconfig: Path | None = None
    """An API server to use instead of starting the simulated cluster."""
    work_dir: Path = Path("surgescale-demo")
    live: bool = True
    keda: KedaSpec = field(default_factory=KedaSpec)
    """The baseline's periods in real-world seconds (divided by `speed` when used)."""
    ours_pod_concurrency: int | None = None
    """The gateway's per-pod cap for our arm (None = the pods' max_num_seqs)."""
    request_timeout_s: float = 300.0
    late_max_wait_s: float = 30.0
    """The gateways' bound on a late request's wait (`gateway.dispatch`)."""
    setup_timeout_s: float = 120.0
    seed: int = 0

    @property
    def initial_nodes(self) -> int:
        s = self.setup
        return math.ceil(s.initial_replicas * s.gpus_per_replica / s.gpus_per_node)


@dataclass(slots=True)
class LoadProgress:
    """Finished requests, counted as the load generator reports them."""

    finished: int = 0

    def done(self, result: RequestResult) -> None:
        self.finished += 1


def _cpu_note(children: Children, own_cpu0: float, wall_s: float) -> str:
    """CPU used during the load by each process, as a share of one core."""
    parts = []
    for child in children.items:
        used = child.cpu_seconds()
        if used is not None:
            parts.append(f"{child.name} {100 * (used - child.cpu_at_start) / wall_s:.0f}%")
    parts.append(f"demo+load {100 * (time.process_time() - own_cpu0) / wall_s:.0f}%")
    return "CPU during the load (share of one core): " + ", ".join(parts)


@dataclass(slots=True)
class ArmContext:
    """The live handles of one run (read by the view)."""

    arm: Arm
    config: DemoConfig
    t0: float = 0.0
    progress: LoadProgress = field(default_factory=LoadProgress)
    tally: EventTally | None = None
    observer: ClusterObserver | None = None
    baseline: KedaBaseline | None = None

    def phase(self, t: float) -> str:
        name = "setup" if t < 0 else "drain"
        for start, label in self.config.phases:
            if t >= start:
                name = label
        if t >= self.config.duration_s:
            name = "drain"
        return name

    def frame(self) -> ViewState:
        loop = asyncio.get_running_loop()
        t = loop.time() - self.t0 if self.t0 else 0.0
        now_ms = _wall_ms()
        sample = self.observer.current() if self.observer else None
        queue, flight = self.tally.queue_depth(now_ms) if self.tally else (0, 0)
        if self.baseline is not None:
            decision = self.baseline.status.last_reason
        elif self.observer is not None:
            decision = self.observer.scaler_reason() or "—"
        else:
            decision = "—"
        return ViewState(
            title=self.arm.label,
            elapsed_s=max(0.0, t),
            duration_s=self.config.duration_s,
            phase=self.phase(t),
            slo_s=self.config.setup.slo_s,
            arrival_rate=self.tally.arrival_rate(now_ms) if self.tally else 0.0,
            queue_depth=queue,
            in_flight=flight,
            waiting=self.tally.waiting() if self.tally else 0,
            ttft_p95_s=self.tally.ttft_p95(now_ms) if self.tally else None,
            replicas_desired=sample.replicas_desired if sample else 0,
            replicas_starting=sample.replicas_starting if sample else 0,
            replicas_ready=sample.replicas_ready if sample else 0,
            nodes_desired=sample.nodes_desired if sample else 0,
            nodes_ready=sample.nodes_ready if sample else 0,
            sent=sum(1 for a in self.config.schedule if a.arrival_s <= t) if self.t0 else 0,
            finished=self.progress.finished,
            decision=decision,
        )


def _wall_ms() -> float:
    return time.time() * 1000.0


async def run_arm(config: DemoConfig, arm: Arm, *, console: Console | None = None) -> RunRecord:
    """Run the scenario once with `arm` driving the scaling; return what was recorded."""
    console = console or Console()
    setup = config.setup
    if config.kubeconfig is None:
        # Pods get 127.x addresses on one port; a port of our own keeps them clear of any other
        # simulated cluster on this machine.
        setup = replace(setup, pod_port=free_port())
    work = config.work_dir / arm.value
    work.mkdir(parents=True, exist_ok=True)
    prefix = f"demo-{uuid.uuid4().hex[:10]}"
    keys = StreamKeys(prefix=prefix)
    ctx = ArmContext(arm=arm, config=config)
    children = Children()
    loop = asyncio.get_running_loop()
    rng = random.Random(config.seed)
    notes: list[str] = []
    started = loop.time()

    def say(message: str) -> None:
        console.print(
            f"  [dim]{loop.time() - started:5.1f}s[/dim] {message}", highlight=False, soft_wrap=True
        )

    async with contextlib.AsyncExitStack() as stack:
        # Exit runs these in reverse: children stop first, then their keys go, then the client.
        redis = await stack.enter_async_context(startup.redis_client(config.redis_url))
        stack.push_async_callback(startup.bounded, startup.delete_keys(redis, prefix), "keys")
        stack.push_async_callback(children.stop_all)

        # --- the cluster ------------------------------------------------------------------
        if config.kubeconfig is None:
            kubeconfig = work / "kubeconfig"
            kubeconfig.unlink(missing_ok=True)
            port = free_port()
            argv = commands.cluster_argv(
                config, setup, ours=arm.ours, port=port, kubeconfig=kubeconfig
            )
            cluster = children.add(await spawn("cluster", argv, log_dir=work))
            await wait_http(cluster, f"http://127.0.0.1:{port}/version", timeout_s=60)
            say(f"simulated cluster up on :{port} (speed x{config.speed:g})")
            await startup.wait_file(kubeconfig, lambda: cluster.running, 10)
        else:
            kubeconfig = config.kubeconfig
        api = await startup.api_client(kubeconfig)
        stack.push_async_callback(startup.bounded, api.close(), "API client")

        # --- gateway ---------------------------------------------------------------------
        gw_port = free_port()
        argv = commands.gateway_argv(
            config,
            setup,
            ours=arm.ours,
            dispatch=arm.dispatch,
            port=gw_port,
            kubeconfig=kubeconfig,
            prefix=prefix,
        )
        gateway = children.add(await spawn("gateway", argv, log_dir=work))
        gateway_url = f"http://127.0.0.1:{gw_port}"
        waits = [wait_http(gateway, f"{gateway_url}/healthz", timeout_s=60)]

        # --- autoscaler ------------------------------------------------------------------
        http = await stack.enter_async_context(aiohttp.ClientSession())
        if arm.ours:
            ctl_port = free_port()
            argv = commands.controller_argv(
                config, setup, port=ctl_port, kubeconfig=kubeconfig, prefix=prefix
            )
            controller = children.add(await spawn("controller", argv, log_dir=work))
            waits.append(
                wait_http(controller, f"http://127.0.0.1:{ctl_port}/healthz", timeout_s=60)
            )
        else:
            spec = commands.baseline_spec(config, setup)
            ctx.baseline = KedaBaseline(
                api=api,
                http=http,
                target=commands.baseline_target(setup),
                spec=spec,
                phase_s=rng.uniform(0, spec.scrape_interval_s),
            )

        # The children start while the objects are applied.
        await objects.apply(api, setup, ours=arm.ours, speed=config.speed)
        await asyncio.gather(*waits)
        say(f"gateway up on :{gw_port}; " + ("controller up" if arm.ours else "KEDA loop ready"))

        # --- wait for the starting point ---------------------------------------------------
        await startup.wait_ready_replicas(api, setup, config.setup_timeout_s)
        try:
            warm = await startup.warm_up(gateway_url, setup.model, 120)
        except StartError as exc:
            raise StartError(f"{exc}; the gateway's log ends with:\n{gateway.log_tail()}") from exc
        say(f"{setup.initial_replicas} replica(s) of {setup.model} Ready and serving: load starts")

        # The warm-up's events can reach Redis after the consumer starts at "$" (they linger
        # for a batch): the tally leaves that request out by its id.
        ctx.tally = EventTally(model=setup.model, ignore={warm})
        consumer = await events_from_now(redis, keys=keys)
        follower = asyncio.create_task(follow_events(consumer, ctx.tally))
        stack.push_async_callback(startup.bounded, stop_following(consumer, follower), "events")
        ctx.observer = ClusterObserver(
            api=api,
            names=ObservedNames(
                namespace=setup.namespace,
                deployment=setup.deployment,
                pod_selector=setup.selector,
                nodepool=setup.nodepool,
                scaler=setup.scaler if arm.ours else None,
            ),
            t0=loop.time(),
        )
        if ctx.baseline is not None:
            baseline = ctx.baseline
            ctx.observer.reason_of = lambda target: baseline.status.last_reason
        await ctx.observer.start()
        stack.push_async_callback(startup.bounded, ctx.observer.stop(), "watches")
        if ctx.baseline is not None:
            await stack.enter_async_context(running(ctx.baseline))

        # --- the run ---------------------------------------------------------------------
        view = LiveView(ctx.frame, live=config.live, console=console)
        ctx.t0 = loop.time()
        ctx.observer.t0 = ctx.t0
        own_cpu0 = time.process_time()
        for child in children.items:
            child.cpu_at_start = child.cpu_seconds() or 0.0
        async with view.running():
            report = await run_load(
                config.schedule,
                target_url=gateway_url,
                model=setup.model,
                request_timeout=config.request_timeout_s + 30.0,
                ttft_slo_s=setup.slo_s,
                on_result=ctx.progress.done,
            )
            results = list(report.results)
            # the books close when the gateway's events account for every request (bounded)
            await ctx.tally.settled(len(results), timeout_s=10.0)
        end = loop.time() - ctx.t0
        cpu = _cpu_note(children, own_cpu0, end)
        say(f"load done; stopping everything. {cpu}")
        notes.append(f"{arm.label}: {cpu}")
        observer = ctx.observer
        notes.append(
            f"{arm.label}: gateway events seen: {ctx.tally.enqueued} enqueued, "
            f"{ctx.tally.completed} completed, {ctx.tally.rejected} rejected, "
            f"{ctx.tally.cancelled} cancelled."
        )
        if ctx.baseline is not None:
            st = ctx.baseline.status
            notes.append(
                f"{arm.label}: {st.scrapes} scrapes ({st.scrape_errors} failed), "
                f"{len(st.decisions)} scale decisions; periods divided by {config.speed:g}."
            )
        return RunRecord(
            name=arm.value,
            label=arm.label,
            slo_s=setup.slo_s,
            speed=config.speed,
            duration_s=max(end, config.duration_s),
            load_step_at=config.load_step_at,
            burst_end_at=config.burst_end_at,
            gpus_per_replica=setup.gpus_per_replica,
            gpus_per_node=setup.gpus_per_node,
            requests=tuple(results),
            cluster=tuple(observer.samples),
            changes=tuple(observer.changes),
            pod_ready_at=tuple(observer.pod_ready_at),
            node_ready_at=tuple(observer.node_ready_at),
            notes=tuple(notes),
            event_counts=(
                ("enqueued", ctx.tally.enqueued),
                ("completed", ctx.tally.completed),
                ("rejected", ctx.tally.rejected),
                ("cancelled", ctx.tally.cancelled),
                ("first_token", ctx.tally.first_tokens),
            ),
        )
    raise AssertionError("unreachable")  # pragma: no cover
