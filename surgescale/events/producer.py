"""The batching event producer: never blocks a request, loses only what it must, and says so.

`emit()` is synchronous and O(1): it appends to a bounded in-memory buffer and wakes the flusher.
The flusher does group commit: when it is idle a single event is sent at once; while a flush is in
flight, new events accumulate and go out together in the next pipeline, packed up to
`events_per_entry` events of one model per stream entry (one XADD for many events). When Redis is unreachable
the buffer keeps the newest `buffer_limit` events (the oldest are dropped and counted) and the
flusher retries with backoff; the caller never sees the failure.

The write: on a single Redis a flush's commands go out over the producer's own connection
(`surgescale.events.rawwrite.RawPipe`: RESP packed in one write, replies read by hiredis), about
half the CPU of a redis-py pipeline; a cluster (or TLS) uses redis-py's pipeline, which routes.

Identity: the first time an event is sent it is stamped with this producer's `origin` (random per
producer) and the next `eseq` of its model, so a batch resent after a timeout (Redis may have
applied it) carries the same ids and the controller applies it once.

Memory: each stream is bounded in events and in age (`StreamLimits`): every XADD trims to
`max_events / (events per entry)` entries, the divisor being the largest entry this producer wrote
lately (so a flood of full entries is bounded by events, not batches), and an XTRIM MINID drops
entries older than `max_age_s` (at most once a second per stream). When Redis refuses writes
(`maxmemory` reached: an OOM error), the refused events are dropped and counted (`stats.refused`)
rather than retried, and the producer trims its streams (XTRIM is allowed when Redis is full).

Redis Cluster: a batch is split by the node that serves each model's stream (the client's slot
map) and each node's part goes in its own pipeline, concurrently, so a failed or resharding node
delays only its own models' events. A write that failed for a reason that passes (connection lost,
timeout, TRYAGAIN / CLUSTERDOWN / MOVED / ASK left after the client's own redirections and retries,
LOADING, READONLY after a failover) is put back in the buffer and sent again with backoff
(`stats.retried` counts them); nothing is dropped but by the bounded buffer, which counts it.

Discovery: a stream is added to the registry set the first time it is written after (re)connecting
and then at least every `register_interval_s`, so a Redis restarted empty learns it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from surgescale.cancel import checkpoint, wait_for
from surgescale.events.client import TRANSPORT_ERRORS, RedisClient, is_cluster
from surgescale.events.keys import StreamKeys
from surgescale.events.rawwrite import RawPipe
from surgescale.events.schema import Event, encode_batch
from surgescale.retry import Backoff, ExponentialBackoff

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ProducerStats:
    """Counters of one producer (read them; the producer updates them)."""

    emitted: int = 0
    flushed: int = 0
    dropped: int = 0
    """Lost: pushed out of a full buffer, or refused by a full Redis (`refused` of them)."""
    refused: int = 0
    """Events Redis refused to store (`maxmemory`/OOM); also counted in `dropped`."""
    retried: int = 0
    """Events whose write failed for a passing reason (Redis away, a cluster node failed or
    resharding) and were put back to be sent again: delayed, not lost."""
    flushes: int = 0
    flush_errors: int = 0
    last_flush_ms: float = 0.0
    flush_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1024))
    """Recent flush latencies (one pipeline round trip), for percentiles."""

    @property
    def buffered(self) -> int:
        return self.emitted - self.flushed - self.dropped


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamLimits:
    """What one model's stream may hold in Redis (see docs/events.md for the sizing)."""

    max_events: int = 100_000
    """Events kept per stream (about; trimming is approximate by one Redis macro node):
    15 MB in full entries, 31 MB at one event per entry (docs/events.md)."""
    max_age_s: float = 300.0
    """Entries older than this (by the producer's clock) are trimmed."""
    trim_interval_s: float = 1.0
    """How often, at most, each stream gets an XTRIM MINID."""

    def __post_init__(self) -> None:
        if self.max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {self.max_events}")
        if not self.max_age_s > 0:
            raise ValueError(f"max_age_s must be > 0, got {self.max_age_s}")


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, OutOfMemoryError) or str(exc).startswith("OOM")


_PASSING = (AskError, TryAgainError, ClusterDownError, ReadOnlyError)
_PASSING_PREFIXES = ("TRYAGAIN", "CLUSTERDOWN", "MOVED", "ASK", "LOADING", "MASTERDOWN", "READONLY")


async def _finish(task: asyncio.Task[None], timeout: float) -> None:
    """Let the flusher end within `timeout`, else cancel it."""
    try:
        await wait_for(asyncio.shield(task), timeout)
    except (TimeoutError, asyncio.CancelledError):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _passes(exc: BaseException) -> bool:
    """True if a failed write is worth sending again (the node, not the write, was the problem)."""
    if not isinstance(exc, ResponseError):
        return True  # connection lost, timeout, a cluster client error: not Redis refusing it
    return isinstance(exc, _PASSING) or str(exc).startswith(_PASSING_PREFIXES)


Part = dict[str, list[Event]]
"""Events of one batch by model, for the models one node serves."""


class EventProducer:
    """Writes events to per-model Redis streams with group commit and a bounded buffer."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        keys: StreamKeys | None = None,
        limits: StreamLimits | None = None,
        buffer_limit: int = 100_000,
        batch_limit: int = 5_000,
        events_per_entry: int = 100,
        backoff: Backoff | None = None,
        origin: str | None = None,
        register_interval_s: float = 30.0,
    ) -> None:
        self._redis = redis
        self._cluster = is_cluster(redis)
        """Asked once, not twice per flush (redis-py's client classes check `isinstance`
        through a typing Protocol's metaclass: 1.4 us quiet, more under load)."""
        self.keys = keys or StreamKeys()
        self.limits = limits or StreamLimits()
        self.origin = origin or secrets.token_hex(6)
        """This producer's incarnation id, stamped on every event it sends."""
        self._eseq: dict[str, int] = {}
        self._entry_peak: dict[str, float] = {}
        """stream -> largest recent events-per-entry (decays slowly), the MAXLEN divisor."""
        self._trimmed_at: dict[str, float] = {}
        self._register_interval_s = register_interval_s
        self._buffer: deque[Event] = deque()
        self._buffer_limit = buffer_limit
        self._batch_limit = batch_limit
        self._per_entry = max(1, events_per_entry)
        self._backoff = backoff or ExponentialBackoff(base=0.05, cap=2.0)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._registered: dict[str, float] = {}
        """stream -> when (monotonic) it was last added to the registry on this connection."""
        self._closing = False
        self.stats = ProducerStats()
        self.connected = True
        self._raw = RawPipe.for_client(redis)
        """The lean write path to a single Redis (None: redis-py's pipeline, e.g. a cluster)."""

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
        try:
            if task is not None:
                await _finish(task, timeout)
        finally:
            if self._raw is not None:
                self._raw.close()  # its own connection, not the client's

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
            checkpoint()
            if not self._buffer:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._stamp(self._take())
            started = time.perf_counter()
            try:
                refused, retry, error = await self._send(batch)
            except TRANSPORT_ERRORS as exc:
                refused, retry, error = 0, batch, exc
            if retry:
                failures += 1
                self.stats.flush_errors += 1
                self.stats.retried += len(retry)
                self.stats.flushed += len(batch) - refused - len(retry)
                # The next connection may reach a Redis that lost its data: register again.
                self._registered.clear()
                self._give_back(retry)
                if self.connected:
                    log.warning(
                        "event flush failed, buffering %d of %d events: %s",
                        len(retry),
                        len(batch),
                        error,
                    )
                self.connected = False
                if self._closing:
                    return
                await asyncio.sleep(self._backoff.compute(failures))
                continue
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            if not self.connected:
                log.info("event flush recovered after %d failures", failures)
            self.connected = True
            self.stats.flushed += len(batch) - refused
            self.stats.flushes += 1
            self.stats.last_flush_ms = elapsed_ms
            self.stats.flush_ms.append(elapsed_ms)
            if refused:
                failures += 1
                if not self._closing:
                    await asyncio.sleep(self._backoff.compute(failures))
            else:
                failures = 0

    def _take(self) -> list[Event]:
        buffer = self._buffer
        if len(buffer) <= self._batch_limit:
            batch = list(buffer)
            buffer.clear()
            return batch
        return [buffer.popleft() for _ in range(self._batch_limit)]

    def _stamp(self, batch: list[Event]) -> list[Event]:
        """Give each event not sent before its id (`origin`, next `eseq` of its model)."""
        origin = self.origin
        counters = self._eseq
        replace = msgspec.structs.replace
        out = []
        for event in batch:
            if event.eseq is None:
                n = counters.get(event.model, 0) + 1
                counters[event.model] = n
                event = replace(event, origin=origin, eseq=n)
            out.append(event)
        return out

    async def _make_room(self, streams: set[str]) -> None:
        """Redis is full: trim our streams to their bounds now (XTRIM runs even when full)."""
        commands: list[list[bytes]] = []
        for stream in streams:
            self._trim(commands, stream, force=True)
        with contextlib.suppress(*TRANSPORT_ERRORS):
            await self._execute(commands)

    async def _execute(self, commands: list[list[bytes]]) -> list[Any]:
        """Send `commands` in one pipeline; one reply each, error replies as exceptions.

        A single Redis gets them through `RawPipe` (its own lean connection); a cluster (or a
        TLS connection) through redis-py's pipeline, which routes each command to its node."""
        raw = self._raw
        if raw is not None:
            return await raw.execute(commands)
        async with self._redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(command[0].decode(), *command[1:])
            results: list[Any] = await pipe.execute(raise_on_error=False)
            return results

    def _maxlen(self, stream: str, entry_events: int) -> int:
        """Entries to keep so the stream holds about `max_events` events."""
        peak = self._entry_peak.get(stream, 1.0)
        peak = max(float(entry_events), peak * 0.999)
        self._entry_peak[stream] = peak
        return max(1, int(self.limits.max_events / peak))

    def _trim(self, commands: list[list[bytes]], stream: str, *, force: bool = False) -> int:
        """XTRIM MINID by age, at most every `trim_interval_s` per stream (forced: now, exact,
        and by count too); the number of commands added to `commands`."""
        now = time.monotonic()
        if not force and now - self._trimmed_at.get(stream, -1e18) < self.limits.trim_interval_s:
            return 0
        self._trimmed_at[stream] = now
        added = 0
        oldest_ms = int((time.time() - self.limits.max_age_s) * 1000)
        key = stream.encode()
        if oldest_ms > 0:
            minid = b"%d-0" % oldest_ms
            approx = [] if force else [b"~"]
            commands.append([b"XTRIM", key, b"MINID", *approx, minid])
            added += 1
        if force:
            peak = self._entry_peak.get(stream, 1.0)
            keep = max(1, int(self.limits.max_events / peak))
            commands.append([b"XTRIM", key, b"MAXLEN", b"%d" % keep])
            added += 1
        return added

    def _give_back(self, batch: list[Event]) -> None:
        """Put a failed batch back in front, keeping only the newest `buffer_limit` events."""
        room = self._buffer_limit - len(self._buffer)
        if room < len(batch):
            lost = len(batch) - max(room, 0)
            self.stats.dropped += lost
            batch = batch[lost:]
        self._buffer.extendleft(reversed(batch))

    def _split(self, by_model: Part) -> list[Part]:
        """The batch in parts, one per Redis Cluster node (as the client's slot map has it)."""
        if not self._cluster or len(by_model) < 2:
            return [by_model]
        client = cast(RedisCluster, self._redis)  # `_cluster`: asked once, in __init__
        parts: dict[str, Part] = {}
        for model, events in by_model.items():
            try:
                slot = key_slot(self.keys.stream(model).encode())
                node = client.nodes_manager.get_node_from_slot(slot).name
            except TRANSPORT_ERRORS:  # slot map not known yet: one pipeline, the client routes it
                node = ""
            parts.setdefault(node, {})[model] = events
        return list(parts.values())

    async def _send(self, batch: list[Event]) -> tuple[int, list[Event], BaseException | None]:
        """Write a batch: (events Redis refused (OOM), which are dropped; events whose write
        failed for a passing reason, to send again; the first such failure).

        A refused write is not retried: against a full Redis that would only hold newer events
        back. Each node's part of a cluster batch succeeds or fails on its own.
        """
        by_model: Part = {}
        for event in batch:
            group = by_model.get(event.model)
            if group is None:
                by_model[event.model] = group = []
            group.append(event)
        register = self._due_registrations(by_model)
        parts = self._split(by_model)
        if not self._cluster:
            try:
                return await self._send_part(parts[0], register)
            except TRANSPORT_ERRORS as exc:
                for stream in register:
                    self._registered.pop(stream, None)
                return 0, batch, exc
        # On a cluster the registry is a key of its own, maybe on a node that is away: it is
        # written apart, so that its failure never holds back (or duplicates) the events.
        outcomes: list[Any] = await asyncio.gather(
            self._register(register),
            *(self._send_part(part, []) for part in parts),
            return_exceptions=True,
        )
        if isinstance(outcomes[0], BaseException):
            raise outcomes[0]
        results = outcomes[1:]
        refused = 0
        retry: list[Event] = []
        error: BaseException | None = None
        for part, result in zip(parts, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, TRANSPORT_ERRORS):
                    raise result
                error = error or result
                for events in part.values():
                    retry.extend(events)
                continue
            part_refused, part_retry, part_error = result
            refused += part_refused
            retry.extend(part_retry)
            error = error or part_error
        return refused, retry, error

    def _due_registrations(self, by_model: Part) -> list[str]:
        """Streams to add to the registry now (first write since connecting, or stale)."""
        now = time.monotonic()
        registered = self._registered
        due: list[str] = []
        for model in by_model:
            stream = self.keys.stream(model)
            if now - registered.get(stream, -1e18) >= self._register_interval_s:
                registered[stream] = now
                due.append(stream)
        return due

    async def _register(self, streams: list[str]) -> None:
        """SADD `streams` to the registry (cluster); on failure they are registered later."""
        if not streams:
            return
        try:
            await self._redis.sadd(self.keys.registry, *streams)
        except BaseException as exc:
            for stream in streams:
                self._registered.pop(stream, None)
            if not isinstance(exc, TRANSPORT_ERRORS):
                raise

    async def _send_part(
        self, by_model: Part, register: list[str]
    ) -> tuple[int, list[Event], BaseException | None]:
        """One pipeline for `by_model` (and the registry SADD of `register`); see `_send`.
        A failed pipeline raises."""
        keys = self.keys
        per_entry = self._per_entry
        registered = self._registered
        commands: list[list[bytes]] = []
        sizes: list[tuple[str, list[Event]]] = []
        """One row per pipelined command: (stream, events it carries; none for bookkeeping)."""
        if register:
            registry = keys.registry.encode()
            for stream in register:
                commands.append([b"SADD", registry, stream.encode()])
                sizes.append((stream, []))
        for model, events in by_model.items():
            stream = keys.stream(model)
            key = stream.encode()
            for start in range(0, len(events), per_entry):
                chunk = events[start : start + per_entry]
                ((name, value),) = encode_batch(chunk).items()
                maxlen = b"%d" % self._maxlen(stream, len(chunk))
                commands.append([b"XADD", key, b"MAXLEN", b"~", maxlen, b"*", name, value])
                sizes.append((stream, chunk))
            for _ in range(self._trim(commands, stream)):
                sizes.append((stream, []))
        try:
            results = await self._execute(commands)
        except BaseException:
            for stream in register:
                registered.pop(stream, None)
            raise
        refused = 0
        retry: list[Event] = []
        error: BaseException | None = None
        full: set[str] = set()
        for (stream, chunk), result in zip(sizes, results, strict=True):
            if not isinstance(result, Exception):
                continue
            if not chunk:
                registered.pop(stream, None)
                continue
            if _passes(result):
                retry.extend(chunk)
                error = error or result
                continue
            refused += len(chunk)
            full.add(stream)
            if not _is_oom(result):
                log.error("redis refused an event write: %s", result)
        if refused:
            self.stats.dropped += refused
            self.stats.refused += refused
            log.warning("redis refused %d events (full?); dropped, trimming", refused)
            await self._make_room(full)
        return refused, retry, error
