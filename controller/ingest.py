"""Events in: read the gateway's event batches, fold them into the state, ask for evaluations, ack.

`Ingest.run()` reads the `EventConsumer`'s batches; each batch passes the takeover gate (`admit`,
`controller.takeover`), is folded into the `StateStore` a chunk at a time, and every model a chunk
changed is handed to `changed(model, now)` (the controller asks for its scalers' evaluations
there). Those whose queue may have grown (an `enqueue` or a `snapshot`) are handed on at once,
within the batch; the others are handed on by a second task, `DRAIN_CHUNK` models at a time with
a pause between, while this one reads the next batch: at 1,000 models a batch touches hundreds of
models and their evaluations (0.2-0.3 ms each) took tens of ms in one stretch of the loop, ahead
of the read that brings the next `enqueue`. A model waiting there keeps its first trigger time.
Acks follow the effect, grouped (`ack_interval_s`), one round in flight at most.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable

from controller.ops import Metrics
from controller.state import StateStore
from controller.telemetry import DecisionTelemetry
from surgescale.events import Delivery, Event, EventConsumer

log = logging.getLogger(__name__)

DRAIN_CHUNK = 8
"""Models handed on for non-urgent evaluation before the drain lets other work run."""


class Ingest:
    """The controller's event intake (one consumer group of its own)."""

    def __init__(
        self,
        consumer: EventConsumer,
        *,
        admit: Callable[[list[Event]], list[Event]],
        store: StateStore,
        changed: Callable[[str, float], None],
        metrics: Metrics,
        telemetry: Callable[[], DecisionTelemetry | None],
        chunk: int,
        ack_interval_s: float,
        urgent: Callable[[str], bool] = lambda _: True,
    ) -> None:
        self.consumer = consumer
        self._urgent = urgent
        """Whether a model an `enqueue` or `snapshot` touched has a queue that grew since its
        last evaluation (then it is evaluated within the batch; else by the drain)."""
        self._admit = admit
        self._store = store
        self._changed = changed
        self._metrics = metrics
        self._telemetry = telemetry
        self._chunk = max(chunk, 1)
        self._ack_interval_s = ack_interval_s
        self.alive = False
        """True once reading (readiness)."""
        self.kicked = False
        """A scale was just submitted: yield before folding in the rest of a large batch."""
        self._waiting: dict[str, float] = {}
        """Models changed by a batch, not urgent, not yet handed on -> their first trigger."""
        self._order: deque[str] = deque()
        """The same models in the order they started waiting (some may have left `_waiting`)."""
        self._ready = asyncio.Event()

    async def run(self) -> None:
        drain = asyncio.create_task(self._drain(), name="ingest drain")
        try:
            await self._consume()
        finally:
            drain.cancel()
        self._hand_on(len(self._order))  # whatever the drain had not reached

    def _hand_on(self, n: int) -> None:
        """Hand the `n` longest-waiting models on for evaluation (oldest trigger first)."""
        waiting, order = self._waiting, self._order
        while n > 0 and order:
            model = order.popleft()
            trigger = waiting.pop(model, None)
            if trigger is not None:  # else: evaluated meanwhile as urgent
                n -= 1
                self._changed(model, trigger)

    async def _drain(self) -> None:
        """Hand the waiting models on, `DRAIN_CHUNK` at a time, letting other work (the next
        batch, an urgent evaluation, a PATCH) run between chunks."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._order:
                try:
                    self._hand_on(DRAIN_CHUNK)
                except Exception:
                    log.exception("evaluation request failed")
                await asyncio.sleep(0)

    async def _consume(self) -> None:
        consumer = self.consumer
        loop = asyncio.get_running_loop()
        self.alive = True
        acking: asyncio.Future[None] | None = None
        unacked: list[Delivery] = []
        acked_at = -math.inf
        chunk = self._chunk
        async for batch in consumer.batches():
            now = loop.time()
            wall_ms = time.time_ns() // 1_000_000
            events = self._admit(batch.events)
            for start in range(0, len(events), chunk):
                part = events[start : start + chunk] if len(events) > chunk else events
                changed = self._store.ingest(part, now, wall_ms=wall_ms)
                telemetry = self._telemetry()
                if telemetry is not None:
                    telemetry.ingested(part)
                # Models whose queue grew first: one of them may need capacity now, and must not
                # wait behind the evaluations of the others the chunk touched.
                urgent = self._urgent
                queued = {m for m in self._store.queued if urgent(m)}
                for model in queued:
                    self._changed(model, now)
                    self._waiting.pop(model, None)  # evaluated now, with this batch's events
                waiting = self._waiting
                for model in changed:
                    if model not in queued and model not in waiting:
                        waiting[model] = now
                        self._order.append(model)
                if waiting:
                    self._ready.set()
                if self.kicked:
                    # A scale was just submitted: let the actuator put it on the wire before
                    # folding in the rest of a large batch.
                    self.kicked = False
                    await asyncio.sleep(0)
            self._metrics.events.inc(len(batch.deliveries))
            # Ack after the effect (the state has the events), grouped: one XACK round per
            # `ack_interval_s` at most and never more than one in flight, so acking costs Redis
            # and this loop little; a lost or late ack only means a redelivery after a restart.
            unacked.extend(batch.deliveries)
            if (acking is None or acking.done()) and (
                now - acked_at >= self._ack_interval_s or len(unacked) >= 10_000
            ):
                acking = asyncio.ensure_future(ack(consumer, unacked))
                unacked, acked_at = [], now
        if unacked:
            await ack(consumer, unacked)


async def ack(consumer: EventConsumer, deliveries: list[Delivery]) -> None:
    """Ack `deliveries`; a failure is logged (the consumer keeps them and retries)."""
    try:
        await consumer.ack(deliveries)
    except Exception as exc:  # the consumer keeps them and retries before its next read
        log.warning("ack failed (will retry): %r", exc)
