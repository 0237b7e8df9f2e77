"""Reporting back to the cluster: a Kubernetes Event per scale, and the throttled status writer.

`Reporter.scaled(...)` is called by the actuator's hook after each successful scale PATCH and
posts an Event (reason `ScaledUp` / `ScaledDown` / `NodesScaled` / `HeadroomScaled`) with the
decision's reason and inputs, in the background. Bounded: when the API server is slow, Events are
dropped rather than piled up. Fenced: `owns(scaler)` is asked when an Event's turn comes, so a
process paused between its scale and the Event, and no longer leading when it wakes, drops it
instead of writing late as an ex-leader. `Reporter.run(...)` writes each InferenceScaler's status
at most once per interval and only when it changed, and only while this instance leads; an
invalid spec also gets one Warning Event per distinct error. Before each write the standard
conditions are brought up to date (`controller.conditions`, with the actuator's last write
errors), and each transition of one of them becomes an Event (reason = the condition's reason;
Warning when the condition turned abnormal). Scale itself is never written here
(`controller.actuator` is the only writer of scale).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from controller import conditions
from controller.actuator import Actuator, ScaleTarget, TargetKind
from controller.kube import KubeWriter, now_rfc3339
from controller.scaler import Scaler, status_of
from surgescale.cancel import checkpoint
from surgescale.retry import PermanentError, TemporaryError

log = logging.getLogger(__name__)


class Reporter:
    """Events and status for the InferenceScalers, through a `KubeWriter`."""

    def __init__(
        self,
        writer: KubeWriter,
        *,
        max_background: int = 100,
        actuator: Actuator | None = None,
        owns: Callable[[Scaler], bool] | None = None,
    ) -> None:
        self._writer = writer
        self._actuator = actuator
        self._owns = owns
        self._max_background = max_background
        self._background: set[asyncio.Task[None]] = set()
        self.dropped_events = 0
        """Events not sent: too many in flight, or `owns(scaler)` (this instance leads the
        scaler) no longer held when their turn came."""

    def scaled(
        self, scaler: Scaler, target: ScaleTarget, previous: int | None, value: int, reason: str
    ) -> None:
        """A scale PATCH on one of `scaler`'s targets succeeded: record it and post an Event."""
        obs = scaler.observation
        if target == scaler.deployment():
            scaler.last_scale_time = now_rfc3339()
            scaler.last_scale_reason = reason
            verb = "ScaledUp" if previous is None or value > previous else "ScaledDown"
        else:
            verb = {
                TargetKind.NODEPOOL: "NodesScaled",
                TargetKind.CAPACITY_BUFFER: "CapacityBufferScaled",
            }.get(target.kind, "HeadroomScaled")
        inputs = (
            ""
            if obs is None
            else f" (queue {obs.queue_depth}, in flight {obs.in_flight}, "
            f"ready {obs.ready_replicas}, starting {obs.starting_replicas}, "
            f"arrival {obs.arrival_rate_short:.2f}/s)"
        )
        was = previous if previous is not None else "?"
        self._fire(
            scaler,
            self._writer.event(
                namespace=scaler.key[0],
                name=scaler.key[1],
                uid=scaler.uid,
                reason=verb,
                message=f"{target} {was} -> {value}: {reason}{inputs}",
            ),
        )

    def _fire(self, scaler: Scaler, coro: Coroutine[Any, Any, None]) -> None:
        if len(self._background) >= self._max_background:
            coro.close()
            self.dropped_events += 1
            return
        task = asyncio.create_task(self._quiet(scaler, coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quiet(self, scaler: Scaler, coro: Coroutine[Any, Any, None]) -> None:
        if self._owns is not None and not self._owns(scaler):
            coro.close()  # checked when its turn comes, not when it was queued
            self.dropped_events += 1
            return
        try:
            await coro
        except (TemporaryError, PermanentError) as exc:
            log.warning("event write failed: %s", exc)

    async def write_status(self, scaler: Scaler) -> bool:
        """Refresh the standard conditions, PATCH the status if it changed since the last write
        and post an Event per condition transition; True if written."""
        actuator = self._actuator
        conditions.refresh(
            scaler,
            now=asyncio.get_running_loop().time(),
            failure=(lambda _: None) if actuator is None else actuator.failure,
        )
        status = status_of(scaler)
        if status == scaler.status_written:
            return False
        await self._writer.patch_status(scaler.key[0], scaler.key[1], status)
        scaler.status_written = status
        changes = list(scaler.transitions)
        scaler.transitions.clear()
        causes = {(c["reason"], c["abnormal"]) for c in changes if c["type"] != conditions.READY}
        for change in changes:
            if (
                change["type"] == conditions.READY
                and (change["reason"], change["abnormal"]) in causes
            ):
                continue  # Ready only repeats a transition that has its own Event
            cond = scaler.conditions.get(change["type"])
            self._fire(
                scaler,
                self._writer.event(
                    namespace=scaler.key[0],
                    name=scaler.key[1],
                    uid=scaler.uid,
                    reason=change["reason"],
                    message=f"{change['type']}={change['status']}: "
                    + ("" if cond is None else cond["message"]),
                    warning=change["abnormal"],
                ),
            )
        if scaler.error is not None and scaler.reported_error != str(scaler.error):
            scaler.reported_error = str(scaler.error)
            await self._writer.event(
                namespace=scaler.key[0],
                name=scaler.key[1],
                uid=scaler.uid,
                reason="InvalidSpec",
                message=str(scaler.error),
                warning=True,
            )
        return True

    async def run(
        self,
        scalers: Callable[[], Iterable[Scaler]],
        *,
        leading: Callable[[], bool],
        interval_s: float,
        owns: Callable[[Scaler], bool] | None = None,
    ) -> None:
        """Every `interval_s`, while `leading()`, write the status of each changed scaler
        (only of those `owns(scaler)` allows, checked right before each write, if given)."""
        while True:
            checkpoint()
            await asyncio.sleep(interval_s)
            if not leading():
                continue
            for scaler in list(scalers()):
                if not leading():  # fenced per write: leadership may end between two
                    break
                if owns is not None and not owns(scaler):
                    continue
                try:
                    await self.write_status(scaler)
                except (TemporaryError, PermanentError) as exc:
                    log.warning("status of %s: %s", scaler.name, exc)

    async def close(self, timeout: float = 1.0) -> None:
        """Let in-flight Event writes finish (bounded), then cancel the rest."""
        tasks = list(self._background)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
