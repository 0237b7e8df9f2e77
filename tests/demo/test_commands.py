"""What each arm runs: the children's command lines and the KEDA loop's settings (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.demo import commands
from sim.demo.objects import ModelSetup
from sim.demo.stack import DemoConfig

CONFIG = DemoConfig(speed=10.0, redis_url="redis://127.0.0.1:1/0")
SETUP = ModelSetup(pod_port=4321)
KC = Path("/tmp/kc")


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_ours_gets_a_static_pool_and_a_capped_gateway() -> None:
    cluster = commands.cluster_argv(CONFIG, SETUP, ours=True, port=1, kubeconfig=KC)
    assert _value(cluster, "--nodepool") == "gpu:8:120:1"  # one node for the first replica
    assert "--dynamic-nodepool" not in cluster
    assert _value(cluster, "--speed") == "10"
    assert _value(cluster, "--pod-port") == "4321"
    assert (Path(_value(cluster, "--karpenter-crds")) / "karpenter.sh_nodepools.yaml").is_file()
    gateway = commands.gateway_argv(CONFIG, SETUP, ours=True, port=2, kubeconfig=KC, prefix="p")
    assert _value(gateway, "--pod-concurrency") == str(SETUP.max_num_seqs)
    assert _value(gateway, "--events-prefix") == "p"


def test_keda_gets_karpenter_provisioning_and_a_plain_service() -> None:
    cluster = commands.cluster_argv(CONFIG, SETUP, ours=False, port=1, kubeconfig=KC)
    assert _value(cluster, "--dynamic-nodepool").startswith("gpu:8:120")
    assert "--nodepool" not in cluster
    gateway = commands.gateway_argv(CONFIG, SETUP, ours=False, port=2, kubeconfig=KC, prefix="p")
    assert int(_value(gateway, "--pod-concurrency")) >= 10_000


@pytest.mark.parametrize(("speed", "window"), [(1.0, 60.0), (10.0, 6.0), (30.0, 5.0)])
def test_controller_long_window_follows_the_speed(speed: float, window: float) -> None:
    assert commands.controller_long_window_s(speed) == window
    argv = commands.controller_argv(
        DemoConfig(speed=speed), SETUP, port=3, kubeconfig=KC, prefix="p"
    )
    assert float(_value(argv, "--long-window-s")) == window
    assert _value(argv, "--stream-prefix") == "p"


def test_baseline_spec_takes_the_model_bounds_and_the_speed() -> None:
    spec = commands.baseline_spec(CONFIG, SETUP)
    assert (spec.min_replicas, spec.max_replicas) == (SETUP.min_replicas, SETUP.max_replicas)
    assert spec.threshold_s == SETUP.slo_s
    assert spec.hpa_sync_s == pytest.approx(1.5)
    assert spec.scale_down_stabilization_s == pytest.approx(30.0)


@pytest.mark.parametrize(
    ("arm", "dispatch"),
    [("surgescale", "deadline"), ("keda", "deadline"), ("surgescale-fifo", "fifo")],
)
def test_each_arm_gets_its_dispatch_order_and_the_demo_slo(arm: str, dispatch: str) -> None:
    from gateway.cli import settings_from_args
    from sim.demo.stack import Arm

    which = Arm(arm)
    argv = commands.gateway_argv(
        CONFIG, SETUP, ours=which.ours, dispatch=which.dispatch, port=2, kubeconfig=KC, prefix="p"
    )
    assert _value(argv, "--dispatch") == dispatch
    # The gateway accepts exactly these flags and reads the SLO the report judges by.
    flags = argv[argv.index("gateway") + 1 :]
    settings = settings_from_args(flags)
    slo = settings.slo_for(SETUP.model)
    assert slo.dispatch.value == dispatch
    assert slo.ttft_base_s == SETUP.slo_s
    assert slo.late_max_wait_s == CONFIG.late_max_wait_s
