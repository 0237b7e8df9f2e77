"""No confused deputy: an InferenceScaler may only make the controller scale Deployments and
NodePools that opted in with the label `surgescale.io/scalable: "true"` (issue 15)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.controller.conftest import (
    NS,
    OPT_IN,
    Gateway,
    Sim,
    deployment,
    evaluations,
    eventually,
)
from tests.controller.test_integration import _equals, _ready_leader
from tests.waiting import wait_until

MERGE: dict[str, Any] = {"_content_type": "application/merge-patch+json"}


async def _condition(sim: Sim, name: str) -> dict[str, Any] | None:
    for cond in (await sim.scaler_status(name)).get("conditions") or []:
        if cond["type"] == "TargetAllowed":
            return dict(cond)
    return None


async def test_a_deployment_that_did_not_opt_in_is_never_scaled(
    sim: Sim, gateway_factory: Callable[[], Gateway]
) -> None:
    body = deployment("other", 1)
    del body["metadata"]["labels"]  # someone else's workload in the same namespace
    await sim.apps.create_namespaced_deployment(NS, body)  # type: ignore[arg-type]
    await sim.custom.create_namespaced_custom_object(
        "surgescale.io",
        "v1alpha1",
        NS,
        "inferencescalers",
        {
            "apiVersion": "surgescale.io/v1alpha1",
            "kind": "InferenceScaler",
            "metadata": {"name": "other", "namespace": NS},
            "spec": {"model": "llama3-8b", "scaleTargetRef": {"name": "other"}, "maxReplicas": 6},
        },
    )
    ctl = await sim.controller("solo")
    async with gateway_factory() as gw:
        await _ready_leader(ctl, gw)
        gw.enqueue(40)  # would scale to 6

        async def refused() -> dict[str, Any] | None:
            cond = await _condition(sim, "other")
            return cond if cond and cond["status"] == "False" else None

        cond = await eventually(refused, what="TargetAllowed=False on the scaler")
        assert cond["reason"] == "TargetNotOptedIn"
        assert "Deployment default/other" in cond["message"]
        assert OPT_IN in cond["message"]
        seen = evaluations(ctl)
        await wait_until(lambda: evaluations(ctl) >= seen + 5, what="5 more evaluations")
        assert await sim.replicas("other") == 1
        assert ctl.actuator is not None
        assert ctl.actuator.stats.patches == 0
        # The owner opts in: the controller takes it from there.
        await sim.apps.patch_namespaced_deployment(
            "other", NS, {"metadata": {"labels": {OPT_IN: "true"}}}, **MERGE
        )
        await eventually(lambda: _equals(sim, "other", 6), timeout=5.0, what="the scale")

        async def allowed() -> bool:
            cond = await _condition(sim, "other")
            return bool(cond and cond["status"] == "True")

        await eventually(allowed, what="TargetAllowed=True after the opt-in")


async def test_a_nodepool_that_did_not_opt_in_is_never_scaled(
    sim: Sim, gateway_factory: Callable[[], Gateway]
) -> None:
    await sim.custom.patch_cluster_custom_object(
        "karpenter.sh", "v1", "nodepools", "gpu", {"metadata": {"labels": {OPT_IN: None}}}, **MERGE
    )
    await sim.create_model("llama", replicas=1)  # the Deployment opted in, its pool did not
    before = await sim.pool_replicas()
    ctl = await sim.controller("solo")
    async with gateway_factory() as gw:
        await _ready_leader(ctl, gw)
        gw.enqueue(40)

        async def refused() -> dict[str, Any] | None:
            cond = await _condition(sim, "llama")
            return cond if cond and cond["status"] == "False" else None

        cond = await eventually(refused, what="TargetAllowed=False on the scaler")
        assert "NodePool gpu" in cond["message"]
        seen = evaluations(ctl)
        await wait_until(lambda: evaluations(ctl) >= seen + 5, what="5 more evaluations")
        assert await sim.pool_replicas() == before
        assert await sim.replicas("llama") == 1
