"""Leader election on a coordination.k8s.io/v1 Lease in the simulated cluster (real HTTP)."""

from __future__ import annotations

import asyncio

from controller.lease import LeaseElector
from tests.controller.conftest import NS, Sim, eventually


def _elector(sim: Sim, identity: str, changes: list[tuple[str, bool]]) -> LeaseElector:
    return LeaseElector(
        sim.api,
        namespace=NS,
        name="election-test",
        identity=identity,
        lease_duration_s=6.0,
        retry_period_s=0.2,
        on_change=lambda leader: changes.append((identity, leader)),
    )


async def test_one_leader_then_a_clean_handover_on_release(sim: Sim) -> None:
    changes: list[tuple[str, bool]] = []
    a, b = _elector(sim, "a", changes), _elector(sim, "b", changes)
    task_a = asyncio.create_task(a.run())
    try:

        async def a_leads() -> bool:
            return a.is_leader

        await eventually(a_leads, what="a to acquire the free Lease")
        task_b = asyncio.create_task(b.run())
        await asyncio.sleep(1.0)  # several rounds: b must not take a live Lease
        assert a.is_leader
        assert not b.is_leader
        task_a.cancel()
        await asyncio.gather(task_a, return_exceptions=True)
        loop = asyncio.get_running_loop()
        released = loop.time()
        await a.release()

        async def b_leads() -> bool:
            return b.is_leader

        await eventually(b_leads, timeout=10.0, what="b to take over after the release")
        # A released Lease is taken at a next retry, not after the 6 s lease duration.
        assert loop.time() - released < 4.0
        task_b.cancel()
        await asyncio.gather(task_b, return_exceptions=True)
    finally:
        task_a.cancel()
    assert changes == [("a", True), ("a", False), ("b", True)]


async def test_leadership_ends_at_the_renew_deadline_even_without_a_renewal_round(
    sim: Sim,
) -> None:
    """Regression (issue 15): leadership was a flag cleared only by the next campaign round, so a
    paused leader acted as leader when it woke up. It is a deadline judged when asked."""
    fake = {"now": 1000.0}
    elector = LeaseElector(
        sim.api,
        namespace=NS,
        name="fence-test",
        identity="a",
        lease_duration_s=4.0,
        retry_period_s=0.2,
        clock=lambda: fake["now"],
    )
    task = asyncio.create_task(elector.run())
    try:

        async def leads() -> bool:
            return elector.is_leader

        await eventually(leads, what="a to acquire the free Lease")
    finally:
        task.cancel()  # no more rounds: as if the process were stopped here
        await asyncio.gather(task, return_exceptions=True)
    assert elector.renew_deadline_s == 3.8
    assert 0 < elector.remaining() <= 3.8
    fake["now"] += 3.0
    assert elector.remaining() > 0  # still inside the renew deadline
    fake["now"] += 0.9
    assert not elector.is_leader  # past it: no write may go out, though no round ran
    assert elector.remaining() <= 0
