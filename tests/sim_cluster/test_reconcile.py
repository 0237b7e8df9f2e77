"""The controllers' work-queue helpers: coalescing reconciler and the per-iteration budget."""

from __future__ import annotations

import asyncio
from collections import Counter

from sim.cluster.reconcile import IterationBudget, Reconciler


async def test_budget_spreads_work_over_loop_iterations() -> None:
    budget = IterationBudget(per_iteration=10)
    iteration = 0
    done = asyncio.Event()

    def tick() -> None:
        nonlocal iteration
        iteration += 1
        if not done.is_set():
            asyncio.get_running_loop().call_soon(tick)

    seen: Counter[int] = Counter()

    async def worker() -> None:
        await budget.take()
        seen[iteration] += 1

    asyncio.get_running_loop().call_soon(tick)
    await asyncio.gather(*(worker() for _ in range(35)))
    done.set()
    assert sum(seen.values()) == 35
    assert max(seen.values()) <= 10
    assert len(seen) >= 4


async def test_reconciler_coalesces_bursts() -> None:
    calls: list[str] = []
    rec: Reconciler[str] = Reconciler("t", calls.append)
    rec.start()
    try:
        for _ in range(100):
            rec.mark("a")
        rec.mark("b")
        for _ in range(20):
            await asyncio.sleep(0)
        assert sorted(calls) == ["a", "b"]
    finally:
        await rec.stop()
