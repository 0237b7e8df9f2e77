"""`surgescale.cancel`: a cancel that lands as the awaited thing finishes is kept, not lost."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from surgescale.cancel import checkpoint, wait_for


async def _one_step() -> int:
    return 1


async def _cancel_as_the_inner_finishes(
    waiting: Callable[[Awaitable[int], float], Awaitable[int]],
) -> list[str]:
    """A loop whose every round waits on `waiting(one step, 5 s)`; it is cancelled in the step
    where that one-step inner is scheduled to finish. What happened, round by round."""
    seen: list[str] = []

    async def loop() -> None:
        while len(seen) < 3:
            inner = asyncio.ensure_future(_one_step())  # its step is queued before the cancel
            seen.append(f"got {await waiting(inner, 5.0)}")

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)  # the loop now waits; the inner's first step is scheduled
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        seen.append("cancelled")
    return seen


async def test_wait_for_keeps_a_cancel_that_lands_as_the_inner_finishes() -> None:
    assert await _cancel_as_the_inner_finishes(wait_for) == ["cancelled"]


async def test_checkpoint_honours_a_cancel_an_await_lost() -> None:
    """Python 3.11's `asyncio.wait_for` returns the result here (CPython gh-86296); the loop's
    `checkpoint` still stops it, at most one round later."""

    async def lossy(aw: Awaitable[int], timeout: float) -> int:
        result = await asyncio.wait_for(aw, timeout)
        checkpoint()
        return result

    seen = await _cancel_as_the_inner_finishes(lossy)
    assert seen[-1] == "cancelled", seen
    assert len(seen) <= 2, seen


async def test_checkpoint_passes_when_no_cancel_is_pending() -> None:
    checkpoint()
    assert asyncio.current_task() is not None


async def test_wait_for_times_out() -> None:
    with pytest.raises(TimeoutError):
        await wait_for(asyncio.sleep(10), 0.01)
    assert await wait_for(_one_step(), None) == 1
