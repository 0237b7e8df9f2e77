"""`controller.gcpause`: frozen objects leave the collector's view; a full round reclaims the
cycles that died while frozen."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from controller import gcpause


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_a_frozen_cycle_survives_collections_until_a_full_round() -> None:
    ref = _cycle()  # garbage already, but only the cyclic collector can free it
    gcpause.freeze_round()
    assert gc.get_freeze_count() > 0
    gc.collect()
    assert ref() is not None  # frozen: no collection walks it
    collected, took = gcpause.full_round()
    assert ref() is None
    assert collected >= 2
    assert took >= 0.0
    assert gc.get_freeze_count() > 0  # frozen again afterwards


def test_an_unfrozen_cycle_is_collected_as_usual() -> None:
    ref = _cycle()
    gc.collect()
    assert ref() is None


def test_the_task_freezes_on_its_interval_and_zero_turns_it_off() -> None:
    async def main() -> None:
        gc.unfreeze()
        await gcpause.run(0.0, 0.0)  # both off: returns at once
        assert gc.get_freeze_count() == 0
        task = asyncio.create_task(gcpause.run(0.01, 0.0))
        await asyncio.sleep(0.1)
        task.cancel()
        assert gc.get_freeze_count() > 0

    asyncio.run(main())
