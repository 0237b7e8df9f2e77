"""When the policy runs: the controller's evaluation scheduling, one per InferenceScaler.

Every material change asks for an evaluation (`EvalGate.request`). The first one after a quiet
period runs at once; later ones within `min_interval_s` of the last evaluation are folded into one
trailing evaluation at the end of the interval (so a burst costs one evaluation per interval and
its first event never waits), keeping the oldest trigger time for the decision-latency metric. A
queue that grew beyond what the last evaluation saw is *urgent*: it runs at once, whatever the
rate limit. The periodic tick is a plain request with no trigger.

Pure: no clock read and no asyncio. The caller passes `now` and a `call_at(when, callback)` that
returns a cancellable handle — `asyncio`'s `loop.call_at` in `controller.loop`, the virtual clock
in the evaluator (`sim.evaluate.ours`) — and runs the evaluation itself when told to; an
evaluation starts with `begin(now)` and ends with `done(queue_depth)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Timer(Protocol):
    """A scheduled callback that can be cancelled (`asyncio.TimerHandle` is one)."""

    def cancel(self) -> None: ...


CallAt = Callable[[float, Callable[[], None]], Timer]
"""Schedule `callback()` at time `when` on the caller's clock; returns its handle."""


@dataclass(slots=True)
class EvalGate:
    """The evaluation schedule of one scaler (mutable: it is that scaler's timing state)."""

    last_eval: float = -math.inf
    """When the last evaluation began (-inf: never, or reset so the next runs at once)."""
    pending_trigger: float | None = None
    """Oldest trigger time not yet served by an evaluation (for the decision-latency metric)."""
    evaluated_queue: int = 0
    """Queue depth seen by the last evaluation (growth beyond it is urgent)."""
    timer: Timer | None = None
    """The trailing evaluation, when one is scheduled."""

    def is_urgent(self, queue_depth: int) -> bool:
        """Whether a queue of `queue_depth` grew since the last evaluation."""
        return queue_depth > self.evaluated_queue

    def request(
        self,
        *,
        now: float,
        trigger: float | None,
        urgent: bool,
        min_interval_s: float,
        call_at: CallAt,
        deferred: Callable[[], None],
    ) -> bool:
        """Ask for an evaluation at `now`. True: evaluate now (the caller does, starting with
        `begin`). False: one trailing evaluation is scheduled (`deferred` runs at the end of the
        interval; the caller then calls `fired()` and evaluates)."""
        if urgent:
            self.pending_trigger = trigger  # the change that grew the queue triggered this
        elif trigger is not None and (
            self.pending_trigger is None or trigger < self.pending_trigger
        ):
            self.pending_trigger = trigger
        due = self.last_eval + min_interval_s
        if urgent or now >= due:
            return True
        if self.timer is None:
            self.timer = call_at(due, deferred)
        return False

    def fired(self) -> None:
        """The trailing evaluation's timer ran (its handle is spent)."""
        self.timer = None

    def begin(self, now: float) -> float | None:
        """An evaluation starts at `now`: returns its trigger time and cancels a trailing one."""
        trigger, self.pending_trigger = self.pending_trigger, None
        self.last_eval = now
        self.cancel()
        return trigger

    def done(self, queue_depth: int) -> None:
        """The evaluation saw a queue of `queue_depth`."""
        self.evaluated_queue = queue_depth

    def reset(self) -> None:
        """Let the next request evaluate at once (e.g. on becoming leader)."""
        self.last_eval = -math.inf

    def cancel(self) -> None:
        """Drop a scheduled trailing evaluation (scaler deleted, controller stopping)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
