"""The command lines of the demo's children (pure): what each arm runs and with which settings.

One function per child builds its `surgescale ...` argv from the run's configuration, so the
differences between the arms sit in one readable place: under the KEDA loop the NodePool is
dynamic (Karpenter provisions for Pending pods) and the gateway has no per-pod cap (a plain
Service, vLLM queues internally); under ours the NodePool is static (the controller scales it)
and the gateway caps each pod at its `max_num_seqs`. Every gateway orders its queue by deadline
(the `fifo` arm: by arrival) with the demo's TTFT SLO. Every period is divided by the speed factor.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from sim.baselines.hpa import KedaSpec
from sim.baselines.keda_live import BaselineTarget
from sim.datafiles import data_dir
from sim.demo.objects import ModelSetup
from sim.demo.procs import surgescale_argv

if TYPE_CHECKING:
    from sim.demo.stack import DemoConfig

UNCAPPED = 100_000
"""The gateway's per-pod cap under the KEDA loop: none to speak of."""


def karpenter_crds() -> Path:
    """`$SURGESCALE_KARPENTER_CRDS`, the shared data beside the repo, or the packaged copy."""
    return data_dir("karpenter-crds", "SURGESCALE_KARPENTER_CRDS")


def cluster_argv(
    config: DemoConfig, setup: ModelSetup, *, ours: bool, port: int, kubeconfig: Path
) -> list[str]:
    if ours:
        pool = [
            "--nodepool",
            f"{setup.nodepool}:{setup.gpus_per_node}:{setup.node_boot_s:g}:{config.initial_nodes}",
        ]
    else:
        pool = [
            "--dynamic-nodepool",
            f"{setup.nodepool}:{setup.gpus_per_node}:{setup.node_boot_s:g}:30s",
        ]
    return surgescale_argv(
        "sim", "cluster",
        "--port", str(port),
        "--speed", f"{config.speed:g}",
        "--kubeconfig", str(kubeconfig),
        "--pod-port", str(setup.pod_port),
        "--karpenter-crds", str(karpenter_crds()),
        "--log-level", "WARNING",
        *pool,
    )  # fmt: skip


def gateway_argv(
    config: DemoConfig,
    setup: ModelSetup,
    *,
    ours: bool,
    dispatch: str = "deadline",
    port: int,
    kubeconfig: Path,
    prefix: str,
) -> list[str]:
    cap = (config.ours_pod_concurrency or setup.max_num_seqs) if ours else UNCAPPED
    return surgescale_argv(
        "gateway",
        "--port", str(port),
        "--model", f"{setup.model}={setup.service}",
        "--kubeconfig", str(kubeconfig),
        "--namespace", setup.namespace,
        "--pod-concurrency", str(cap),
        "--redis-url", config.redis_url,
        "--events-prefix", prefix,
        "--max-queue-wait", f"{config.request_timeout_s:g}",
        "--ttft-slo", f"{setup.slo_s:g}",
        "--dispatch", dispatch,
        "--late-max-wait", f"{config.late_max_wait_s:g}",
        "--allow-unauthenticated",  # a local demo on loopback: no API keys on purpose
        "--log-level", "INFO",
    )  # fmt: skip


def controller_long_window_s(speed: float) -> float:
    """The controller's long arrival-rate window: a stabilizer like KEDA's 1 m query window, so
    it is divided by the speed factor too (kept >= 5 s: the window counts in 1 s buckets)."""
    return max(60.0 / speed, 5.0)


def controller_argv(
    config: DemoConfig, setup: ModelSetup, *, port: int, kubeconfig: Path, prefix: str
) -> list[str]:
    return surgescale_argv(
        "controller",
        "--kubeconfig", str(kubeconfig),
        "--redis-url", config.redis_url,
        "--namespace", setup.namespace,
        "--stream-prefix", prefix,
        "--http-host", "127.0.0.1",
        "--http-port", str(port),
        "--long-window-s", f"{controller_long_window_s(config.speed):g}",
        "--log-level", "INFO",
    )  # fmt: skip


def baseline_target(setup: ModelSetup) -> BaselineTarget:
    """What the KEDA loop's ScaledObject points at: the model's Deployment and Service."""
    return BaselineTarget(
        namespace=setup.namespace,
        deployment=setup.deployment,
        service=setup.service,
        model=setup.model,
    )


def baseline_spec(config: DemoConfig, setup: ModelSetup) -> KedaSpec:
    """The KEDA loop's settings: the model's bounds and SLO, periods divided by the speed."""
    return replace(
        config.keda,
        min_replicas=setup.min_replicas,
        max_replicas=setup.max_replicas,
        threshold_s=setup.slo_s,
    ).scaled(config.speed)
