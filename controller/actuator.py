"""The only writer of scale: coalescing, retrying workers, one per scale target.

`Actuator.submit(target, replicas, ...)` is synchronous and O(1): it records the newest desired
value of a target and wakes that target's worker. The worker PATCHes the newest value, so a stale
value is never sent after a newer decision (coalescing: ten decisions during one slow PATCH cost
at most one more PATCH). Transient failures (`TemporaryError`: 5xx, 429, connection trouble) are
retried after `surgescale.retry` backoff, always with the newest value; a 409 (`ConflictError`)
re-reads the current replicas and patches again only if they still differ; a permanent error
(`PermanentError`) is logged and the value is not retried until a different one is submitted;
a `RecheckableError` (permanent until something outside changes, e.g. a CRD not installed yet) is
retried when the same value is submitted again `recheck_after_s` later. `failure(target)` keeps
the last error of a target until a write succeeds (the conditions show it).

Waits are bounded and interruptible: a server's `Retry-After` is honoured up to
`max_retry_after_s` (a bad one, such as `inf` or a negative number, never reaches here:
`controller.kube` drops it and the backoff applies), and a newer decision ends any wait at once,
so one 429 cannot hold a larger scale-up back.

**Fencing.** Before every PATCH the worker asks `fence()` how many seconds this instance's
leadership is still valid for (`controller.lease.LeaseElector.remaining`); at <= 0 nothing is
written and the pending value is dropped (the new leader decides), otherwise the PATCH's client
timeout is bounded by it, so a write cannot leave after leadership ends. A `prepare` hook runs
(also fenced) before a Deployment is scaled down: the loop uses it to set each pod's
`controller.kubernetes.io/pod-deletion-cost` so that the idlest pods leave.

Talking HTTP is behind the `ScaleAPI` protocol (`controller.kube.KubeScaleAPI` for real); the
policy and the loop never write scale themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from surgescale.cancel import checkpoint, wait_for
from surgescale.retry import Backoff, ExponentialBackoff, PermanentError, TemporaryError

log = logging.getLogger(__name__)


class TargetKind(enum.StrEnum):
    """What a scale target is."""

    DEPLOYMENT = "Deployment"
    """`apps/v1 deployments/{name}/scale` (the model, or a headroom placeholder Deployment)."""
    NODEPOOL = "NodePool"
    """`karpenter.sh/v1 nodepools/{name}/scale` (cluster-scoped, static NodePool)."""
    CAPACITY_BUFFER = "CapacityBuffer"
    """`autoscaling.x-k8s.io capacitybuffers/{name}` `spec.replicas` (`controller.buffer`)."""


@dataclass(frozen=True, slots=True)
class ScaleTarget:
    """One object whose `scale` subresource the actuator sets."""

    kind: TargetKind
    name: str
    namespace: str = ""

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind.value} {where}{self.name}"


class ConflictError(TemporaryError):
    """HTTP 409: the object changed under us; re-read before writing again."""


class RecheckableError(PermanentError):
    """Permanent until something outside changes (a CRD installed, an object created): the
    same value is tried again only after `Actuator.recheck_after_s`. `reason` is a CamelCase
    word for conditions (`CapacityBufferCRDMissing`)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ScaleAPI(Protocol):
    """Reads and writes the replicas of a scale subresource."""

    async def patch_replicas(
        self, target: ScaleTarget, replicas: int, *, timeout: float | None = None
    ) -> None:
        """Merge-PATCH `spec.replicas` (client timeout `timeout` s if given); raise
        TemporaryError / ConflictError / PermanentError."""

    async def read_replicas(self, target: ScaleTarget) -> int:
        """`spec.replicas` of the target's scale subresource."""


SendHook = Callable[[ScaleTarget, int, "float | None"], None]
"""Called just before a PATCH goes out: (target, replicas, trigger time of the oldest decision
it carries). The loop records the decision-latency histogram here."""
AppliedHook = Callable[[ScaleTarget, "int | None", int, str], None]
"""Called after a PATCH succeeded: (target, previous replicas or None, new replicas, reason)."""
Fence = Callable[[], float]
"""Seconds the writer's leadership is still valid for; <= 0 forbids any write."""
TargetFence = Callable[[ScaleTarget], float]
"""The same, per target (a controller sharded by model leads some targets and not others)."""
PrepareHook = Callable[[ScaleTarget, int, float], Awaitable[None]]
"""Awaited before a Deployment is scaled down: (target, new replicas, seconds of leadership left
to write in). Raises the retry taxonomy's errors like a PATCH does."""


@dataclass(slots=True)
class _Slot:
    desired: int | None = None
    applied: int | None = None
    failed: int | None = None
    in_flight: int | None = None
    trigger_at: float | None = None
    reason: str = ""
    wake: asyncio.Event | None = None
    task: asyncio.Task[None] | None = None
    sent: int = 0
    errors: int = 0
    error: PermanentError | None = None
    """The last permanent error, until a write succeeds."""
    failed_at: float = 0.0


@dataclass(slots=True)
class ActuatorStats:
    """Counters (read them; the actuator updates them)."""

    patches: int = 0
    coalesced: int = 0
    retries: int = 0
    conflicts: int = 0
    permanent_errors: int = 0
    fenced: int = 0
    """Writes not made because leadership was no longer valid."""


class Actuator:
    """Coalescing, retrying scale writer (one worker task per target)."""

    def __init__(
        self,
        api: ScaleAPI,
        *,
        backoff: Backoff | None = None,
        on_send: SendHook | None = None,
        on_applied: AppliedHook | None = None,
        fence: Fence | None = None,
        target_fence: TargetFence | None = None,
        prepare: PrepareHook | None = None,
        max_retry_after_s: float = 5.0,
        request_timeout_s: float = 5.0,
        recheck_after_s: float = 30.0,
    ) -> None:
        self._api = api
        self._backoff = backoff or ExponentialBackoff(base=0.05, cap=5.0)
        self._on_send = on_send
        self._on_applied = on_applied
        self._fence = fence
        self._target_fence = target_fence
        self._prepare = prepare
        self._max_retry_after_s = max(max_retry_after_s, 0.0)
        self._request_timeout_s = request_timeout_s
        self.recheck_after_s = recheck_after_s
        self._slots: dict[ScaleTarget, _Slot] = {}
        self._closed = False
        self.stats = ActuatorStats()

    def submit(
        self,
        target: ScaleTarget,
        replicas: int,
        *,
        trigger_at: float | None = None,
        reason: str = "",
    ) -> bool:
        """Ask for `replicas` on `target`; True if that is a change the worker will write."""
        if self._closed:
            return False
        slot = self._slots.get(target)
        if slot is None:
            slot = _Slot(wake=asyncio.Event())
            self._slots[target] = slot
        if (
            slot.failed == replicas
            and isinstance(slot.error, RecheckableError)
            and asyncio.get_running_loop().time() - slot.failed_at >= self.recheck_after_s
        ):
            slot.failed = None  # try again: what was missing may be there now
            slot.desired = None
        if slot.desired == replicas:
            return False
        if slot.desired is None and slot.applied == replicas:
            return False
        if slot.desired is not None and slot.desired not in (slot.applied, slot.in_flight):
            self.stats.coalesced += 1  # replaces a value not yet written
        if slot.trigger_at is None:
            slot.trigger_at = trigger_at  # latency counts from the oldest unsent decision
        slot.desired = replicas
        slot.reason = reason
        if replicas != slot.failed:
            slot.failed = None
        if slot.task is None:
            slot.task = asyncio.create_task(self._work(target, slot), name=f"actuate {target}")
        assert slot.wake is not None
        slot.wake.set()
        return True

    def observed(self, target: ScaleTarget, replicas: int) -> None:
        """The cluster says `target` has `replicas` (a watch event): what is applied now."""
        slot = self._slots.get(target)
        if slot is None:
            slot = _Slot(wake=asyncio.Event())
            self._slots[target] = slot
        if slot.desired is None or slot.desired == slot.applied:
            slot.applied = replicas
            slot.desired = None

    def applied(self, target: ScaleTarget) -> int | None:
        """The last value known to be written (or observed) on `target`."""
        slot = self._slots.get(target)
        return None if slot is None else slot.applied

    def failure(self, target: ScaleTarget) -> PermanentError | None:
        """The last permanent error writing `target`, until a write to it succeeds."""
        slot = self._slots.get(target)
        return None if slot is None else slot.error

    def pending(self, target: ScaleTarget) -> int | None:
        """A value submitted but not yet written, if any."""
        slot = self._slots.get(target)
        if slot is None or slot.desired is None or slot.desired == slot.applied:
            return None
        return slot.desired

    def forget_pending(self, targets: Iterable[ScaleTarget] | None = None) -> None:
        """Drop every value not yet written (leadership lost: the new leader decides); only
        those of `targets` if given (a shard of the models lost)."""
        slots = (
            self._slots.values()
            if targets is None
            else [s for t in targets if (s := self._slots.get(t)) is not None]
        )
        for slot in slots:
            slot.desired = None
            slot.trigger_at = None

    async def idle(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is pending (for tests and shutdown); True if that happened."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while any(
            s.desired is not None and s.desired != s.applied and s.desired != s.failed
            for s in self._slots.values()
        ):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def close(self, timeout: float = 2.0) -> None:
        """Give pending writes `timeout` seconds, then stop the workers."""
        await self.idle(timeout)
        self._closed = True
        tasks = [s.task for s in self._slots.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _work(self, target: ScaleTarget, slot: _Slot) -> None:
        assert slot.wake is not None
        while True:
            checkpoint()
            await slot.wake.wait()
            slot.wake.clear()
            await self._drain(target, slot)

    def _write_budget(self, target: ScaleTarget, slot: _Slot) -> float | None:
        """The client timeout for the next write, or None when leadership forbids writing."""
        if self._target_fence is not None:
            remaining = self._target_fence(target)
        elif self._fence is not None:
            remaining = self._fence()
        else:
            return self._request_timeout_s
        if remaining <= 0:
            self.stats.fenced += 1
            log.warning("not scaling %s to %s: leadership no longer valid", target, slot.desired)
            slot.desired = None
            slot.trigger_at = None
            return None
        return min(self._request_timeout_s, remaining)

    async def _pause(self, slot: _Slot, delay: float, value: int) -> None:
        """Wait `delay` seconds after a failed write of `value`; not at all, or no longer, once
        a newer value is submitted."""
        assert slot.wake is not None
        slot.wake.clear()
        if delay <= 0 or slot.desired != value:
            return
        with contextlib.suppress(TimeoutError):
            await wait_for(slot.wake.wait(), delay)

    def _retry_delay(self, exc: TemporaryError, failures: int) -> float:
        hint = exc.delay
        if hint is not None and 0 <= hint < float("inf"):
            return min(hint, self._max_retry_after_s)
        return self._backoff.compute(failures)

    async def _drain(self, target: ScaleTarget, slot: _Slot) -> None:
        failures = 0
        while (
            slot.desired is not None
            and slot.desired != slot.applied
            and slot.desired != slot.failed
        ):
            value = slot.desired
            trigger_at, slot.trigger_at = slot.trigger_at, None
            reason = slot.reason
            down = slot.applied is not None and value < slot.applied
            try:
                if down and self._prepare is not None and target.kind is TargetKind.DEPLOYMENT:
                    budget = self._write_budget(target, slot)
                    if budget is None:
                        return
                    try:
                        await self._prepare(target, value, budget)
                    except PermanentError as exc:  # e.g. forbidden: scale down regardless
                        log.warning("preparing %s for %d replicas: %s", target, value, exc)
                    if slot.desired != value:
                        self._keep_trigger(slot, trigger_at)
                        continue  # a newer decision arrived meanwhile
                budget = self._write_budget(target, slot)
                if budget is None:
                    return
                if self._on_send is not None:
                    self._on_send(target, value, trigger_at)
                self.stats.patches += 1
                slot.sent += 1
                slot.in_flight = value
                await self._api.patch_replicas(target, value, timeout=budget)
            except ConflictError:
                failures += 1
                self.stats.conflicts += 1
                slot.errors += 1
                log.info("conflict scaling %s to %d: re-reading", target, value)
                try:
                    slot.applied = await self._api.read_replicas(target)
                except (TemporaryError, PermanentError) as exc:
                    log.warning("re-read of %s failed: %s", target, exc)
                    await self._pause(slot, self._backoff.compute(failures), value)
                self._keep_trigger(slot, trigger_at)
                continue
            except TemporaryError as exc:
                failures += 1
                self.stats.retries += 1
                slot.errors += 1
                delay = self._retry_delay(exc, failures)
                log.warning(
                    "scaling %s to %d failed (%d in a row), retry in %.2fs: %s",
                    target,
                    value,
                    failures,
                    delay,
                    exc,
                )
                self._keep_trigger(slot, trigger_at)
                await self._pause(slot, delay, value)
                continue
            except PermanentError as exc:
                self.stats.permanent_errors += 1
                slot.errors += 1
                slot.failed = value
                slot.error = exc
                slot.failed_at = asyncio.get_running_loop().time()
                log.error("scaling %s to %d failed for good: %s", target, value, exc)
                return
            finally:
                slot.in_flight = None
            failures = 0
            slot.error = None
            previous = slot.applied
            slot.applied = value
            if self._on_applied is not None:
                self._on_applied(target, previous, value, reason)

    @staticmethod
    def _keep_trigger(slot: _Slot, trigger_at: float | None) -> None:
        if slot.trigger_at is None:
            slot.trigger_at = trigger_at
