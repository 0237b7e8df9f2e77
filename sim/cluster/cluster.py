"""Assemble and run the simulated cluster: store, controllers, HTTP server, kubeconfig.

`start_cluster(ClusterOptions(...))` builds the registry and store, installs Karpenter's real
CRDs (from `karpenter_crds`, default the copy in `sim/data/karpenter-crds`, env
`SURGESCALE_KARPENTER_CRDS`) and, unless `capacity_buffers=False`, the CapacityBuffer CRD
(`autoscaling.x-k8s.io`, from `karpenter-aws-crds`, env `SURGESCALE_KARPENTER_AWS_CRDS`)
through the same CRD path clients use, creates the standard
namespaces and the configured NodePools, starts the controllers (workloads, scheduler,
kubelet, endpointslices, Karpenter, CapacityBuffers) and serves the API over HTTP. `RunningCluster` gives its
URL, clock, store and a kubeconfig writer; `stop()` shuts everything down within a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from sim.datafiles import data_dir

from .admission import Admission
from .buffers import CapacityBuffers
from .clock import SimClock
from .context import ApiContext
from .crds import CrdController, load_crd_files
from .endpoints import EndpointSliceController
from .events import EventRecorder
from .gctune import FullGcPolicy
from .karpenter import Karpenter
from .kubelet import Kubelet
from .namespaces import NamespaceController
from .resources import Registry, ResourceType
from .scheduler import Scheduler
from .server import build_app
from .store import Obj, Store
from .workloads import WorkloadControllers

log = logging.getLogger(__name__)


def default_crd_dir() -> Path:
    """`$SURGESCALE_KARPENTER_CRDS`, else the copy packaged with surgescale
    (`sim/data/karpenter-crds`, `sim.datafiles`)."""
    return data_dir("karpenter-crds", "SURGESCALE_KARPENTER_CRDS")


BUFFER_CRD_FILE = "autoscaling.x-k8s.io_capacitybuffers.yaml"


def buffer_crd_path() -> Path:
    """The CapacityBuffer CRD: `$SURGESCALE_KARPENTER_AWS_CRDS`, the shared data beside the repo,
    or the packaged copy (`sim.datafiles`)."""
    return data_dir("karpenter-aws-crds", "SURGESCALE_KARPENTER_AWS_CRDS") / BUFFER_CRD_FILE


@dataclass(frozen=True, slots=True, kw_only=True)
class NodePoolConfig:
    """A NodePool created at start. `replicas=None` makes it dynamic (provisions for pods)."""

    name: str
    gpus_per_node: int = 8
    boot_seconds: float = 60.0
    replicas: int | None = 0
    limit_gpus: int | None = None
    consolidate_after: str = "30s"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterOptions:
    speed: float = 1.0
    """Simulated seconds per wall second for every lifecycle delay."""
    nodepools: tuple[NodePoolConfig, ...] = ()
    record_events: bool = True
    """Write Kubernetes Events (Scheduled, FailedScheduling, ScalingReplicaSet, ...)."""
    karpenter_crds: Path | None = None
    """Directory with karpenter.sh CRD YAML; None = the default path."""
    capacity_buffers: bool = True
    """Serve the CapacityBuffer CRD (autoscaling.x-k8s.io) and keep its chunks' room warm;
    False stands for a cluster without it (the controller must then report, not crash)."""
    pod_port: int = 8000
    """Port of every pod's simulated vLLM server (each pod has its own 127.x address)."""
    default_gpus_per_node: int = 8
    default_boot_s: float = 60.0
    default_load_s: float = 30.0
    container_start_s: float = 1.0
    batch_idle_s: float = 1.0
    batch_max_s: float = 10.0
    seed: int | None = None
    priority_classes: dict[str, int] = field(default_factory=lambda: {"surgescale-headroom": -10})
    full_gc_every_s: float | None = None
    """If set: no automatic full garbage collections while the cluster runs, one every this
    many wall seconds instead (see `gctune`); for processes that own the interpreter."""


def nodepool_manifest(cfg: NodePoolConfig) -> Obj:
    spec: dict[str, Any] = {
        "template": {
            "metadata": {"labels": {"surgescale.io/pool": cfg.name}},
            "spec": {
                "nodeClassRef": {
                    "group": "karpenter.kwok.sh",
                    "kind": "KWOKNodeClass",
                    "name": "default",
                },
                "requirements": [
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]}
                ],
            },
        },
    }
    if cfg.replicas is not None:
        spec["replicas"] = cfg.replicas
    else:
        spec["disruption"] = {
            "consolidationPolicy": "WhenEmpty",
            "consolidateAfter": cfg.consolidate_after,
        }
    if cfg.limit_gpus is not None:
        spec["limits"] = {"nvidia.com/gpu": str(cfg.limit_gpus)}
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {
            "name": cfg.name,
            # Pools made with the cluster stand for pools an admin set aside for surgescale: they
            # opt in to being scaled by it (the controller refuses targets without this label).
            "labels": {"surgescale.io/scalable": "true"},
            "annotations": {
                "surgescale.io/gpus-per-node": str(cfg.gpus_per_node),
                "surgescale.io/boot-seconds": str(cfg.boot_seconds),
            },
        },
        "spec": spec,
    }


class RunningCluster:
    """A started simulated cluster."""

    def __init__(
        self,
        *,
        options: ClusterOptions,
        ctx: ApiContext,
        clock: SimClock,
        runner: web.AppRunner,
        url: str,
        parts: list[Any],
    ) -> None:
        self.options = options
        self.ctx = ctx
        self.clock = clock
        self.url = url
        self._runner = runner
        self._parts = parts
        self.kubelet: Kubelet = next(p for p in parts if isinstance(p, Kubelet))
        self.karpenter: Karpenter = next(p for p in parts if isinstance(p, Karpenter))
        self.scheduler: Scheduler = next(p for p in parts if isinstance(p, Scheduler))

    @property
    def store(self) -> Store:
        return self.ctx.store

    @property
    def registry(self) -> Registry:
        return self.ctx.registry

    @property
    def speed(self) -> float:
        return self.clock.speed

    def resource(self, group: str, version: str, plural: str) -> ResourceType:
        return self.registry.require(group, version, plural)

    def write_kubeconfig(self, path: str | Path, *, namespace: str = "default") -> Path:
        """Write a kubeconfig whose current context points at this server."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "surgescale-sim", "cluster": {"server": self.url}}],
            "users": [{"name": "surgescale-sim", "user": {"token": "sim"}}],
            "contexts": [
                {
                    "name": "surgescale-sim",
                    "context": {
                        "cluster": "surgescale-sim",
                        "user": "surgescale-sim",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "surgescale-sim",
        }
        target.write_text(yaml.safe_dump(config, sort_keys=False))
        return target

    async def stop(self, timeout: float = 5.0) -> None:
        """Close watches, stop controllers and pods, close the HTTP server (bounded)."""
        self.ctx.store.close_watchers()

        async def _stop_all() -> None:
            for part in self._parts:
                with contextlib.suppress(Exception):
                    await part.stop()
            await self._runner.cleanup()

        try:
            await asyncio.wait_for(_stop_all(), timeout)
        except TimeoutError:
            log.warning("simulated cluster did not stop within %.1fs", timeout)


def _install_basics(ctx: ApiContext, options: ClusterOptions, crd_dir: Path) -> None:
    reg, store = ctx.registry, ctx.store
    ns_rt = reg.require("", "v1", "namespaces")
    for ns in ("default", "kube-system", "kube-node-lease", "kube-public"):
        obj: Obj = {"metadata": {"name": ns}}
        ctx.admit(ns_rt, obj, None)
        store.create(ns_rt, obj)
    pc_rt = reg.require("scheduling.k8s.io", "v1", "priorityclasses")
    for name, value in options.priority_classes.items():
        store.create(
            pc_rt,
            {
                "metadata": {"name": name},
                "value": value,
                "preemptionPolicy": "Never" if value < 0 else "PreemptLowerPriority",
                "description": "surgescale simulated priority class",
            },
        )
    crd_rt = reg.require("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    crds = load_crd_files(crd_dir)
    if options.capacity_buffers:
        path = buffer_crd_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"CapacityBuffer CRD not found at {path}: set SURGESCALE_KARPENTER_AWS_CRDS to "
                f"the directory holding {BUFFER_CRD_FILE}, or run without capacity buffers"
            )
        crds += load_crd_files(path.parent, pattern=BUFFER_CRD_FILE)
    for crd in crds:
        ctx.admit(crd_rt, crd, None)
        store.create(crd_rt, crd)
    pool_rt = reg.require("karpenter.sh", "v1", "nodepools")
    for cfg in options.nodepools:
        pool = nodepool_manifest(cfg)
        ctx.admit(pool_rt, pool, None)
        store.create(pool_rt, pool)


async def start_cluster(
    options: ClusterOptions, *, host: str = "127.0.0.1", port: int = 0
) -> RunningCluster:
    """Start the simulated API server and its lifecycles; see the module docstring."""
    crd_dir = options.karpenter_crds or default_crd_dir()
    if not crd_dir.is_dir():
        raise FileNotFoundError(
            f"Karpenter CRDs not found at {crd_dir}: pass --karpenter-crds or set "
            "SURGESCALE_KARPENTER_CRDS to the directory holding karpenter.sh_nodepools.yaml"
        )
    clock = SimClock(options.speed)
    clock.now()
    registry = Registry()
    store = Store(registry, seed=options.seed)
    ctx = ApiContext(registry=registry, store=store)
    ctx.admission.append(Admission(store))
    crds = CrdController(registry, store)
    namespaces = NamespaceController(registry, store)
    workloads = WorkloadControllers(registry, store, ctx.admit)
    scheduler = Scheduler(registry, store)
    kubelet = Kubelet(
        registry,
        store,
        clock,
        port=options.pod_port,
        default_load_s=options.default_load_s,
        container_start_s=options.container_start_s,
    )
    endpoints = EndpointSliceController(registry, store)
    buffers = CapacityBuffers(registry, store)
    _install_basics(ctx, options, crd_dir)
    karpenter = Karpenter(
        registry,
        store,
        clock,
        default_gpus_per_node=options.default_gpus_per_node,
        default_boot_s=options.default_boot_s,
        batch_idle_s=options.batch_idle_s,
        batch_max_s=options.batch_max_s,
    )
    for pool in store.items(registry.require("karpenter.sh", "v1", "nodepools")):
        karpenter.pools.mark(pool["metadata"]["name"])
    karpenter.watch_buffers(buffers)
    parts: list[Any] = [workloads, scheduler, endpoints, buffers, karpenter, kubelet]
    recorder = EventRecorder(registry, store, enabled=options.record_events)
    for part in (workloads, scheduler, karpenter, kubelet):
        part.events = recorder
    if options.full_gc_every_s is not None:
        parts.append(FullGcPolicy(options.full_gc_every_s))
    for part in parts:
        part.start() if hasattr(part, "start") else None
    del crds, namespaces  # they live on as store subscribers
    app = build_app(ctx)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = port
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            bound = int(addr[1])
            break
    url = f"http://{host}:{bound}"
    ctx.server_address = f"{host}:{bound}"
    return RunningCluster(
        options=options, ctx=ctx, clock=clock, runner=runner, url=url, parts=parts
    )
