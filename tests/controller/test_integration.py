"""The controller against the simulated cluster (real HTTP via kubernetes_asyncio) and real Redis.

Faults are injected through the simulated API server's admission chain (its extension point for
write-time checks), so the controller sees real 503 and 409 responses over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from controller.loop import Controller
from sim.cluster import errors as sim_errors
from tests.controller.conftest import NS, Gateway, Sim, deployment, eventually
from tests.waiting import await_chain, wait_until


async def _ready_leader(ctl: Controller, gw: Gateway) -> None:
    async def ready() -> bool:
        return (
            ctl.health.ready()[0] and ctl.is_leader and bool(ctl.consumer and ctl.consumer.streams)
        )

    await eventually(ready, what="controller ready, leading and reading the model's stream")
    await wait_until(
        lambda: ctl.consumer and ctl.consumer.stats.acked >= 2, what="2 snapshots handled"
    )


async def test_load_step_scales_the_deployment_and_the_nodepool_follows(
    sim: Sim, gateway_factory: Callable[[], Gateway]
) -> None:
    await sim.create_model("llama", replicas=1)
    ctl = await sim.controller("solo")
    async with gateway_factory() as gw:
        await _ready_leader(ctl, gw)
        assert await sim.replicas("llama") == 1  # idle: nothing to do
        gw.enqueue(40)  # 40 queued, prior 8 req/s per replica, SLO 1 s -> 5 replicas (+1 for rate)

        async def scaled() -> int:
            n = await sim.replicas("llama")
            return n if n > 1 else 0

        replicas = await eventually(scaled, what="a scale-up PATCH")
        assert replicas == 6  # max replicas: 40/8 = 5 for the queue, plus the arrival rate
        # Nodes were requested with the pods: 6 replicas x 1 GPU / 2 GPUs per node = 3.
        assert await sim.pool_replicas() == 3

        async def nodes_up() -> bool:
            return await sim.ready_nodes() == 3

        await eventually(nodes_up, timeout=20.0, what="the NodePool's nodes to become Ready")

        async def status_written() -> dict[str, Any] | None:
            status = await sim.scaler_status("llama")
            # The decision can be written before the scale PATCH lands (and its time with it).
            done = status.get("desiredReplicas") == 6 and "lastScaleReason" in status
            return status if done else None

        status = await eventually(status_written, what="status with desiredReplicas")
        assert status["desiredNodes"] == 3
        assert status["queueDepth"] >= 40
        assert status["lastScaleReason"].startswith("ScaleUp: ")
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        assert conditions["SpecValid"] == "True"
        reasons = [r for r, _ in await sim.events("llama")]
        assert "ScaledUp" in reasons
        assert "NodesScaled" in reasons
    metrics = await _scrape(ctl)
    assert (
        metrics[
            'surgescale_controller_decision_latency_seconds_count{direction="up",model="llama3-8b"}'
        ]
        >= 1
    )
    assert metrics['surgescale_controller_desired_replicas{model="llama3-8b"}'] == 6
    assert metrics['surgescale_controller_queue_depth{model="llama3-8b"}'] >= 40
    assert metrics["surgescale_controller_leader"] == 1
    # A single Redis: reads name only the streams keyspace notifications said had changed.
    assert metrics["surgescale_controller_stream_notifications"] == 1


async def test_invalid_scaler_gets_a_condition_and_the_others_keep_working(sim: Sim) -> None:
    await sim.create_model("good", replicas=1)
    # Valid against the CRD schema (the server accepts it) but not against the code's rules.
    await sim.create_model("bad", replicas=1, minReplicas=5, maxReplicas=2)
    ctl = await sim.controller("solo")

    async def bad_condition() -> dict[str, Any] | None:
        status = await sim.scaler_status("bad")
        for cond in status.get("conditions") or []:
            if cond["type"] == "SpecValid" and cond["status"] == "False":
                return dict(cond)
        return None

    cond = await eventually(bad_condition, what="SpecValid=False on the invalid scaler")
    assert cond["reason"] == "InvalidSpec"
    assert "minReplicas (5) exceeds maxReplicas (2)" in cond["message"]
    assert cond["message"].startswith("spec: ")

    async def warned() -> bool:
        return any(r == "InvalidSpec" for r, _ in await sim.events("bad"))

    await eventually(warned, what="a Warning event for the invalid spec")

    async def good_ok() -> bool:
        status = await sim.scaler_status("good")
        return any(
            c["type"] == "SpecValid" and c["status"] == "True"
            for c in status.get("conditions") or []
        )

    await eventually(good_ok, what="the valid scaler to be accepted")
    assert ctl.health.live()[0]
    assert await sim.replicas("bad") == 1  # never touched

    # Fixing the spec clears the condition.
    await sim.custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
        "surgescale.io",
        "v1alpha1",
        NS,
        "inferencescalers",
        "bad",
        {"spec": {"minReplicas": 1}},
        _content_type="application/merge-patch+json",
    )

    async def fixed() -> bool:
        status = await sim.scaler_status("bad")
        return any(
            c["type"] == "SpecValid" and c["status"] == "True"
            for c in status.get("conditions") or []
        )

    await eventually(fixed, what="SpecValid=True after the fix")


class FaultInjector:
    """An admission hook that fails the next writes of one Deployment's replicas."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.plan: list[Exception] = []
        self.seen: list[int] = []

    def __call__(self, rt: Any, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if rt.kind != "Deployment" or old is None or obj["metadata"].get("name") != self.name:
            return
        new_r = (obj.get("spec") or {}).get("replicas")
        if new_r == (old.get("spec") or {}).get("replicas"):
            return
        self.seen.append(int(new_r or 0))
        if self.plan:
            raise self.plan.pop(0)


async def test_api_5xx_and_409_are_retried_until_the_scale_lands(
    sim: Sim, gateway_factory: Callable[[], Gateway]
) -> None:
    await sim.create_model("llama", replicas=1)
    faults = FaultInjector("llama")
    faults.plan = [
        sim_errors.ApiError(503, "ServiceUnavailable", "injected: etcd is unhappy"),
        sim_errors.ApiError(500, "InternalError", "injected: internal error"),
        sim_errors.conflict("deployments", "llama", "apps"),
    ]
    sim.cluster.ctx.admission.append(faults)
    ctl = await sim.controller("solo")
    async with gateway_factory() as gw:
        await _ready_leader(ctl, gw)
        gw.enqueue(40)

        async def landed() -> bool:
            return await sim.replicas("llama") == 6

        await eventually(landed, timeout=10.0, what="the scale to land after the faults")
    assert ctl.actuator is not None
    assert ctl.actuator.stats.retries >= 2
    assert ctl.actuator.stats.conflicts == 1
    assert faults.plan == []
    assert faults.seen[-1] == 6
    assert len(faults.seen) == 4  # 503, 500, 409, then the write that stuck: no extra writes


async def test_leader_failover_standby_takes_over_and_decides_at_once(
    sim: Sim, gateway_factory: Callable[[], Gateway]
) -> None:
    await sim.create_model("llama", replicas=1)
    first = await sim.controller("first")
    async with gateway_factory() as gw:
        await _ready_leader(first, gw)
        second = await sim.controller("second")

        async def standby_ready() -> bool:
            return second.health.ready()[0] and bool(second.consumer and second.consumer.streams)

        await eventually(standby_ready, what="the standby to be ready")
        assert not second.is_leader
        # The leader scales; the standby sees the same events and never writes.
        gw.enqueue(20)

        async def scaled() -> int:
            return await sim.replicas("llama")

        await eventually(lambda: _at_least(sim, "llama", 2), what="first scale-up")
        assert second.actuator is not None
        assert second.actuator.stats.patches == 0
        assert second.store.model("llama3-8b").queue_depth >= 20  # warm state

        # The leader dies without releasing its Lease (tasks cancelled, nothing written).
        await _kill(first)
        loop = asyncio.get_running_loop()
        died = loop.time()

        async def took_over() -> bool:
            return second.is_leader

        await eventually(took_over, timeout=10.0, what="the standby to acquire the Lease")
        assert loop.time() - died >= 1.0  # it waited for the Lease to expire
        before = await sim.replicas("llama")
        gw.enqueue(30)
        await eventually(lambda: _at_least(sim, "llama", before + 1), what="new leader to scale")
        assert second.actuator.stats.patches >= 1


async def _scrape(ctl: Controller) -> dict[str, float]:
    """GET /metrics (and the probes) over HTTP; the samples by series name with its labels sorted
    (prometheus_client's parser)."""
    base = f"http://127.0.0.1:{ctl.http_port}"
    async with aiohttp.ClientSession() as http:
        for probe in ("/healthz", "/readyz"):
            async with http.get(base + probe) as resp:
                assert resp.status == 200, (probe, await resp.text())
        async with http.get(base + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    out = {}
    for family in text_string_to_metric_families(text):  # raises on an invalid exposition
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return out


async def _at_least(sim: Sim, name: str, n: int) -> bool:
    return await sim.replicas(name) >= n


async def test_idle_model_scales_to_zero_and_wakes_on_the_first_enqueue(
    sim: Sim, gateway_factory: Callable[[], Gateway]
) -> None:
    await sim.create_model("llama", replicas=2, minReplicas=0, scaleToZero={"idleSeconds": 1.0})
    ctl = await sim.controller("solo")
    async with gateway_factory() as gw:
        await _ready_leader(ctl, gw)

        async def zero() -> bool:
            return await sim.replicas("llama") == 0

        await eventually(zero, timeout=10.0, what="scale to zero after 1 s idle")

        async def no_nodes() -> bool:
            return await sim.pool_replicas() == 0

        # and the nodes go after the pods (at a next evaluation, once the pods' scale landed)
        await eventually(no_nodes, what="the nodes to follow the pods down")
        gw.enqueue(1)

        async def awake() -> bool:
            return await sim.replicas("llama") >= 1

        await eventually(awake, what="instant wake on the first enqueue")
        assert await sim.pool_replicas() >= 1
    reasons = [r for r, _ in await sim.events("llama")]
    assert "ScaledDown" in reasons
    assert "ScaledUp" in reasons


async def test_headroom_strategy_sizes_the_placeholder_deployment(
    sim: Sim, gateway_factory: Callable[[], Gateway]
) -> None:
    await sim.apps.create_namespaced_deployment(NS, deployment("headroom", 0))  # type: ignore[arg-type]
    await sim.create_model(
        "llama",
        replicas=1,
        capacity={
            "strategy": "Headroom",
            "headroomDeploymentRef": {"name": "headroom"},
            "gpusPerReplica": 1,
            "gpusPerNode": 2,
            "headroomReplicas": 1,
        },
    )
    ctl = await sim.controller("solo")
    async with gateway_factory() as gw:
        await _ready_leader(ctl, gw)
        # Idle at 1 replica: nodes = ceil((1 + 1) / 2) = 1, whose spare slot holds 1 placeholder.
        await eventually(lambda: _equals(sim, "headroom", 1), what="one placeholder when idle")
        gw.enqueue(40)
        await eventually(lambda: _equals(sim, "llama", 6), what="scale-up to 6")
        # 6 replicas + 1 headroom -> 4 nodes = 8 slots, 2 of them placeholders.
        await eventually(lambda: _equals(sim, "headroom", 2), what="placeholders for 4 nodes")
    reasons = [r for r, _ in await sim.events("llama")]
    assert "HeadroomScaled" in reasons


async def _equals(sim: Sim, name: str, n: int) -> bool:
    return await sim.replicas(name) == n


async def _kill(ctl: Controller) -> None:
    """As a crash: every task of the controller stops, the Lease is not released."""
    for task in ctl._tasks:
        task.cancel()
    _, pending = await asyncio.wait(ctl._tasks, timeout=10.0)
    assert not pending, "tasks that did not stop when cancelled: " + "; ".join(
        f"{t.get_name()} at {await_chain(t)}" for t in pending
    )
    if ctl.actuator is not None:
        await ctl.actuator.close(0.0)


async def test_a_new_leader_goes_straight_to_target(
    sim: Sim, gateway_factory: Callable[[], Gateway]
) -> None:
    """Regression (issue 15): after the leader died, the standby took the Lease and then climbed
    one replica per second (2, 3, 4, 5, 6) although it had computed the target as a standby. Its
    first write as leader must be the target."""
    await sim.create_model("llama", replicas=1)
    writes = FaultInjector("llama")  # no faults planned: records every replica change
    sim.cluster.ctx.admission.append(writes)
    first = await sim.controller("first")
    async with gateway_factory() as gw:
        await _ready_leader(first, gw)
        second = await sim.controller("second")

        async def standby_ready() -> bool:
            return second.health.ready()[0] and bool(second.consumer and second.consumer.streams)

        await eventually(standby_ready, what="the standby to be ready")
        await _kill(first)
        loop = asyncio.get_running_loop()
        died = loop.time()
        gw.enqueue(40)  # demand arrives while no one leads: the standby decides, cannot write

        async def took_over() -> bool:
            return second.is_leader

        await eventually(took_over, timeout=10.0, what="the standby to acquire the Lease")
        cfg = second.config
        assert loop.time() - died <= cfg.lease_duration_s + 2 * cfg.lease_retry_s + 1.0
        await eventually(lambda: _equals(sim, "llama", 6), what="the target")
    assert writes.seen[0] == 6, writes.seen  # straight to target, no climb
