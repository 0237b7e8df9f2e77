"""Scale-down loses no stream: the controller ranks pods by in-flight requests through
`controller.kubernetes.io/pod-deletion-cost` before it patches the scale, and the simulated
ReplicaSet removes the idlest (issue 15). Real HTTP, real Redis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from controller.loop import Controller
from controller.objects import Pod
from controller.pods import (
    DELETION_COST,
    deletion_costs,
    node_first_costs,
    pod_host,
    selector_string,
)
from surgescale.events import EventType
from tests.controller.conftest import NS, Gateway, Sim, eventually
from tests.controller.test_integration import _ready_leader
from tests.manifests.kube import render
from tests.manifests.rbac import Authorizer, RecordingProxy, used_grants


async def _pods(sim: Sim, app: str) -> list[Any]:
    listed = await client.CoreV1Api(sim.api).list_namespaced_pod(NS, label_selector=f"app={app}")
    return [p for p in listed.items if p.metadata.deletion_timestamp is None]


def _ready(pod: Any) -> bool:
    return bool(pod.status.pod_ip) and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
    )


async def test_scale_down_keeps_the_pods_with_streams_in_flight(
    sim: Sim, gateway_factory: Callable[[], Gateway], tmp_path: Path
) -> None:
    await sim.create_model(
        "llama",
        replicas=3,
        scaleDown={"delaySeconds": 3, "maxStep": 2, "periodSeconds": 0},
    )
    # Nodes for the three pods before any controller runs (2 GPUs per node).
    await sim.custom.patch_cluster_custom_object(  # type: ignore[call-arg]
        "karpenter.sh",
        "v1",
        "nodepools",
        "gpu",
        {"spec": {"replicas": 2}},
        _content_type="application/merge-patch+json",
    )

    async def three_ready() -> list[Any] | None:
        pods = await _pods(sim, "llama")
        return pods if len(pods) == 3 and all(_ready(p) for p in pods) else None

    pods = await eventually(three_ready, timeout=20.0, what="three Ready pods")
    # The newest pod is the busiest: the ReplicaSet's own order (newest first) would pick it.
    pods.sort(key=lambda p: (p.metadata.creation_timestamp, p.metadata.name), reverse=True)
    proxy = RecordingProxy(sim.cluster.url)  # what the controller asks the API server for
    await proxy.start()
    kubeconfig = tmp_path / "controller.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(proxy.kubeconfig(NS)))
    try:
        left, ctl = await _scale_down(sim, gateway_factory, pods, kubeconfig)
    finally:
        await proxy.stop()
    busy = pods[0]
    assert left[0].metadata.name == busy.metadata.name
    # the costs go node by node (2 GPUs per node: two of the pods share one), in-flight within
    expected = node_first_costs(
        (p.metadata.name, p.spec.node_name, n) for p, n in zip(pods, (5, 2, 0), strict=True)
    )
    assert (left[0].metadata.annotations or {}).get(DELETION_COST) == str(
        expected[busy.metadata.name]
    )
    assert expected[busy.metadata.name] == max(expected.values())
    assert ctl.deletion_coster is not None
    # one write per pod whose cost is not the default 0
    assert ctl.deletion_coster.writes == sum(1 for c in expected.values() if c)
    # The manifests' RBAC grants every call this made, pods list and patch among them.
    granted = Authorizer.for_service_account(
        render("overlays/dev"), "surgescale-controller", "surgescale"
    ).granted()
    used = used_grants(proxy.calls)
    assert {("", "pods", "list"), ("", "pods", "patch")} <= used
    assert used <= granted, used - granted


async def _scale_down(
    sim: Sim, gateway_factory: Callable[[], Gateway], pods: list[Any], kubeconfig: Path
) -> tuple[list[Any], Controller]:
    busy, some, idle = pods
    async with gateway_factory() as gw:
        ctl = await sim.controller("solo", kubeconfig=kubeconfig)
        await _ready_leader(ctl, gw)  # reading the stream: it sees what follows
        assert await sim.replicas("llama") == 3  # a new leader waits a full delay
        plan = [(busy, 5), (some, 2), (idle, 0)]
        gw.in_flight = sum(count for _, count in plan)
        n = 0
        for pod, count in plan:
            for _ in range(count):
                n += 1
                gw.producer.emit(
                    gw._event(
                        EventType.DISPATCH,
                        request_id=f"d{n}",
                        pod=f"http://{pod.status.pod_ip}:8000",
                    )
                )

        async def down_to_one() -> list[Any] | None:
            left = await _pods(sim, "llama")
            return left if len(left) == 1 and await sim.replicas("llama") == 1 else None

        left = await eventually(down_to_one, timeout=15.0, what="the scale-down to 1")
    await ctl.stop()  # before its proxy goes
    sim.controllers.remove(ctl)
    return left, ctl


def test_deletion_costs_match_pods_by_ip_or_name() -> None:
    pods: list[Pod] = [
        {"metadata": {"name": "a"}, "status": {"podIP": "10.0.0.1"}},
        {"metadata": {"name": "b"}, "status": {"podIP": "10.0.0.2"}},
        {"metadata": {"name": "c"}, "status": {}},
    ]
    in_flight = {"http://10.0.0.1:8000": 3, "10.0.0.1:8001": 1, "c": 2, "http://10.9.9.9:1": 7}
    assert deletion_costs(pods, in_flight) == {"a": 4, "b": 0, "c": 2}


@pytest.mark.parametrize(
    ("ref", "host"),
    [("http://10.0.0.1:8000", "10.0.0.1"), ("10.0.0.1:80", "10.0.0.1"), ("[::1]:80", "::1")],
)
def test_pod_host(ref: str, host: str) -> None:
    assert pod_host(ref) == host


def test_selector_string() -> None:
    assert selector_string({"matchLabels": {"b": "2", "a": "1"}}) == "a=1,b=2"
    assert selector_string({"matchExpressions": [{"key": "a"}]}) is None
    assert selector_string(None) is None


def test_deletion_costs_empty_the_least_busy_node_first() -> None:
    """Two nodes of three pods each: every pod of the node with less in flight costs less than
    any pod of the other, so the ReplicaSet frees a whole node before it thins the busy one (the
    old per-pod cost would have taken the idle pod of the busy node first)."""
    pods: list[Pod] = [
        {"metadata": {"name": f"{node}-{i}"}, "spec": {"nodeName": node}}
        for node in ("n1", "n2")
        for i in range(3)
    ]
    in_flight = {"n1-0": 0, "n1-1": 9, "n1-2": 9, "n2-0": 4, "n2-1": 4, "n2-2": 5}
    costs = deletion_costs(pods, in_flight)
    quiet = [costs[f"n2-{i}"] for i in range(3)]
    busy = [costs[f"n1-{i}"] for i in range(3)]
    assert max(quiet) < min(busy), costs
    assert costs["n2-0"] < costs["n2-2"]  # within the node, the idlest first
    # the order of removals empties n2 before touching n1
    order = sorted(costs, key=costs.__getitem__)
    assert {p[:2] for p in order[:3]} == {"n2"}, order


def test_node_first_costs_tie_on_load_goes_to_the_node_with_fewer_pods() -> None:
    costs = node_first_costs([("a", "x", 1), ("b", "y", 0), ("c", "y", 1)])
    assert costs["a"] < min(costs["b"], costs["c"])
