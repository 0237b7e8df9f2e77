"""When evaluations run: requests, the rate limit, the trailing evaluation, the urgent bypass,
the evaluation budget over all scalers and the periodic tick.

`EvalScheduler` drives one `controller.schedule.EvalGate` per item (an InferenceScaler in the live
controller) and is given its clock and its timers: `clock()` returns now, `call_at(when, callback)`
schedules a cancellable callback. The live controller (`controller.loop`) passes the asyncio event
loop's; the evaluator (`sim.evaluate.ours`) passes its virtual clock's. It decides only *when*;
`evaluate(item, now)` is the caller's. No I/O and no asyncio here.

- `request(item, trigger=...)`: evaluate now, or once at the end of the rate-limit interval
  (keeping the oldest trigger); `urgent` evaluates now regardless.
- `consumed(item, queue_depth, now)`: an event batch changed the item's model; a queue that grew
  since the last evaluation is urgent (it may need capacity now).
- `resize(n)`: the per-item interval is stretched so that n items together stay under
  `max_evals_per_s` non-urgent evaluations (`controller.fleet.eval_interval`).
- `tick_round(items, after=...)` / `run_ticks(...)`: the periodic evaluation (scale-down, idle,
  staleness), skipping items evaluated recently or with a trailing evaluation already scheduled,
  then `after(now)`: the state's sampling step (`controller.state.ModelState.sample`; it may
  pause too, by yielding), so the
  measurements advance on the tick's clock and not on how often evaluations look.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Generic, Protocol, TypeVar

from controller.fleet import TICK_CHUNK, eval_interval, tick_due
from controller.schedule import CallAt, EvalGate

log = logging.getLogger(__name__)


class Gated(Protocol):
    """Something evaluated on a schedule: it carries its `EvalGate` and a name for logs."""

    @property
    def gate(self) -> EvalGate: ...

    @property
    def name(self) -> str: ...


S = TypeVar("S", bound=Gated)


class EvalScheduler(Generic[S]):
    """The evaluation schedule of a set of items, on a given clock."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        call_at: CallAt,
        evaluate: Callable[[S, float], object],
        evaluates: Callable[[S], bool] = lambda _: True,
        current: Callable[[S], bool] = lambda _: True,
        min_interval_s: float,
        max_evals_per_s: float = float("inf"),
        tick_s: float,
    ) -> None:
        self._clock = clock
        self._call_at = call_at
        self._evaluate = evaluate
        self._evaluates = evaluates
        """Whether this instance decides for an item now (e.g. holds its shard)."""
        self._current = current
        """Whether an item still exists when its trailing evaluation fires."""
        self.min_interval_s = min_interval_s
        self.max_evals_per_s = max_evals_per_s
        self.tick_s = tick_s
        self.interval_s = min_interval_s
        """The per-item interval between non-urgent evaluations (see `resize`)."""

    def resize(self, n_items: int) -> None:
        """Stretch the per-item interval to keep `n_items` items under the evaluation budget."""
        self.interval_s = eval_interval(n_items, self.min_interval_s, self.max_evals_per_s)

    def request(self, item: S, *, trigger: float | None, urgent: bool = False) -> None:
        """Evaluate now, or once at the end of the rate-limit interval (keeping the oldest
        trigger); `urgent` (the queue grew since the last evaluation) evaluates now regardless."""
        if not self._evaluates(item):
            return
        now = self._clock()
        if item.gate.request(
            now=now,
            trigger=trigger,
            urgent=urgent,
            min_interval_s=self.interval_s,
            call_at=self._call_at,
            deferred=lambda: self._deferred(item),
        ):
            self._evaluate(item, now)

    def consumed(self, item: S, queue_depth: int, now: float) -> None:
        """Events changed the item's model at `now` (their trigger); its queue is now
        `queue_depth`. A growing queue may need capacity now: it skips the rate limit."""
        self.request(item, trigger=now, urgent=item.gate.is_urgent(queue_depth))

    def _deferred(self, item: S) -> None:
        item.gate.fired()
        if self._current(item) and self._evaluates(item):
            self._evaluate(item, self._clock())

    def tick(self, item: S) -> None:
        """The periodic tick's turn for one item (skipped when evaluated recently anyway)."""
        now = self._clock()
        # The cheap test first: with many items most were evaluated within the interval.
        if not tick_due(
            item.gate, now, tick_s=self.tick_s, interval_s=self.interval_s
        ) or not self._evaluates(item):
            return
        try:
            self.request(item, trigger=None)
        except Exception:
            log.exception("evaluating %s failed", item.name)

    def tick_round(
        self, items: Iterable[S], *, after: Callable[[float], Iterable[None]]
    ) -> Iterator[None]:
        """One round of the periodic tick: tick every item, pausing (a `yield`) every
        `TICK_CHUNK` items so the caller can let other work in, then `after(now)` (the sampling
        step: capacity, silent gateways). Both drivers run it: `run_ticks` on the event loop,
        the evaluator on its virtual clock."""
        for i, item in enumerate(list(items)):
            if i and i % TICK_CHUNK == 0:
                yield
            self.tick(item)
        yield from after(self._clock())

    async def run_ticks(
        self,
        items: Callable[[], Iterable[S]],
        *,
        after: Callable[[float], Iterable[None]],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        """Every `tick_s` (by `sleep`, e.g. `asyncio.sleep`), a `tick_round`, letting events and
        urgent evaluations in at its pauses (`sleep(0)`)."""
        while True:
            await sleep(self.tick_s)
            for _ in self.tick_round(items(), after=after):
                await sleep(0)
