"""Actuation and watches under API trouble, over real HTTP against the simulated API server with
faults injected by its fault hook (`sim.cluster.faults`): 429 with long, infinite or negative
Retry-After, a slow server, hung (half-open) requests (issue 15)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from kubernetes_asyncio import client

from controller.kube import Informer, parse_retry_after
from controller.objects import Deployment
from sim.cluster.faults import FaultRule
from tests.controller.conftest import NS, Gateway, Sim, deployment, eventually
from tests.controller.test_integration import _equals, _ready_leader
from tests.waiting import wait_until

SCALE = "/deployments/llama/scale"


async def test_retry_after_30_does_not_hold_back_a_newer_decision(
    sim: Sim, gateway_factory: Callable[[], Gateway]
) -> None:
    """Regression: one 429 with `Retry-After: 30` held a newer, larger decision back for 30 s."""
    await sim.create_model("llama", replicas=1)
    ctl = await sim.controller("solo")
    rule = sim.cluster.ctx.faults.add(
        FaultRule(path=SCALE, method="PATCH", status=429, retry_after="30")
    )
    async with gateway_factory() as gw:
        await _ready_leader(ctl, gw)
        gw.enqueue(8)  # a small scale-up: refused with Retry-After: 30
        await eventually(lambda: _hit(rule), timeout=5.0, what="the 429")
        gw.enqueue(40)  # a newer, larger decision: written at once
        await eventually(lambda: _equals(sim, "llama", 6), timeout=5.0, what="the newer scale")


@pytest.mark.parametrize("retry_after", ["inf", "nan", "1e400"])
async def test_an_unbounded_retry_after_does_not_wait_forever(
    sim: Sim, gateway_factory: Callable[[], Gateway], retry_after: str
) -> None:
    await sim.create_model("llama", replicas=1)
    ctl = await sim.controller("solo")
    rule = sim.cluster.ctx.faults.add(
        FaultRule(path=SCALE, method="PATCH", status=429, retry_after=retry_after, times=2)
    )
    async with gateway_factory() as gw:
        await _ready_leader(ctl, gw)
        gw.enqueue(40)
        await eventually(lambda: _equals(sim, "llama", 6), timeout=5.0, what="the scale")
    assert rule.hits == 2


async def test_a_negative_retry_after_does_not_spin(
    sim: Sim, gateway_factory: Callable[[], Gateway]
) -> None:
    await sim.create_model("llama", replicas=1)
    ctl = await sim.controller("solo")
    rule = sim.cluster.ctx.faults.add(
        FaultRule(path=SCALE, method="PATCH", status=429, retry_after="-1", times=None)
    )
    async with gateway_factory() as gw:
        await _ready_leader(ctl, gw)
        gw.enqueue(40)
        await eventually(lambda: _hit(rule), timeout=5.0, what="the first 429")
        await asyncio.sleep(1.0)
        hits = rule.hits
        sim.cluster.ctx.faults.clear()
        await eventually(lambda: _equals(sim, "llama", 6), timeout=8.0, what="the scale")
    assert hits <= 15, f"{hits} PATCHes in about 1 s: the actuator spins"


async def test_5xx_slow_and_hung_patches_are_retried_until_the_scale_lands(
    sim: Sim, gateway_factory: Callable[[], Gateway]
) -> None:
    await sim.create_model("llama", replicas=1)
    ctl = await sim.controller("solo")
    faults = sim.cluster.ctx.faults
    for rule in (
        FaultRule(path=SCALE, method="PATCH", status=503, retry_after="0"),
        FaultRule(path=SCALE, method="PATCH", status=500),
        FaultRule(path=SCALE, method="PATCH", hang=True),  # half-open: never answered
        FaultRule(path=SCALE, method="PATCH", delay_s=30.0),  # a server too slow to wait for
    ):
        faults.add(rule)
    async with gateway_factory() as gw:
        await _ready_leader(ctl, gw)
        gw.enqueue(40)
        await eventually(lambda: _equals(sim, "llama", 6), timeout=15.0, what="the scale")
    assert [r.hits for r in faults.rules] == [1, 1, 1, 1]
    assert ctl.actuator is not None
    assert ctl.actuator.stats.retries >= 4


@pytest.mark.parametrize("watch", [True, False], ids=["hung-watch", "hung-list"])
async def test_an_informer_recovers_from_a_hung_connection(sim: Sim, watch: bool) -> None:
    """Regression: informers had no client timeout, so a half-open watch stopped them for good."""
    seen: list[tuple[str, str]] = []
    apps = client.AppsV1Api(sim.api)
    informer: Informer[Deployment] = Informer(
        "deployments",
        apps.list_namespaced_deployment,
        NS,
        handler=lambda kind, obj: seen.append((kind, Informer.key(obj)[1])),
        watch_timeout_s=1,
        relist_s=0.5,  # the hung-list case needs a list after the first
        request_timeout_s=1.0,
    )
    task = asyncio.create_task(informer.run())
    try:
        await eventually(_synced(informer), what="the first list")
        hang = sim.cluster.ctx.faults.add(
            FaultRule(path="/deployments", method="GET", watch=watch, hang=True, times=2)
        )
        # the current watch ends (1 s) and the next request hangs
        await wait_until(lambda: hang.hits >= 1, what="a request of the informer's to hang")
        await apps.create_namespaced_deployment(NS, deployment("late", 1))  # type: ignore[arg-type]

        async def saw_it() -> bool:
            return ("ADDED", "late") in seen or ("MODIFIED", "late") in seen

        await eventually(saw_it, timeout=10.0, what="the informer to see the new Deployment")
        assert sim.cluster.ctx.faults.rules[0].hits >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("30", 30.0),
        ("0", 0.0),
        (" 2.5 ", 2.5),
        ("inf", None),
        ("-1", None),
        ("nan", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: Any, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now=now) == 7
    assert parse_retry_after(format_datetime(now - timedelta(seconds=7), usegmt=True), now=now) == 0


async def _hit(rule: FaultRule) -> bool:
    return rule.hits > 0


def _synced(informer: Informer[Deployment]) -> Callable[[], Any]:
    async def check() -> bool:
        return informer.synced.is_set()

    return check
