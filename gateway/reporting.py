"""What the gateway tells the controller: one event per request milestone, plus snapshots.

All emission is synchronous and O(1) (`EventProducer.emit` only appends to a buffer), so the
request path never waits on Redis; with Redis away the producer buffers, then drops the oldest
and counts them. A request's events are held for `linger_s` (`event_linger_ms`) before they are
handed to the producer, together: the producer flushes at once when idle, and a flush (a redis-py
pipeline, ~0.1-0.2 ms of CPU) run per event lands between a request's send to the pod and its
first byte; lingering turns a request's four events into about one flush, after its first byte. A
request's last event (`complete`, `cancel`, `reject`) releases at once, so a request's events are
never later than they were without the linger once it is over. Each event is stamped (`ts_ms`)
when it is emitted, not when it is flushed; order is kept (snapshots are held with them, so
a snapshot still follows the events it counts).

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


_TERMINAL = frozenset({EventType.COMPLETE, EventType.CANCEL, EventType.REJECT})
"""A request's last event: it releases what is held at once (the answer is out, or about to be)."""

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
    ) -> None:
        self.gateway = gateway
        self.producer = producer
        self.linger_s = linger_s
        """How long a request's events wait to go to the producer together (0: at once)."""
        self._held: list[Event] = []
        self._release_at: asyncio.TimerHandle | None = None
        self.pod_cap = pod_cap
        """model -> the gateway's per-pod cap, reported in snapshots (None: not reported)."""
        self._wall_ms = wall_ms
        self.seq = 0
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        """Also tell `listener` of every milestone `emit` is given (events on or off); a
        listener that raises is logged, never fails the request."""
        self._listeners.append(listener)

    @property
    def enabled(self) -> bool:
        return self.producer is not None

    def dropped(self) -> int:
        return self.producer.stats.dropped if self.producer is not None else 0

    def emit(self, kind: EventType, model: str, request_id: str = "", **fields: object) -> None:
        producer = self.producer
        if producer is not None:
            event = Event(
                type=kind,
                model=model,
                gateway=self.gateway,
                ts_ms=self._wall_ms(),
                request_id=request_id,
                **fields,  # type: ignore[arg-type]
            )
            # A request's last event: the request is over, nothing of it is left waiting.
            self._send(producer, event, now=kind in _TERMINAL)
        for listener in self._listeners:
            try:
                listener(kind, model, request_id, fields)
            except Exception:  # a listener (telemetry) must never fail a request
                log.exception("event listener failed on a %s event", kind.value)

    def _send(self, producer: EventProducer, event: Event, *, now: bool) -> None:
        """To the producer at once (no linger, or `now`, with what is held before it), or held
        until the linger timer (started by the first event held) fires."""
        if self.linger_s <= 0:
            producer.emit(event)
            return
        self._held.append(event)
        if now:
            self.release()
        elif self._release_at is None:
            loop = asyncio.get_running_loop()
            self._release_at = loop.call_later(self.linger_s, self.release)

    def release(self) -> None:
        """Hand the held events to the producer now (the linger timer, a request's last event,
        shutdown)."""
        if self._release_at is not None:
            self._release_at.cancel()
            self._release_at = None
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
