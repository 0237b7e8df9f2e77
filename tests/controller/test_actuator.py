"""The actuator's coalescing and retry logic, against a scripted fake of its own ScaleAPI protocol.

(The real HTTP path is tested against the simulated cluster in test_integration.py.)
"""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from controller.actuator import (
    Actuator,
    ConflictError,
    ScaleTarget,
    TargetKind,
)
from surgescale.retry import ConstantBackoff, PermanentError, TemporaryError
from tests.waiting import wait_until

DEP = ScaleTarget(TargetKind.DEPLOYMENT, "llama", "ns")
POOL = ScaleTarget(TargetKind.NODEPOOL, "gpu")


class ScriptedAPI:
    """Records every PATCH; raises the scripted errors in order; can hold a PATCH open."""

    def __init__(self) -> None:
        self.patches: list[tuple[ScaleTarget, int]] = []
        self.errors: deque[Exception | None] = deque()
        self.gate: asyncio.Event | None = None
        self.server_value: dict[ScaleTarget, int] = {}
        self.reads = 0
        self.timeouts: list[float | None] = []

    async def patch_replicas(
        self, target: ScaleTarget, replicas: int, *, timeout: float | None = None
    ) -> None:
        self.patches.append((target, replicas))
        self.timeouts.append(timeout)
        if self.gate is not None:
            await self.gate.wait()
        error = self.errors.popleft() if self.errors else None
        if error is not None:
            raise error
        self.server_value[target] = replicas

    async def read_replicas(self, target: ScaleTarget) -> int:
        self.reads += 1
        return self.server_value.get(target, 0)


async def test_a_stale_value_is_never_sent_after_a_newer_one() -> None:
    api = ScriptedAPI()
    api.gate = asyncio.Event()
    act = Actuator(api, backoff=ConstantBackoff(0.01))
    act.submit(DEP, 1)
    await wait_until(lambda: api.patches, what="the PATCH for 1 in flight (and held)")
    for n in (2, 3, 4, 5):
        act.submit(DEP, n)
    api.gate.set()
    assert await act.idle(2.0)
    assert api.patches == [(DEP, 1), (DEP, 5)]
    assert act.stats.coalesced == 3
    assert act.applied(DEP) == 5
    await act.close()


async def test_transient_errors_retry_with_the_newest_value() -> None:
    api = ScriptedAPI()
    api.errors.extend([TemporaryError("503"), TemporaryError("503"), None])
    act = Actuator(api, backoff=ConstantBackoff(0.05))
    act.submit(DEP, 3)
    await wait_until(lambda: act.stats.retries, what="the first attempt to fail (backing off)")
    act.submit(DEP, 7)
    assert await act.idle(2.0)
    assert [v for _, v in api.patches] == [3, 7, 7]
    assert act.stats.retries == 2
    assert api.server_value[DEP] == 7
    await act.close()


async def test_retry_after_hint_is_used() -> None:
    api = ScriptedAPI()
    api.errors.extend([TemporaryError("429", delay=0.2)])
    act = Actuator(api, backoff=ConstantBackoff(0.0))
    loop = asyncio.get_running_loop()
    started = loop.time()
    act.submit(DEP, 2)
    assert await act.idle(2.0)
    assert loop.time() - started >= 0.2
    assert len(api.patches) == 2
    await act.close()


async def test_conflict_rereads_and_stops_when_already_there() -> None:
    api = ScriptedAPI()
    api.server_value[DEP] = 4  # someone else already wrote 4
    api.errors.append(ConflictError("409"))
    act = Actuator(api, backoff=ConstantBackoff(0.0))
    act.submit(DEP, 4)
    assert await act.idle(2.0)
    assert api.patches == [(DEP, 4)]
    assert api.reads == 1
    assert act.applied(DEP) == 4


async def test_conflict_rereads_then_patches_again_when_different() -> None:
    api = ScriptedAPI()
    api.server_value[DEP] = 1
    api.errors.append(ConflictError("409"))
    act = Actuator(api, backoff=ConstantBackoff(0.0))
    act.submit(DEP, 6)
    assert await act.idle(2.0)
    assert api.patches == [(DEP, 6), (DEP, 6)]
    assert api.server_value[DEP] == 6
    assert act.stats.conflicts == 1
    await act.close()


async def test_permanent_error_is_not_retried_until_the_value_changes() -> None:
    api = ScriptedAPI()
    api.errors.append(PermanentError("403"))
    act = Actuator(api, backoff=ConstantBackoff(0.0))
    act.submit(DEP, 2)
    assert await act.idle(2.0)
    assert not act.submit(DEP, 2)  # same value: not retried
    await asyncio.sleep(0.02)
    assert len(api.patches) == 1
    assert act.submit(DEP, 3)
    assert await act.idle(2.0)
    assert api.patches[-1] == (DEP, 3)
    assert act.stats.permanent_errors == 1
    await act.close()


async def test_no_patch_when_the_cluster_already_has_the_value() -> None:
    api = ScriptedAPI()
    act = Actuator(api)
    act.observed(DEP, 3)
    assert not act.submit(DEP, 3)
    assert act.submit(DEP, 4)
    assert await act.idle(2.0)
    assert not act.submit(DEP, 4)
    assert api.patches == [(DEP, 4)]
    await act.close()


async def test_hooks_see_the_oldest_trigger_and_each_applied_change() -> None:
    api = ScriptedAPI()
    api.gate = asyncio.Event()
    sent: list[tuple[ScaleTarget, int, float | None]] = []
    applied: list[tuple[ScaleTarget, int | None, int, str]] = []
    act = Actuator(
        api,
        on_send=lambda t, n, trig: sent.append((t, n, trig)),
        on_applied=lambda t, prev, n, why: applied.append((t, prev, n, why)),
    )
    act.submit(POOL, 2, trigger_at=1.0, reason="first")
    await wait_until(lambda: api.patches, what="the first PATCH in flight (and held)")
    act.submit(POOL, 3, trigger_at=2.0, reason="second")
    act.submit(POOL, 4, trigger_at=3.0, reason="third")
    api.gate.set()
    assert await act.idle(2.0)
    assert sent == [(POOL, 2, 1.0), (POOL, 4, 2.0)]
    assert applied == [(POOL, None, 2, "first"), (POOL, 2, 4, "third")]
    await act.close()


async def test_targets_are_independent() -> None:
    """A target stuck in retries does not hold up another one."""
    api = ScriptedAPI()
    api.errors.extend([TemporaryError("503")])
    act = Actuator(api, backoff=ConstantBackoff(0.3))
    act.submit(POOL, 2)
    await wait_until(lambda: act.stats.retries, what="the pool's first PATCH to fail")
    act.submit(DEP, 5)
    await wait_until(lambda: api.server_value.get(DEP) == 5, what="the Deployment's PATCH")
    assert POOL not in api.server_value
    assert await act.idle(2.0)
    assert api.server_value[POOL] == 2
    await act.close()


async def test_a_long_retry_after_is_capped() -> None:
    """Regression (issue 15): `Retry-After: 30` held the scale back for 30 s."""
    api = ScriptedAPI()
    api.errors.extend([TemporaryError("429", delay=30.0)])
    act = Actuator(api, backoff=ConstantBackoff(0.0), max_retry_after_s=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    act.submit(DEP, 2)
    assert await act.idle(2.0)
    assert 0.2 <= loop.time() - started < 1.0
    assert api.patches == [(DEP, 2), (DEP, 2)]
    await act.close()


async def test_a_newer_decision_interrupts_a_retry_after_wait() -> None:
    """Regression (issue 15): a 429 with a long Retry-After must not hold a newer, larger
    decision back: the newer value is written at once."""
    api = ScriptedAPI()
    api.errors.extend([TemporaryError("429", delay=30.0)])
    act = Actuator(api, backoff=ConstantBackoff(0.0))
    loop = asyncio.get_running_loop()
    act.submit(DEP, 2)
    await wait_until(lambda: act.stats.retries, what="the 429 to come back (the worker waits)")
    assert api.patches == [(DEP, 2)]
    newer = loop.time()
    act.submit(DEP, 8)
    assert await act.idle(1.0)
    assert loop.time() - newer < 0.5
    assert api.patches == [(DEP, 2), (DEP, 8)]
    assert api.server_value[DEP] == 8
    await act.close()


@pytest.mark.parametrize("hint", [float("inf"), -1.0, float("nan")], ids=["inf", "neg", "nan"])
async def test_an_invalid_retry_after_falls_back_to_the_backoff(hint: float) -> None:
    """`inf` would wait forever and a negative value would spin: the backoff applies instead."""
    api = ScriptedAPI()
    api.errors.extend([TemporaryError("429", delay=hint), TemporaryError("429", delay=hint)])
    act = Actuator(api, backoff=ConstantBackoff(0.05))
    loop = asyncio.get_running_loop()
    started = loop.time()
    act.submit(DEP, 3)
    assert await act.idle(2.0)
    assert loop.time() - started >= 0.1  # two backoff waits, no spinning
    assert api.patches == [(DEP, 3)] * 3
    await act.close()


async def test_no_write_once_leadership_is_no_longer_valid() -> None:
    """Every PATCH is fenced: asked immediately before the write, not when decided."""
    api = ScriptedAPI()
    api.gate = asyncio.Event()
    left = {"s": 2.0}
    act = Actuator(api, backoff=ConstantBackoff(0.0), fence=lambda: left["s"])
    act.submit(DEP, 2)
    # PATCH 2 in flight, its client timeout bounded by the fence
    await wait_until(lambda: api.patches, what="PATCH 2 in flight (and held)")
    act.submit(DEP, 5)  # decided while still leader...
    left["s"] = 0.0  # ...but the lease's renew deadline passes before the write
    api.gate.set()
    await wait_until(lambda: act.stats.fenced, what="the write of 5 to be fenced")
    assert api.patches == [(DEP, 2)]
    assert api.timeouts == [2.0]
    assert act.stats.fenced == 1
    assert act.pending(DEP) is None  # dropped: the new leader decides
    await act.close()


async def test_scale_down_is_prepared_first_and_scale_up_is_not() -> None:
    api = ScriptedAPI()
    calls: list[tuple[str, ScaleTarget, int]] = []

    async def prepare(target: ScaleTarget, replicas: int, budget: float) -> None:
        calls.append(("prepare", target, replicas))
        assert api.patches[-1:] != [(target, replicas)]  # before the PATCH

    act = Actuator(api, backoff=ConstantBackoff(0.0), prepare=prepare)
    act.observed(DEP, 4)
    act.submit(DEP, 6)
    assert await act.idle(2.0)
    act.submit(DEP, 3)
    assert await act.idle(2.0)
    assert calls == [("prepare", DEP, 3)]
    assert api.patches == [(DEP, 6), (DEP, 3)]
    await act.close()
