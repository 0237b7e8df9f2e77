"""`controller.counts.CountsCache`: cluster counts kept per scaler while its spec and Deployment
object stay, and computed again as soon as either is replaced (or for NodePool targets, always)."""

from __future__ import annotations

from typing import Any

from controller import crd
from controller.counts import CountsCache
from controller.kube import NODEPOOL_LABEL
from controller.objects import Deployment, Node
from controller.scaler import Scaler

NS = "ns"


def _spec(target: str, **extra: Any) -> crd.InferenceScalerSpec:
    return crd.parse_spec(
        {"model": "m", "scaleTargetRef": {"name": target}, "maxReplicas": 8, **extra}
    )


def _dep(name: str, *, replicas: int, ready: int) -> Deployment:
    obj: dict[str, Any] = {
        "metadata": {"namespace": NS, "name": name},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "readyReplicas": ready},
    }
    return obj  # type: ignore[return-value]


def _node(name: str, *, ready: bool) -> Node:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "labels": {NODEPOOL_LABEL: "gpu"}},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }
    return obj  # type: ignore[return-value]


def test_counts_follow_each_new_deployment_object_and_are_kept_while_it_stays() -> None:
    cache = CountsCache()
    scaler = Scaler(key=(NS, "isc"), spec=_spec("m"))
    deployments = {(NS, "m"): _dep("m", replicas=3, ready=1)}
    first = cache.counts(scaler, deployments=deployments, nodes=[], pools={})
    assert first is not None
    assert (first.ready_replicas, first.starting_replicas) == (1, 2)
    assert cache.counts(scaler, deployments=deployments, nodes=[], pools={}) == first
    assert cache.computed == 1  # the same object: kept
    deployments[(NS, "m")] = _dep("m", replicas=3, ready=3)  # the informer replaces it
    now = cache.counts(scaler, deployments=deployments, nodes=[], pools={})
    assert now is not None
    assert (now.ready_replicas, now.starting_replicas) == (3, 0)
    del deployments[(NS, "m")]
    assert cache.counts(scaler, deployments=deployments, nodes=[], pools={}) is None


def test_a_new_spec_reads_its_own_target() -> None:
    cache = CountsCache()
    scaler = Scaler(key=(NS, "isc"), spec=_spec("a"))
    deployments = {
        (NS, "a"): _dep("a", replicas=1, ready=1),
        (NS, "b"): _dep("b", replicas=5, ready=4),
    }
    before = cache.counts(scaler, deployments=deployments, nodes=[], pools={})
    assert before is not None
    assert before.ready_replicas == 1
    scaler.spec = _spec("b")
    after = cache.counts(scaler, deployments=deployments, nodes=[], pools={})
    assert after is not None
    assert after.ready_replicas == 4
    # Another scaler object under the same name (deleted and created again) is not served
    # the first one's counts.
    again = Scaler(key=(NS, "isc"), spec=_spec("a"))
    other = cache.counts(again, deployments=deployments, nodes=[], pools={})
    assert other is not None
    assert other.ready_replicas == 1


def test_node_pool_counts_follow_the_nodes_under_an_unchanged_deployment() -> None:
    cache = CountsCache()
    pool = {
        "strategy": "StaticNodePool",
        "nodePoolRef": {"name": "gpu"},
        "gpusPerReplica": 1,
        "gpusPerNode": 1,
    }
    scaler = Scaler(key=(NS, "isc"), spec=_spec("m", capacity=pool))
    deployments = {(NS, "m"): _dep("m", replicas=2, ready=1)}
    one = cache.counts(scaler, deployments=deployments, nodes=[_node("n1", ready=False)], pools={})
    assert one is not None
    assert (one.ready_nodes, one.starting_nodes) == (0, 1)
    two = cache.counts(
        scaler,
        deployments=deployments,
        nodes=[_node("n1", ready=True), _node("n2", ready=True)],
        pools={},
    )
    assert two is not None
    assert (two.ready_nodes, two.starting_nodes) == (2, 0)
