"""The consumer-group reader: every model's stream, at-least-once, never stalled by poison.

`EventConsumer.batches()` is an async generator of `Batch`es: the events read in one XREADGROUP
(over all known model streams, discovering new ones while running) plus entries reclaimed with
XAUTOCLAIM from consumers that died. On a Redis Cluster one XREADGROUP may only name streams of
one hash slot, so the streams are grouped by slot and every group has its own read in flight
(concurrent, each blocking up to `block_ms`); a batch is what the reads that finished first
returned, and a busy slot never holds back another, since each has its own read. Past
`max_parallel_reads` slot groups the reads stop blocking and take turns (round robin), with a short
sleep when a whole round found nothing. On a single Redis the read of all streams is packed once
per change of the streams (`surgescale.events.rawread`), and its COUNT per stream is lowered with
many streams so that one read returns about `max_entries_per_read` entries at most (Redis applies
COUNT per stream). A model filter (`model_filter`, changeable while running)
limits the streams read, for controllers that split the models between them. Call `await batch.ack()` after the effect. Iterating the
consumer itself yields `(event, ack)` pairs for code that wants one event at a time.

Entries that fail to decode, or that were delivered more than `max_deliveries` times, go to the
dead-letter stream with the reason and are acknowledged, so the group moves on.

Streams are found in the registry set and, every `scan_interval_s`, by SCAN over the key pattern,
so a Redis that restarted empty (registry gone) is still read. A stream found after the first look,
or whose group vanished (NOGROUP: Redis lost it, or it was collected), is read from its start:
events carry ids, so the controller applies what it has seen before once. A failed ack is kept and
retried before the next read. Stale entries are reclaimed a slice of streams per poll
(`CLAIM_SLICE`, one pipelined round trip), so no read waits for N round trips. Housekeeping:
`remove_group()` on a clean shutdown, and, with `stale_group_prefix` set, other groups of that
prefix whose consumers have not read for `stale_group_idle_s` are destroyed beside the reads,
pipelined (a stopped controller's group would otherwise grow its lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, ResponseError

from surgescale.cancel import checkpoint
from surgescale.events.client import TRANSPORT_ERRORS, RedisClient, is_cluster
from surgescale.events.keys import StreamKeys
from surgescale.events.notify import StreamNotes
from surgescale.events.rawread import PackedRead, fields_dict, streams_of
from surgescale.events.rawwrite import RawPipe
from surgescale.events.schema import FIELD, Event, decode_entry
from surgescale.retry import Backoff, ExponentialBackoff

log = logging.getLogger(__name__)

Ack = Callable[[], Awaitable[None]]

CLAIM_SLICE = 256
"""Streams whose stale entries are reclaimed per poll (one pipelined round trip): with many
streams a claim round is spread over a few polls instead of holding one read back."""

COLLECT_SLICE = 256
"""Streams whose consumer groups are inspected per pipelined round trip (stale-group clean-up)."""

DEAD_LETTER_MAXLEN = 1_000
"""Entries kept in the dead-letter stream: each may hold a whole batch entry (<= ~30 KB)."""


class Poison(NamedTuple):
    """A stream entry (or part of a batch entry) to set aside in the dead-letter stream."""

    stream: str
    entry_id: str
    fields: dict[bytes, bytes]
    reason: str
    ack: bool = True


class Delivery(NamedTuple):
    """One decoded event with where it came from (a tuple: one is made per event read)."""

    stream: str
    entry_id: str
    event: Event


@dataclass(slots=True)
class Batch:
    """Events read together; `ack()` acknowledges all of them in one round trip per stream."""

    deliveries: list[Delivery]
    _consumer: EventConsumer
    _events: list[Event] | None = None

    @property
    def events(self) -> list[Event]:
        if self._events is None:
            self._events = [d.event for d in self.deliveries]
        return self._events

    async def ack(self) -> None:
        await self._consumer.ack(self.deliveries)


@dataclass(slots=True)
class ConsumerStats:
    """Counters of one consumer."""

    delivered: int = 0
    acked: int = 0
    reclaimed: int = 0
    dead_lettered: int = 0
    read_errors: int = 0
    ack_errors: int = 0
    streams: int = 0
    slot_groups: int = 0
    """Hash slots the streams fall in (a Redis Cluster reads each slot's streams separately)."""
    groups_collected: int = 0
    notified_reads: int = 0
    """Reads of only the streams keyspace notifications named."""
    full_reads: int = 0
    """Reads (single Redis) that named every stream."""
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)


def default_consumer_name() -> str:
    """host-pid, unique per process and stable across nothing (a restart is a new consumer)."""
    return f"{socket.gethostname()}-{os.getpid()}"


ModelFilter = Callable[[str], bool]
"""Which models a consumer reads: called with a model name, True to read its stream."""


class EventConsumer:
    """Reads all model streams under `keys` (or those `model_filter` selects) as member
    `consumer` of consumer group `group`, on a single Redis or a Redis Cluster."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        group: str,
        consumer: str | None = None,
        keys: StreamKeys | None = None,
        count: int = 1_000,
        block_ms: int = 100,
        start_id: str = "0",
        claim_idle_ms: int = 30_000,
        claim_interval_s: float = 5.0,
        max_deliveries: int = 5,
        discover_interval_s: float = 1.0,
        scan_interval_s: float = 5.0,
        stale_group_prefix: str | None = None,
        stale_group_idle_s: float = 600.0,
        collect_interval_s: float = 60.0,
        backoff: Backoff | None = None,
        model_filter: ModelFilter | None = None,
        max_parallel_reads: int = 256,
        max_entries_per_read: int = 10_000,
        poll_interval_ms: float = 0.0,
        notify: bool = False,
        full_read_s: float = 1.0,
    ) -> None:
        self._redis = redis
        self._cluster = is_cluster(redis)
        self._model_filter = model_filter
        self._max_parallel_reads = max(1, max_parallel_reads)
        self._inflight: dict[int, asyncio.Task[list[Delivery]]] = {}
        """slot -> the read of that slot's streams in flight (Redis Cluster)."""
        self._slot_of: dict[str, int] = {}
        self._groups: dict[int, list[str]] | None = None
        """slot -> its streams, rebuilt when the streams change (None: to rebuild)."""
        self._round_robin = 0
        self._discover_failed = False
        self._discover_failures = 0
        self._slot_failures: dict[int, int] = {}
        self._slot_retry_at: dict[int, float] = {}
        """slot -> when its read may be tried again after failures (its node is away)."""
        self.group = group
        self.consumer = consumer or default_consumer_name()
        self.keys = keys or StreamKeys()
        self._count = count
        self._block_ms = block_ms
        self._start_id = start_id
        self._claim_idle_ms = claim_idle_ms
        self._claim_interval_s = claim_interval_s
        self._max_deliveries = max_deliveries
        self._discover_interval_s = discover_interval_s
        self._backoff = backoff or ExponentialBackoff(base=0.05, cap=2.0)
        self._streams: dict[str, str] = {}
        """stream -> the id to read from next: "0" (own pending history first), then ">"."""
        self._seen: set[str] = set()
        """Every model stream found so far, read or not (the filter may leave it out)."""
        self._history: set[str] = set()
        """The streams whose next id is not ">" (their own pending history is read first)."""
        self._version = 0
        """Bumped whenever a stream is added or dropped or its next id changes."""
        self._packed = (
            PackedRead(
                redis,
                group=group,
                consumer=self.consumer,
                count=count,
                max_entries=max_entries_per_read,
            )
            if isinstance(redis, Redis) and PackedRead.usable(redis)
            else None
        )
        """The read of all streams, packed once per change (single Redis: `rawread`)."""
        self._ack_pipe = RawPipe.for_client(redis) if self._packed is not None else None
        """The XACKs of a batch, one per stream, on a lean connection of their own (single
        Redis): through redis-py's pipeline they took 12-13 µs of CPU per stream, 3 here."""
        self._poll_s = poll_interval_ms / 1000.0
        """Single Redis, > 0: while a read found entries within the last `block_ms`, reads do
        not block and are sent at most this often (0: every read blocks until an entry
        comes)."""
        self._notes = (
            StreamNotes.for_client(redis, self.keys)
            if notify and self._packed is not None
            else None
        )
        """Single Redis, `notify`: the streams Redis's keyspace notifications named since the
        last read (`surgescale.events.notify`); while they are live, a read names only those."""
        self._notes_task: asyncio.Task[None] | None = None
        self._notes_epoch = 0
        """The notes' subscription the last read of every stream followed."""
        self._full_read_s = full_read_s
        self._next_full = 0.0
        """When the next read of every stream is due while notifications are live."""
        self._found_at = -math.inf
        """When a read of all streams last found entries (monotonic)."""
        self._last_read_at = -math.inf
        self._full: list[str] = []
        """Streams the last read of all streams returned a full COUNT of (read again at once)."""
        self._claim_queue: list[str] = []
        """Streams left in the current claim round (a slice is reclaimed per poll)."""
        self._housekeeping: asyncio.Task[None] | None = None
        """The stale-group clean-up running beside the reads."""
        self._claim_cursor: dict[str, str] = {}
        self._next_discover = 0.0
        self._next_claim = 0.0
        self._scan_interval_s = scan_interval_s
        self._next_scan = 0.0
        self._stale_prefix = stale_group_prefix
        self._stale_idle_ms = int(stale_group_idle_s * 1000)
        self._collect_interval_s = collect_interval_s
        self._next_collect = time.monotonic() + collect_interval_s
        self._discovered_once = False
        self._ack_retry: list[Delivery] = []
        self._stopped = False
        self.stats = ConsumerStats()

    def stop(self) -> None:
        """Make the generators return after the current read."""
        self._stopped = True

    @property
    def streams(self) -> list[str]:
        return list(self._streams)

    @property
    def notify_state(self) -> str:
        """Whether keyspace notifications name the streams to read: "off" (not asked for, or
        not a plain single Redis), else `StreamNotes.state` ("on", "refused", "down", ...)."""
        return "off" if self._notes is None else self._notes.state

    @property
    def notified(self) -> bool:
        """Reads follow keyspace notifications now: subscribed, and every stream was read since
        the subscription was made (what was added before it is in hand)."""
        notes = self._notes
        return notes is not None and notes.live and self._notes_epoch == notes.epoch

    @property
    def models(self) -> list[str]:
        """The models whose streams are read now."""
        return [m for m in map(self.keys.model_of, self._streams) if m is not None]

    @property
    def all_models(self) -> list[str]:
        """The models of every stream found so far, whether `model_filter` reads it or not."""
        return [m for m in map(self.keys.model_of, self._seen) if m is not None]

    @property
    def model_filter(self) -> ModelFilter | None:
        """Which models are read (None: all); may be changed while running."""
        return self._model_filter

    @model_filter.setter
    def model_filter(self, selected: ModelFilter | None) -> None:
        """Read only the models `selected` picks from now on: streams no longer picked are
        dropped at once (events of theirs still in flight are not yielded and stay pending in
        the group); newly picked ones are found at the next poll and first read from their
        pending history."""
        self._model_filter = selected
        for stream in list(self._streams):
            if not self._selected(stream):
                self._forget(stream)
        self._next_discover = 0.0
        self._next_scan = 0.0

    def _selected(self, stream: str) -> bool:
        model = self.keys.model_of(stream)
        if model is None:
            return False
        return self._model_filter is None or bool(self._model_filter(model))

    def _forget(self, stream: str) -> None:
        self._streams.pop(stream, None)
        self._history.discard(stream)
        self._claim_cursor.pop(stream, None)
        self._groups = None
        self._version += 1
        self.stats.streams = len(self._streams)

    def _read_next(self, stream: str, next_id: str) -> None:
        """Read `stream` from `next_id` on ("0" or an entry id: our own pending history; ">":
        new entries)."""
        if self._streams.get(stream) == next_id:
            return
        self._streams[stream] = next_id
        if next_id == ">":
            self._history.discard(stream)
        else:
            self._history.add(stream)
        self._version += 1

    async def discover(self) -> None:
        """Pick up streams registered (or, every `scan_interval_s`, present) since the last
        look, creating the group on each."""
        found: set[str] = set()
        try:
            names: Any = await self._redis.smembers(self.keys.registry)
            found.update(raw.decode() if isinstance(raw, bytes) else str(raw) for raw in names)
        except TRANSPORT_ERRORS as exc:
            if not self._cluster:
                raise
            # The registry's node is away: the SCAN below finds the streams.
            log.debug("stream registry unreadable: %s", exc)
            self._next_scan = 0.0
            self._discover_failed = True
        now = time.monotonic()
        if now >= self._next_scan:
            self._next_scan = now + self._scan_interval_s
            found.update(await self._scan_streams())
        self._seen |= found
        # Streams that appear later were written after we started: read them from the start.
        start = self._start_id if not self._discovered_once else "0"
        for stream in sorted(found):
            if stream not in self._streams and self._selected(stream):
                try:
                    await self._ensure_group(stream, start)
                except TRANSPORT_ERRORS:
                    if not self._cluster:
                        raise
                    self._discover_failed = True
                    continue  # its node is away: picked up at a later look
                self._read_next(stream, "0")
                self._claim_cursor[stream] = "0-0"
                self._slot_of[stream] = key_slot(stream.encode())
                self._groups = None
        self._discovered_once = True
        self.stats.streams = len(self._streams)
        if self._discover_failed:
            # A node is away (Redis Cluster): look again, by SCAN too, but back off so that
            # the slow failing look does not hold up the reads of the healthy slots.
            self._discover_failed = False
            self._discover_failures += 1
            again = time.monotonic() + self._backoff.compute(self._discover_failures)
            self._next_discover = self._next_scan = again
        else:
            self._discover_failures = 0

    async def _scan_streams(self) -> set[str]:
        """Stream keys found by SCAN: on a Redis Cluster on every primary, one at a time, so a
        failed node hides only its own streams."""
        found: set[str] = set()
        pattern = self.keys.stream_pattern
        redis = self._redis
        if not isinstance(redis, RedisCluster) or not redis.get_primaries():
            async for raw in redis.scan_iter(match=pattern, count=1_000, _type="stream"):
                found.add(raw.decode() if isinstance(raw, bytes) else str(raw))
            return found
        for node in redis.get_primaries():
            try:
                async for raw in redis.scan_iter(
                    match=pattern, count=1_000, _type="stream", target_nodes=node
                ):
                    found.add(raw.decode() if isinstance(raw, bytes) else str(raw))
            except TRANSPORT_ERRORS as exc:
                log.debug("SCAN of %s failed: %s", node.name, exc)
                self._discover_failed = True
        return found

    async def _ensure_group(self, stream: str, start_id: str | None = None) -> None:
        try:
            await self._redis.xgroup_create(
                stream, self.group, id=start_id or self._start_id, mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def remove_group(self) -> int:
        """Destroy this consumer's group on every known stream (a clean shutdown of a consumer
        whose group is its own); how many were removed."""
        removed = 0
        for stream in list(self._streams):
            removed += int(await self._redis.xgroup_destroy(stream, self.group))
        return removed

    async def collect_stale_groups(self) -> list[tuple[str, str]]:
        """Destroy groups named `stale_group_prefix*` (not ours) whose consumers have all been
        idle for `stale_group_idle_s` (or that have none); the (stream, group) pairs removed.

        A few pipelined round trips per `COLLECT_SLICE` streams (not two per stream); a stream
        gone meanwhile is skipped."""
        prefix = self._stale_prefix
        if prefix is None:
            return []
        removed: list[tuple[str, str]] = []
        streams = list(self._streams)
        for start in range(0, len(streams), COLLECT_SLICE):
            part = streams[start : start + COLLECT_SLICE]
            infos = await self._each(part, lambda pipe, s: pipe.xinfo_groups(s))
            others: list[tuple[str, str]] = []
            for stream, groups in zip(part, infos, strict=True):
                for info in groups if isinstance(groups, list) else []:
                    raw = info.get("name", b"")
                    name = raw.decode() if isinstance(raw, bytes) else str(raw)
                    if name != self.group and name.startswith(prefix):
                        others.append((stream, name))
            if not others:
                continue
            consumers = await self._each(others, lambda pipe, sg: pipe.xinfo_consumers(*sg))
            stale = []
            for pair, members in zip(others, consumers, strict=True):
                if not isinstance(members, list):
                    continue
                idle = min((int(c.get("idle", 0)) for c in members), default=None)
                if idle is None or idle >= self._stale_idle_ms:
                    stale.append(pair)
            if stale:
                done = await self._each(stale, lambda pipe, sg: pipe.xgroup_destroy(*sg))
                removed += [
                    pair for pair, ok in zip(stale, done, strict=True) if ok is True or ok == 1
                ]
        if removed:
            self.stats.groups_collected += len(removed)
            log.info("collected %d stale consumer groups: %s", len(removed), removed[:5])
        return removed

    async def _each(self, items: list[Any], command: Callable[[Any, Any], Any]) -> list[Any]:
        """`command(pipe, item)` for every item, pipelined (one round trip on a single Redis;
        redis-py splits it by node on a cluster); a command's error reply is its result."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for item in items:
                command(pipe, item)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    async def _collect_quietly(self) -> None:
        try:
            await self.collect_stale_groups()
        except Exception as exc:  # housekeeping: the next round tries again
            log.warning("stale consumer group clean-up failed: %r", exc)

    async def batches(self) -> AsyncIterator[Batch]:
        """Yield batches until `stop()`; transient Redis errors are retried with backoff.

        Reads still in flight when the generator ends (a Redis Cluster's per-slot reads) are
        cancelled: what they had taken stays pending in the group, re-read from this consumer's
        history when it comes back under the same name, or reclaimed by another consumer."""
        failures = 0
        if self._notes is not None and self._notes_task is None:
            self._notes_task = asyncio.create_task(self._notes.run(), name="stream notes")
        try:
            while not self._stopped:
                checkpoint()  # a cancel redis-py's write lost (surgescale.cancel) stops us here
                try:
                    deliveries = await self._poll()
                except TRANSPORT_ERRORS as exc:
                    failures += 1
                    self.stats.read_errors += 1
                    log.warning("event read failed (%d in a row): %s", failures, exc)
                    await asyncio.sleep(self._backoff.compute(failures))
                    continue
                failures = 0
                if deliveries:
                    self.stats.delivered += len(deliveries)
                    yield Batch(deliveries, self)
        finally:
            await self._cancel_reads()

    async def _cancel_reads(self) -> None:
        tasks: list[asyncio.Task[Any]] = list(self._inflight.values())
        self._inflight.clear()
        if self._notes_task is not None:
            tasks.append(self._notes_task)
            self._notes_task = None
        if self._housekeeping is not None:
            tasks.append(self._housekeeping)
            self._housekeeping = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aiter__(self) -> AsyncIterator[tuple[Event, Ack]]:
        async for batch in self.batches():
            for delivery in batch.deliveries:

                async def ack(d: Delivery = delivery) -> None:
                    await self.ack([d])

                yield delivery.event, ack

    async def ack(self, deliveries: list[Delivery]) -> None:
        """XACK `deliveries` (and any whose ack failed before); on failure they are kept for
        the next try (before the next read) and the error is raised."""
        if self._ack_retry:
            deliveries = self._ack_retry + deliveries
            self._ack_retry = []
        by_stream: dict[str, dict[str, None]] = {}
        for d in deliveries:
            ids = by_stream.get(d.stream)
            if ids is None:
                by_stream[d.stream] = ids = {}
            ids[d.entry_id] = None
        if not by_stream:
            return
        try:
            if self._ack_pipe is not None:
                # One XACK per stream, packed and sent as one batch (`rawwrite.RawPipe`).
                group = self.group.encode()
                replies = await self._ack_pipe.execute(
                    [
                        (b"XACK", stream.encode(), group, *[i.encode() for i in ids])
                        for stream, ids in by_stream.items()
                    ]
                )
                for reply in replies:
                    if isinstance(reply, ResponseError):
                        raise reply
            elif len(by_stream) == 1:  # the common case: no pipeline machinery
                [(stream, ids)] = by_stream.items()
                await self._redis.xack(stream, self.group, *ids)
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for stream, ids in by_stream.items():
                        pipe.xack(stream, self.group, *ids)
                    await pipe.execute()
        except TRANSPORT_ERRORS:
            self.stats.ack_errors += 1
            self._ack_retry = deliveries[-1_000_000:]
            raise
        self.stats.acked += len(deliveries)

    async def _poll(self) -> list[Delivery]:
        now = time.monotonic()
        if self._ack_retry:
            await self.ack([])
        if now >= self._next_discover:
            self._next_discover = now + self._discover_interval_s
            await self.discover()
        if now >= self._next_collect and (self._housekeeping is None or self._housekeeping.done()):
            # Beside the reads, not before one: with many streams it takes a while.
            self._next_collect = now + self._collect_interval_s
            if self._stale_prefix is not None:
                self._housekeeping = asyncio.create_task(self._collect_quietly())
        if not self._streams:
            await asyncio.sleep(self._block_ms / 1000.0)
            return []
        if self._cluster:
            return await self._poll_slots(now)
        if self._history:
            # Our own pending entries from a previous life under the same name come first,
            # before anything is reclaimed into our pending list.
            history = {s: i for s, i in self._streams.items() if i != ">"}
            return await self._read(history, block=None)
        out: list[Delivery] = []
        if now >= self._next_claim and not self._claim_queue:
            self._next_claim = now + self._claim_interval_s
            self._claim_queue = list(self._streams)
        if self._claim_queue:
            part = self._claim_queue[:CLAIM_SLICE]
            del self._claim_queue[:CLAIM_SLICE]
            out.extend(await self._reclaim(part))
        notes = self._notes
        if notes is not None and notes.live:
            if notes.epoch == self._notes_epoch and now < self._next_full:
                out.extend(await self._read_named(notes, out, now))
                return out
            # A new subscription (notifications may have been lost before it) or the safety
            # net's turn: read every stream once, without blocking; what is named from now on
            # is read next.
            self._notes_epoch, self._next_full = notes.epoch, now + self._full_read_s
            notes.take()
            self.stats.full_reads += 1
            out.extend(await self._read(self._streams, block=None))
            notes.mark(self._full)
            self._full = []
            return out
        block: int | None = None if out else self._block_ms
        if block is not None and self._poll_s > 0 and now - self._found_at < block / 1000.0:
            # Entries came within the last block time, so more are probably on their way:
            # read without BLOCK, at most every `poll_interval_ms`. A read of N streams that
            # blocks costs Redis ~0.8 µs per stream named (registered, then unregistered when
            # one stream wakes it, and that read returns that stream alone): at 1,000 streams
            # ~0.8 ms a wake, against ~0.1 ms for a read without BLOCK that finds nothing.
            wait = self._last_read_at + self._poll_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            block = None
        self.stats.full_reads += 1
        got = await self._read(self._streams, block=block)
        self._last_read_at = time.monotonic()
        if got:
            self._found_at = self._last_read_at
        out.extend(got)
        full, self._full = self._full, []
        if full and self._packed is not None:
            # A stream that filled its (lowered) COUNT is behind: a hot model among many
            # quiet ones. Read just those again now, with what the read's entry cap left
            # unused, so one busy stream is not starved by a cap meant for all of them.
            packed = self._packed
            if len(out) + len(full) * packed.count_for(len(full)) <= packed.max_entries:
                out.extend(await self._read(dict.fromkeys(full, ">"), block=None))
        return out

    async def _read_named(
        self, notes: StreamNotes, found: list[Delivery], now: float
    ) -> list[Delivery]:
        """Read the streams keyspace notifications named (waiting for one up to the block
        time, unless `found` has entries already), without BLOCK. A stream not known yet is
        looked for at the next poll; one that filled its COUNT is named again at once."""
        if not found:
            await notes.wait(min(self._block_ms / 1000.0, self._next_full - now))
        named = notes.take()
        streams = self._streams
        wanted = {s: ">" for s in named if streams.get(s) == ">"}
        if len(wanted) < len(named) and any(s not in self._seen for s in named):
            self._next_discover = 0.0
        if not wanted:
            return []
        self.stats.notified_reads += 1
        got = await self._read(wanted, block=None)
        notes.mark(self._full)
        self._full = []
        return got

    def _slot_groups(self) -> dict[int, list[str]]:
        if self._groups is None:
            groups: dict[int, list[str]] = {}
            for stream in self._streams:
                slot = self._slot_of.get(stream)
                if slot is None:
                    slot = self._slot_of[stream] = key_slot(stream.encode())
                groups.setdefault(slot, []).append(stream)
            self._groups = groups
            self.stats.slot_groups = len(groups)
        return self._groups

    async def _poll_slots(self, now: float) -> list[Delivery]:
        """One poll on a Redis Cluster: a read per hash slot, the finished ones harvested."""
        out: list[Delivery] = []
        groups = self._slot_groups()
        history = bool(self._history)
        if not history and now >= self._next_claim:
            self._next_claim = now + self._claim_interval_s
            out.extend(await self._reclaim())
        blocking = len(groups) <= self._max_parallel_reads
        order = sorted(groups)
        start = self._round_robin % len(order)
        started = 0
        for slot in order[start:] + order[:start]:
            if slot in self._inflight or self._slot_retry_at.get(slot, 0.0) > now:
                continue
            if len(self._inflight) >= self._max_parallel_reads:
                break
            streams = {s: self._streams[s] for s in groups[slot]}
            own = {s: i for s, i in streams.items() if i != ">"}
            block = None if (own or out or not blocking) else self._block_ms
            self._inflight[slot] = asyncio.create_task(self._read(own or streams, block))
            started += 1
        self._round_robin = start + started
        if not self._inflight and not out:
            # Every slot is backing off (its node away): sleep until the first may be tried.
            wake = min(self._slot_retry_at.values(), default=now)
            await asyncio.sleep(max(0.0, min(wake - time.monotonic(), self._block_ms / 1000.0)))
            return out
        if self._inflight:
            await asyncio.wait(
                list(self._inflight.values()),
                timeout=0 if out else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
        errors: list[BaseException] = []
        for slot, task in list(self._inflight.items()):
            if not task.done():
                continue
            del self._inflight[slot]
            exc = task.exception()
            if exc is None:
                self._slot_failures.pop(slot, None)
                self._slot_retry_at.pop(slot, None)
                # A stream dropped by the model filter while its read was in flight: not yielded.
                out.extend(d for d in task.result() if d.stream in self._streams)
                continue
            if not isinstance(exc, TRANSPORT_ERRORS):
                raise exc
            # This slot's node is away: back off on it alone; the other slots keep being read.
            errors.append(exc)
            failures = self._slot_failures[slot] = self._slot_failures.get(slot, 0) + 1
            self._slot_retry_at[slot] = time.monotonic() + self._backoff.compute(failures)
            if failures == 1:
                log.warning("event read of slot %d failed: %s", slot, exc)
        if errors:
            self.stats.read_errors += len(errors)
            if not out and not self._inflight:
                # Every read failed: wait for the earliest slot to be tried again.
                wake = min(self._slot_retry_at.values(), default=now)
                await asyncio.sleep(max(0.0, min(wake - time.monotonic(), 2.0)))
                return out
        if not out and not blocking:
            await asyncio.sleep(self._block_ms / 5_000.0)
        return out

    async def _read(self, streams: dict[str, str], block: int | None) -> list[Delivery]:
        """One XREADGROUP of `streams` (stream -> next id); the decoded deliveries. `streams`
        may be `self._streams` itself (all streams, packed once per change on a single Redis)."""
        try:
            reply = await self._xreadgroup(streams, block)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                # The group is gone (Redis lost its data, or it was collected): everything in
                # the stream now is unread by us; replays of what we saw are no-ops downstream.
                for stream in list(streams):
                    await self._ensure_group(stream, "0")
                    if stream in self._streams:
                        self._read_next(stream, "0")
                return []
            if str(exc).startswith("UNBLOCKED"):
                return []  # the key was deleted or moved to another node while we waited
            raise
        out: list[Delivery] = []
        poison: list[Poison] = []
        cap = self._packed.count_for(len(streams)) if self._packed is not None else 0
        for raw_stream, entries in streams_of(reply):
            stream = raw_stream.decode() if isinstance(raw_stream, bytes) else raw_stream
            own_history = streams.get(stream) != ">"
            if cap and len(entries) >= cap and not own_history:
                self._full.append(stream)
            if own_history and not entries:
                if stream in self._streams:
                    self._read_next(stream, ">")  # history drained
                continue
            last = None
            for raw_id, fields in entries:
                entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
                last = entry_id
                if fields is None:  # deleted (trimmed) while pending
                    poison.append(Poison(stream, entry_id, {}, "entry deleted while pending"))
                    continue
                self._unpack(stream, entry_id, fields_dict(fields), out, poison)
            if own_history and last is not None and stream in self._streams:
                self._read_next(stream, last)
        if poison:
            await self._dead_letter(poison)
        return out

    async def _xreadgroup(self, streams: dict[str, str], block: int | None) -> Any:
        redis = self._redis
        if self._packed is not None:
            # The read of every stream is packed once per change of the streams or their ids.
            key = (self._version, block) if streams is self._streams else None
            return await self._packed(self._packed.packed(key, streams, block))
        node = None
        if isinstance(redis, RedisCluster):
            # Name the slot's node ourselves: redis-py would otherwise parse XREADGROUP's
            # keys on every call (~0.2 ms of CPU); it still follows MOVED and ASK.
            with contextlib.suppress(RedisClusterException):
                node = redis.get_node_from_key(next(iter(streams)))
        if node is None:
            return await redis.xreadgroup(
                self.group,
                self.consumer,
                dict(streams),  # type: ignore[arg-type]
                count=self._count,
                block=block,
            )
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer]
        args += ["COUNT", self._count]
        if block is not None:
            args += ["BLOCK", block]
        args += ["STREAMS", *streams, *streams.values()]
        return await redis.execute_command(*args, target_nodes=node)

    async def _reclaim(self, streams: list[str] | None = None) -> list[Delivery]:
        """XAUTOCLAIM stale pending entries of `streams` (None: all), each from its cursor:
        pipelined in one round trip on a single Redis, one stream at a time on a cluster (a
        node away costs only its own streams)."""
        out: list[Delivery] = []
        chosen = [s for s in (self._streams if streams is None else streams) if s in self._streams]
        if not chosen:
            return out
        if self._cluster:
            replies = [await self._claim_one(stream) for stream in chosen]
        else:
            replies = await self._each(
                chosen,
                lambda pipe, stream: pipe.xautoclaim(
                    stream,
                    self.group,
                    self.consumer,
                    min_idle_time=self._claim_idle_ms,
                    start_id=self._claim_cursor.get(stream, "0-0"),
                    count=self._count,
                ),
            )
        for stream, reply in zip(chosen, replies, strict=True):
            if isinstance(reply, BaseException):
                if "NOGROUP" in str(reply):
                    with contextlib.suppress(*TRANSPORT_ERRORS):
                        await self._ensure_group(stream, "0")
                    continue
                if isinstance(reply, TRANSPORT_ERRORS) and self._cluster:
                    continue  # its node is away; the others are still reclaimed
                raise reply
            if reply is None:
                continue
            next_cursor, entries = reply[0], reply[1]
            self._claim_cursor[stream] = (
                next_cursor.decode() if isinstance(next_cursor, bytes) else str(next_cursor)
            )
            if not entries:
                continue
            ids = [e[0].decode() if isinstance(e[0], bytes) else e[0] for e in entries]
            counts = await self._delivery_counts(stream, ids)
            poison: list[Poison] = []
            for entry_id, (_, fields) in zip(ids, entries, strict=True):
                delivered = counts.get(entry_id, 1)
                if delivered > self._max_deliveries:
                    poison.append(
                        Poison(stream, entry_id, fields or {}, f"delivered {delivered} times")
                    )
                    continue
                self._unpack(stream, entry_id, fields or {}, out, poison)
            if poison:
                await self._dead_letter(poison)
        self.stats.reclaimed += len(out)
        return out

    async def _claim_one(self, stream: str) -> Any:
        """One stream's XAUTOCLAIM reply, or the error it failed with (a Redis Cluster)."""
        try:
            return await self._redis.xautoclaim(
                stream,
                self.group,
                self.consumer,
                min_idle_time=self._claim_idle_ms,
                start_id=self._claim_cursor.get(stream, "0-0"),
                count=self._count,
            )
        except TRANSPORT_ERRORS as exc:
            return exc

    @staticmethod
    def _unpack(
        stream: str,
        entry_id: str,
        fields: dict[bytes, bytes],
        out: list[Delivery],
        poison: list[Poison],
    ) -> None:
        events, bad = decode_entry(fields)
        if len(events) == 1:
            out.append(Delivery(stream, entry_id, events[0]))
        elif events:
            out.extend([Delivery(stream, entry_id, event) for event in events])
        if not bad:
            return
        if not events:
            # Nothing usable: set the whole entry aside and ack it.
            poison.append(Poison(stream, entry_id, fields, f"decode: {bad[0][1]}"))
            return
        # Part of a batch is bad: set those parts aside; the entry is acked with the good ones.
        for raw, reason in bad:
            poison.append(Poison(stream, entry_id, {FIELD: raw}, f"decode: {reason}", ack=False))

    async def _delivery_counts(self, stream: str, ids: list[str]) -> dict[str, int]:
        rows = await self._redis.xpending_range(
            stream, self.group, min=ids[0], max=ids[-1], count=len(ids) * 2 + 10
        )
        out: dict[str, int] = {}
        for row in rows:
            mid = row["message_id"]
            out[mid.decode() if isinstance(mid, bytes) else str(mid)] = int(row["times_delivered"])
        return out

    async def _dead_letter(self, poison: list[Poison]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, entry_id, fields, reason, ack in poison:
                record: dict[bytes | str, bytes | str] = {
                    "stream": stream,
                    "id": entry_id,
                    "reason": reason,
                    "group": self.group,
                }
                for k, v in fields.items():
                    record[b"raw:" + (k if isinstance(k, bytes) else str(k).encode())] = v
                pipe.xadd(
                    self.keys.dead_letter,
                    record,  # type: ignore[arg-type]
                    maxlen=DEAD_LETTER_MAXLEN,
                    approximate=True,
                )
                if ack:
                    pipe.xack(stream, self.group, entry_id)
            await pipe.execute()
        for *_, reason, _ in poison:
            key = reason.split(":")[0].split(" ")[0]
            self.stats.dead_letter_reasons[key] = self.stats.dead_letter_reasons.get(key, 0) + 1
        self.stats.dead_lettered += len(poison)
        log.warning("dead-lettered %d entries (first: %s)", len(poison), poison[0].reason)
