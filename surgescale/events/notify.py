"""Which model streams had entries added, pushed by Redis, so a read names only those.

A read of every model's stream names them all: at 1,000 models one XREADGROUP is a ~45 KB
command, and Redis spends ~1.8 ms on it when it blocks (each stream registered, then unregistered
when one wakes it); the controller sent ~140 of those a second at 10,000 events/s, a quarter of
a Redis core and a tenth of its own. Redis can instead say which keys changed: with keyspace
notifications on for streams (`notify-keyspace-events` holding `K` and `t`), every XADD publishes
`xadd` on `__keyspace@<db>__:<key>`. `StreamNotes` subscribes to that channel pattern for the
event streams under one prefix and keeps the set of streams named since the last `take()`; the
consumer (`surgescale.events.consumer`) then reads just those, without BLOCK.

- Turning it on: at each (re)connection the flags are read with CONFIG GET and the missing ones
  added with CONFIG SET (what was set is kept). A Redis that refuses CONFIG (a managed service,
  an ACL without `+config`) leaves `state` at "refused": the consumer reads every stream as
  before, and it is asked again every `RETRY_ENABLE_S`. (Flags set by the operator cannot be
  seen without CONFIG GET, so they are not relied on then.)
- Notifications are fire-and-forget: while the subscription is down some are lost. `epoch`
  counts subscriptions; the consumer reads every stream once after each new one, and every
  `full_read_s` anyway (a safety net). A connection that stops answering PING is dropped and
  made again.
- Single Redis only, over TCP or a Unix socket without TLS (`rawwrite.RawPipe` carries it: 1 µs
  of CPU per notification, against 14 µs through redis-py's PubSub): a Redis Cluster's
  notifications are per node, and its reads already name one hash slot's streams.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from surgescale.events.client import TRANSPORT_ERRORS
from surgescale.events.keys import StreamKeys
from surgescale.events.rawwrite import RawPipe
from surgescale.retry import Backoff, ExponentialBackoff

log = logging.getLogger(__name__)

FLAGS = "notify-keyspace-events"
RETRY_ENABLE_S = 60.0
"""How often a Redis that refused CONFIG SET is asked again."""


def missing_flags(flags: str) -> str:
    """The flags to add to `flags` so stream commands publish keyspace notifications."""
    need = "" if "K" in flags else "K"
    if "t" not in flags and "A" not in flags:
        need += "t"
    return need


class StreamNotes:
    """The streams Redis said had entries added (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        pipe: RawPipe,
        keys: StreamKeys,
        *,
        ping_s: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        self._redis = redis
        self._pipe = pipe
        db = int(redis.connection_pool.connection_kwargs.get("db") or 0)
        self._channel_head = f"__keyspace@{db}__:".encode()
        self._pattern = self._channel_head + keys.stream_pattern.encode()
        self._ping_s = ping_s
        self._backoff = backoff or ExponentialBackoff(base=0.1, cap=5.0)
        self.dirty: set[str] = set()
        """Streams named since the last `take()`."""
        self.epoch = 0
        """Subscriptions made so far: a new one may follow lost notifications."""
        self.live = False
        """Subscribed now: `dirty` is being kept."""
        self.state = "starting"
        """"starting", "on", "refused" (CONFIG SET refused) or "down" (reconnecting)."""
        self._wake = asyncio.Event()
        self._quiet = 0
        """PING intervals that passed without a reply of any kind (reset by every reply)."""
        self._refusal_logged = False

    @classmethod
    def for_client(cls, redis: object, keys: StreamKeys) -> StreamNotes | None:
        """Notes for `redis`'s server, or None if it is not a plain single Redis."""
        pipe = RawPipe.for_client(redis)
        if pipe is None or not isinstance(redis, Redis):
            return None
        return cls(redis, pipe, keys)

    def take(self) -> set[str]:
        """The streams named since the last call (and forget them)."""
        dirty, self.dirty = self.dirty, set()
        self._wake.clear()
        return dirty

    def mark(self, streams: list[str]) -> None:
        """Name `streams` again (a read left entries in them)."""
        if streams:
            self.dirty.update(streams)
            self._wake.set()

    async def wait(self, timeout: float) -> None:
        """Until a stream is named or `timeout` seconds passed."""
        if self.dirty or timeout <= 0:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _on_push(self, reply: Any) -> None:
        kind = reply[0] if isinstance(reply, list) and reply else None
        if kind == b"pmessage":
            channel: bytes = reply[2]
            self.dirty.add(channel[len(self._channel_head) :].decode())
            self._wake.set()
        elif kind == b"psubscribe":
            self.epoch += 1
            self.live = True
            self.state = "on"
            log.info("stream reads follow keyspace notifications (%s)", self._pattern.decode())
        self._quiet = 0

    async def _enable(self) -> bool:
        """Make sure stream commands publish keyspace notifications; False if refused."""
        flags = need = ""
        try:
            got: dict[Any, Any] = await self._redis.config_get(FLAGS)
            value = next(iter(got.values()), b"") if got else b""
            flags = value.decode() if isinstance(value, bytes) else str(value)
            need = missing_flags(flags)
            if not need:
                return True
            await self._redis.config_set(FLAGS, flags + need)
        except ResponseError as exc:  # no CONFIG here (an ACL, a managed service)
            if not self._refusal_logged:
                self._refusal_logged = True
                log.warning(
                    "Redis refused to turn on keyspace notifications for streams (%s): every "
                    "read names every model stream; set %s to include 'Kt' on the server to "
                    "read only the streams that changed",
                    exc,
                    FLAGS,
                )
            return False
        log.info("turned on Redis keyspace notifications for streams (%s %r)", FLAGS, flags + need)
        return True

    async def run(self) -> None:
        """Subscribe and keep `dirty` until cancelled; reconnect with backoff on failure."""
        failures = 0
        while True:
            try:
                if not await self._enable():
                    self.state = "refused"
                    await asyncio.sleep(RETRY_ENABLE_S)
                    continue
                self._quiet = 0
                listening = asyncio.ensure_future(
                    self._pipe.listen([b"PSUBSCRIBE", self._pattern], self._on_push)
                )
                try:
                    while not (await asyncio.wait([listening], timeout=self._ping_s))[0]:
                        self._quiet += 1
                        if self._quiet > 2:  # two PINGs unanswered
                            log.warning("keyspace notifications: no answer to PING; reconnecting")
                            self._pipe.close()
                        else:
                            self._pipe.send([b"PING"])
                        failures = 0
                    listening.result()  # raises: the connection was lost
                finally:
                    listening.cancel()
            except TRANSPORT_ERRORS as exc:
                failures += 1
                if failures == 1:
                    log.warning("keyspace notifications lost (%s); reading every stream", exc)
            finally:
                self.live = False
            self.state = "down"
            await asyncio.sleep(self._backoff.compute(max(failures, 1)))
