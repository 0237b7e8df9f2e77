"""The batching event producer: never blocks a request, loses only what it must, and says so.

`emit()` is synchronous and O(1): it appends to a bounded in-memory buffer and wakes the flusher.
The flusher does group commit: when it is idle a single event is sent at once; while a flush is in
flight, new events accumulate and go out together in the next pipeline, packed up to
`events_per_entry` events of one model per stream entry (one XADD for many events). When Redis is unreachable
the buffer keeps the newest `buffer_limit` events (the oldest are dropped and counted) and the
flusher retries with backoff; the caller never sees the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from surgescale.events.keys import StreamKeys
from surgescale.events.schema import Event, encode_batch
from surgescale.retry import Backoff, ExponentialBackoff

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ProducerStats:
    """Counters of one producer (read them; the producer updates them)."""

    emitted: int = 0
    flushed: int = 0
    dropped: int = 0
    flushes: int = 0
    flush_errors: int = 0
    last_flush_ms: float = 0.0
    flush_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    """Recent flush latencies (one pipeline round trip), for percentiles."""

    @property
    def buffered(self) -> int:
        return self.emitted - self.flushed - self.dropped


class EventProducer:
    """Writes events to per-model Redis streams with group commit and a bounded buffer."""

    def __init__(
        self,
        redis: Redis,
        *,
        keys: StreamKeys | None = None,
        maxlen: int = 100_000,
        buffer_limit: int = 100_000,
        batch_limit: int = 5_000,
        events_per_entry: int = 100,
        backoff: Backoff | None = None,
    ) -> None:
        self._redis = redis
        self.keys = keys or StreamKeys()
        self._maxlen = maxlen
        self._buffer: deque[Event] = deque()
        self._buffer_limit = buffer_limit
        self._batch_limit = batch_limit
        self._per_entry = max(1, events_per_entry)
        self._backoff = backoff or ExponentialBackoff(base=0.05, cap=2.0)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._registered: set[str] = set()
        self._closing = False
        self.stats = ProducerStats()
        self.connected = True

    def emit(self, event: Event) -> None:
        """Queue one event for sending. Never blocks, never raises for transport problems."""
        buffer = self._buffer
        if len(buffer) >= self._buffer_limit:
            buffer.popleft()
            self.stats.dropped += 1
        buffer.append(event)
        self.stats.emitted += 1
        self._wake.set()

    async def start(self) -> None:
        """Start the background flusher (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-producer")

    async def close(self, timeout: float = 2.0) -> None:
        """Flush what is buffered (within `timeout`), then stop the flusher."""
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything emitted so far has been sent (or dropped); True if it was."""
        target = self.stats.emitted
        deadline = time.monotonic() + timeout
        while self.stats.flushed + self.stats.dropped < target:
            if time.monotonic() > deadline:
                return False
            self._wake.set()
            await asyncio.sleep(0.001)
        return True

    async def _run(self) -> None:
        failures = 0
        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take()
            started = time.perf_counter()
            try:
                await self._send(batch)
            except (RedisError, OSError) as exc:
                failures += 1
                self.stats.flush_errors += 1
                self._give_back(batch)
                if self.connected:
                    log.warning("event flush failed, buffering: %s", exc)
                self.connected = False
                if self._closing:
                    return
                await asyncio.sleep(self._backoff.compute(failures))
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            if not self.connected:
                log.info("event flush recovered after %d failures", failures)
            self.connected = True
            failures = 0
            self.stats.flushed += len(batch)
            self.stats.flushes += 1
            self.stats.last_flush_ms = elapsed_ms
            self.stats.flush_ms.append(elapsed_ms)

    def _take(self) -> list[Event]:
        buffer = self._buffer
        if len(buffer) <= self._batch_limit:
            batch = list(buffer)
            buffer.clear()
            return batch
        return [buffer.popleft() for _ in range(self._batch_limit)]

    def _give_back(self, batch: list[Event]) -> None:
        """Put a failed batch back in front, keeping only the newest `buffer_limit` events."""
        room = self._buffer_limit - len(self._buffer)
        if room < len(batch):
            lost = len(batch) - max(room, 0)
            self.stats.dropped += lost
            batch = batch[lost:]
        self._buffer.extendleft(reversed(batch))

    async def _send(self, batch: list[Event]) -> None:
        keys = self.keys
        by_model: dict[str, list[Event]] = {}
        for event in batch:
            group = by_model.get(event.model)
            if group is None:
                by_model[event.model] = group = []
            group.append(event)
        new_streams: list[str] = []
        per_entry = self._per_entry
        async with self._redis.pipeline(transaction=False) as pipe:
            for model, events in by_model.items():
                stream = keys.stream(model)
                if stream not in self._registered:
                    self._registered.add(stream)
                    new_streams.append(stream)
                    pipe.sadd(keys.registry, stream)
                for start in range(0, len(events), per_entry):
                    pipe.xadd(
                        stream,
                        encode_batch(events[start : start + per_entry]),  # type: ignore[arg-type]
                        maxlen=self._maxlen,
                        approximate=True,
                    )
            try:
                await pipe.execute()
            except BaseException:
                self._registered.difference_update(new_streams)
                raise
