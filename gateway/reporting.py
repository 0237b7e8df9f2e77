"""What the gateway tells the controller: one event per request milestone, plus snapshots.

All emission is synchronous and O(1) (`EventProducer.emit` only appends to a buffer), so the
request path never waits on Redis; with Redis away the producer buffers, then drops the oldest
and counts them.

The linger (`linger_s`, `event_linger_ms`): events are held and handed to the producer together
when the first of them has waited `linger_s`, so one write to Redis carries the events of every
request (and snapshot) of that window instead of one write per request (the producer flushes at
once when idle; a write costs a syscall, a reply to read and ~40 us of Python). Two rules keep
the controller's view prompt and the writes off the path to a first byte:

- An *urgent* event releases what is held at once: an `enqueue` that has to wait for a slot
  (no free slot, or no pod: the controller must hear of demand beyond capacity now) and every
  `reject`. An `enqueue` dispatched at once, `dispatch`, `first_token`, `complete` and
  `cancel` wait at most `linger_s` (a few ms), the time the controller hears of them later.
- When the timer fires while a request is between its `dispatch` and its first byte (its
  `first_token`, or its end; a request still queued does not count: it waits for a slot, not
  for this process), the release waits until no request is, and goes with the next
  event after that (usually that request's end, so its events share the write; the write runs
  after its first byte is out), but never later than `defer_limit_s` (4 x `linger_s`).

Each event is stamped (`ts_ms`) when it is emitted, not when it is released; order is kept
(snapshots are held with them, so a snapshot still follows the events it counts).

Before any of that, the request path hands its `enqueue` (when dispatched at once), `dispatch`
and `first_token` over with `soon`: they are built at the loop's next turn, which comes while
the request waits for its pod or after its first chunk is written, so the ~20-30 us each costs
on a busy machine is not on the way to the first byte. They keep their time and their order: an
immediate event, a snapshot, a release or the linger's timer first emits what was left. With
listeners (tracing) every event is emitted at once: a span must open before its request leaves.

Accounting the controller can rely on (per model, per gateway):

- `enqueue` +1 queued (every admitted request, at arrival);
- `dispatch` -1 queued, +1 in flight (first send to a pod; a retry sends no second dispatch);
- `reject` with `queue_ms` set: -1 queued (waited too long, evicted); without: never queued;
- `cancel` with `pod` set: -1 in flight; without: -1 queued;
- `complete`: -1 in flight (any status);
- `snapshot` every `interval_ms`: the absolute `queue_depth` and `in_flight`, with `seq`, and
  the model's per-pod cap `pod_cap`.

`enqueue` carries the request's TTFT budget (`deadline_ms`, from `surgescale.slo.Slo`) and
`first_token` whether it was met (`deadline_met`).

`ttft_ms`, `queue_ms`, `e2e_ms` are measured from the request's arrival on the gateway's
monotonic clock; `ts_ms` is wall-clock time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from surgescale.events import Event, EventProducer, EventType, StreamKeys, close, connect
from surgescale.events.client import RedisClient

log = logging.getLogger(__name__)


def tenant_label(api_key: str) -> str:
    """An opaque, stable label for an API key (never the key itself)."""
    return "k-" + hashlib.sha256(api_key.encode()).hexdigest()[:10]


_OPENED_UNTIL = frozenset(
    {EventType.FIRST_TOKEN, EventType.COMPLETE, EventType.CANCEL, EventType.REJECT}
)
"""Events that end a request's wait for its first byte (if it had not ended already)."""
_HOLD_AT_MOST = 4.0
"""By default a release put off for requests before their first byte waits at most this many
lingers."""

Listener = Callable[[EventType, str, str, Mapping[str, Any]], None]
"""(kind, model, request_id, fields) of one request milestone."""


class Reporter:
    """Builds and emits the gateway's events; a no-op when events are off."""

    def __init__(
        self,
        *,
        gateway: str,
        producer: EventProducer | None,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        pod_cap: Callable[[str], int] | None = None,
        linger_s: float = 0.0,
        defer_limit_s: float | None = None,
    ) -> None:
        self.gateway = gateway
        self.producer = producer
        self.linger_s = linger_s
        """How long events wait to go to the producer together (0: at once)."""
        self.defer_limit_s = (
            _HOLD_AT_MOST * linger_s if defer_limit_s is None else max(linger_s, defer_limit_s)
        )
        """The longest a release is put off for requests before their first byte (from the
        oldest held event; default 4 x `linger_s`)."""
        self._held: list[Event] = []
        self._release_at: asyncio.TimerHandle | None = None
        self._held_since = 0.0
        """Loop time the oldest held event was held at."""
        self._opening: set[str] = set()
        """Requests between their `dispatch` and their first byte (or end)."""
        self._due = False
        """The linger ran out while requests were opening: release once none is."""
        self.pod_cap = pod_cap
        """model -> the gateway's per-pod cap, reported in snapshots (None: not reported)."""
        self._wall_ms = wall_ms
        self.seq = 0
        self._listeners: list[Listener] = []
        self._soon: list[tuple[EventType, str, str, int, dict[str, object]]] = []
        """Events left for the loop's next turn (`emit(soon=True)`), in order."""

    def add_listener(self, listener: Listener) -> None:
        """Also tell `listener` of every milestone `emit` is given (events on or off); a
        listener that raises is logged, never fails the request."""
        self._listeners.append(listener)

    @property
    def enabled(self) -> bool:
        return self.producer is not None

    def dropped(self) -> int:
        return self.producer.stats.dropped if self.producer is not None else 0

    def emit(
        self,
        kind: EventType,
        model: str,
        request_id: str = "",
        *,
        urgent: bool = False,
        soon: bool = False,
        **fields: object,
    ) -> None:
        """One request milestone; `urgent` sends it (and what is held before it) at once (an
        `enqueue` that waits for a slot); a `reject` is always urgent.

        `soon` (ignored for an urgent one, and with listeners: a trace's spans open at their
        milestone, before the request leaves) leaves the work to the loop's next turn, which
        comes when the request path next waits (for the pod's answer, or after a write to
        the client): an event is bookkeeping, kept off the way to the first byte. It keeps
        the time of its milestone and its place among the others: an event, snapshot or
        release that comes first takes what was left with it (`catch_up`)."""
        urgent = urgent or kind is EventType.REJECT
        if soon and not urgent and not self._listeners:
            self._soon.append((kind, model, request_id, self._wall_ms(), fields))
            if len(self._soon) == 1:
                asyncio.get_running_loop().call_soon(self.catch_up)
            return
        if self._soon:
            self.catch_up()  # what was left for later goes first: order is kept
        self._emit(kind, model, request_id, self._wall_ms(), fields, urgent=urgent)

    def catch_up(self) -> None:
        """Emit now, in order, the events left for the loop's next turn (`emit(soon=True)`)."""
        pending, self._soon = self._soon, []
        for kind, model, request_id, ts_ms, fields in pending:
            self._emit(kind, model, request_id, ts_ms, fields, urgent=False)

    def _emit(
        self,
        kind: EventType,
        model: str,
        request_id: str,
        ts_ms: int,
        fields: dict[str, object],
        *,
        urgent: bool,
    ) -> None:
        producer = self.producer
        if producer is not None:
            event = Event(
                type=kind,
                model=model,
                gateway=self.gateway,
                ts_ms=ts_ms,
                request_id=request_id,
                **fields,  # type: ignore[arg-type]
            )
            if self.linger_s > 0 and request_id:
                if kind is EventType.DISPATCH:
                    self._opening.add(request_id)
                elif kind in _OPENED_UNTIL:
                    self._opening.discard(request_id)
            self._send(producer, event, now=urgent)
        for listener in self._listeners:
            try:
                listener(kind, model, request_id, fields)
            except Exception:  # a listener (telemetry) must never fail a request
                log.exception("event listener failed on a %s event", kind.value)

    def _send(self, producer: EventProducer, event: Event, *, now: bool) -> None:
        """To the producer at once (no linger, or `now`, with what is held before it), or held
        until the linger runs out (see the module's docstring)."""
        if self.linger_s <= 0:
            producer.emit(event)
            return
        self._held.append(event)
        if now or (self._due and not self._opening and event.type is not EventType.FIRST_TOKEN):
            self.release()
        elif self._release_at is None:
            loop = asyncio.get_running_loop()
            self._held_since = loop.time()
            self._release_at = loop.call_later(self.linger_s, self._linger_over)

    def _linger_over(self) -> None:
        """The timer: release, unless a request is before its first byte (then wait for it,
        up to `defer_limit_s` from the oldest held event)."""
        self._release_at = None
        if self._soon:
            self.catch_up()  # a `dispatch` left for later marks its request as opening
        if not self._opening:
            self.release()
            return
        loop = asyncio.get_running_loop()
        last_call = self._held_since + self.defer_limit_s
        if loop.time() >= last_call:
            self.release()
            return
        self._due = True
        self._release_at = loop.call_at(last_call, self.release)

    @property
    def deferred(self) -> bool:
        """The linger ran out while a request waited for its first byte: the release waits."""
        return self._due

    def release(self) -> None:
        """Hand the held events to the producer now (the linger, an urgent event, shutdown)."""
        if self._soon:
            self.catch_up()
        if self._release_at is not None:
            self._release_at.cancel()
            self._release_at = None
        self._due = False
        held, self._held = self._held, []
        producer = self.producer
        if producer is not None:
            for event in held:
                producer.emit(event)

    def snapshot(self, depths: dict[str, tuple[int, int]], interval_ms: int) -> None:
        """One `snapshot` per model: (queue_depth, in_flight); one `seq` per round."""
        producer = self.producer
        if producer is None:
            return
        if self._soon:
            self.catch_up()  # the events it counts go before it
        self.seq += 1
        ts = self._wall_ms()
        for model, (queued, in_flight) in depths.items():
            # Held like request events (in the same order: a snapshot counts what came before
            # it), so it mostly shares a request's write to Redis instead of one of its own.
            self._send(
                producer,
                Event(
                    type=EventType.SNAPSHOT,
                    model=model,
                    gateway=self.gateway,
                    ts_ms=ts,
                    queue_depth=queued,
                    in_flight=in_flight,
                    seq=self.seq,
                    interval_ms=interval_ms,
                    pod_cap=self.pod_cap(model) if self.pod_cap is not None else None,
                ),
                now=False,
            )


@contextlib.asynccontextmanager
async def event_producer(
    redis_url: str | None, *, prefix: str, buffer_limit: int
) -> AsyncIterator[EventProducer | None]:
    """A started producer for `redis_url` (None: events off), flushed and closed on exit."""
    if redis_url is None:
        yield None
        return
    client: RedisClient = connect(redis_url, timeout=1.0, connect_timeout=0.5)
    producer = EventProducer(client, keys=StreamKeys(prefix=prefix), buffer_limit=buffer_limit)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.close(timeout=2.0)
        with contextlib.suppress(Exception):
            await close(client)


async def snapshot_loop(
    reporter: Reporter,
    depths: Callable[[], dict[str, tuple[int, int]]],
    *,
    interval_ms: int,
) -> None:
    """Emit snapshots every `interval_ms` on the loop clock, without drifting."""
    loop = asyncio.get_running_loop()
    period = interval_ms / 1000.0
    next_at = loop.time()
    while True:
        try:
            reporter.snapshot(depths(), interval_ms)
        except Exception:  # a snapshot must never take the gateway down
            log.exception("snapshot failed")
        next_at += period
        now = loop.time()
        if next_at < now:  # fell behind (a stalled loop): skip, do not burst
            next_at = now + period
        await asyncio.sleep(next_at - now)
