"""`controller.report.Reporter`: scale Events are fenced on ownership when their turn comes (a
process that stopped leading between its scale and the Event drops it), against the simulated
API server over real HTTP."""

from __future__ import annotations

import asyncio

from controller import crd
from controller.actuator import ScaleTarget, TargetKind
from controller.kube import KubeWriter
from controller.report import Reporter
from controller.scaler import Scaler
from tests.controller.conftest import NS, Sim


def _scaler(name: str) -> Scaler:
    spec = crd.parse_spec({"model": name, "scaleTargetRef": {"name": name}, "maxReplicas": 8})
    return Scaler(key=(NS, name), spec=spec)


async def test_a_scale_event_is_dropped_when_ownership_ended_before_its_turn(sim: Sim) -> None:
    owned = {"kept": True, "lost": True}
    writer = KubeWriter(
        sim.api, group=crd.GROUP, version=crd.VERSION, plural=crd.PLURAL, kind=crd.KIND
    )
    reporter = Reporter(writer, owns=lambda s: owned[s.key[1]])
    kept, lost = _scaler("kept"), _scaler("lost")
    reporter.scaled(kept, ScaleTarget(TargetKind.DEPLOYMENT, "kept", NS), 1, 3, "queue")
    reporter.scaled(lost, ScaleTarget(TargetKind.DEPLOYMENT, "lost", NS), 1, 3, "queue")
    owned["lost"] = False  # leadership ends after the scale, before the Event's turn
    await reporter.close(timeout=5.0)
    assert [reason for reason, _ in await sim.events("kept")] == ["ScaledUp"]
    assert await sim.events("lost") == []
    assert reporter.dropped_events == 1


async def test_without_an_ownership_check_every_scale_event_is_sent(sim: Sim) -> None:
    writer = KubeWriter(
        sim.api, group=crd.GROUP, version=crd.VERSION, plural=crd.PLURAL, kind=crd.KIND
    )
    reporter = Reporter(writer)
    scaler = _scaler("m")
    reporter.scaled(scaler, ScaleTarget(TargetKind.DEPLOYMENT, "m", NS), 4, 2, "idle")
    await asyncio.sleep(0)
    await reporter.close(timeout=5.0)
    assert [reason for reason, _ in await sim.events("m")] == ["ScaledDown"]
    assert reporter.dropped_events == 0
