"""`tests.waiting`: the condition's value comes back, and a time-out says what was awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.waiting import await_chain, wait_until, wait_until_sync


async def test_returns_the_first_truthy_value_of_a_plain_or_async_condition() -> None:
    calls = iter([0, 0, 7])
    assert await wait_until(lambda: next(calls), what="the third call") == 7

    async def ready() -> str:
        return "yes"

    assert await wait_until(ready, what="ready") == "yes"


async def test_a_time_out_names_what_was_awaited_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"waiting for the pod to be Ready \(last: \[\]\)"):
        await wait_until(list, timeout=0.05, what="the pod to be Ready")


def test_the_sync_form_fails_the_same_way() -> None:
    with pytest.raises(AssertionError, match="waiting for nothing"):
        wait_until_sync(lambda: 0, timeout=0.05, what="nothing")


async def test_await_chain_names_every_frame_down_to_an_async_generators_await() -> None:
    async def source() -> AsyncIterator[int]:
        while True:
            yield 1
            await asyncio.sleep(3600)

    async def reader() -> None:
        async for _ in source():
            pass

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    chain = await_chain(task)
    task.cancel()
    names = [part.split(" ")[-1] for part in chain.split(" -> ")]
    assert names[:3] == ["reader", "source", "sleep"], chain
