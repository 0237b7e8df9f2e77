"""One XREADGROUP over many streams on a single Redis, at a cost that does not grow per call.

A controller reads every model's stream in one XREADGROUP. Through redis-py each call encodes the
whole argument list again (two arguments per stream: 2,000 for 1,000 models, ~1 ms of CPU) and
turns every entry's field list into a dict, so with many models the read itself costs more than
the events it returns. `PackedRead` keeps the command packed (RESP) and re-packs it only when the
streams, the ids to read from or the block time change (`StreamsRead.key`), sends it on a
connection of the client's own pool and hands back Redis's reply as the parser gives it (nested
lists; `streams_of` and `fields_dict` read both that and redis-py's parsed form).

Error handling is redis-py's: an error reply (NOGROUP, UNBLOCKED) is raised as `ResponseError` and
leaves the connection in use; anything else (timeout, connection lost, cancellation mid-reply)
drops the connection, since half a reply may be left on it. There is no retry here: the
consumer's read loop backs off and reads again. A Redis Cluster client is not served here (a read
there names one slot's node: `surgescale.events.consumer`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ResponseError


def pack(args: Iterable[bytes]) -> bytes:
    """`args` as one RESP command (an array of bulk strings), packed by hiredis."""
    packed: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]  # stub: a 1-tuple
    return packed


class PackedRead:
    """XREADGROUP of a fixed set of streams, packed once per change of what is read."""

    def __init__(
        self, redis: Redis, *, group: str, consumer: str, count: int, max_entries: int
    ) -> None:
        self._redis = redis
        self._head = [b"XREADGROUP", b"GROUP", group.encode(), consumer.encode()]
        self._count = count
        self.max_entries = max_entries
        """About how many entries one read returns at most (COUNT is lowered to keep to it)."""
        self._key: object = None
        self._packed = b""

    @staticmethod
    def usable(redis: object) -> bool:
        """Whether `redis` is a plain (non-cluster, pooled) asyncio client."""
        return isinstance(redis, Redis) and getattr(redis, "connection", None) is None

    def count_for(self, n_streams: int) -> int:
        """The COUNT per stream of a read of `n_streams` streams."""
        return max(1, min(self._count, self.max_entries // max(n_streams, 1)))

    def packed(self, key: object, streams: dict[str, str], block: int | None) -> bytes:
        """The command for `streams` (stream -> id), re-packed only when `key` changes (the
        caller's version of its streams and ids, with `block`; None: always, not kept)."""
        if key is None or key != self._key:
            # Redis applies COUNT per stream: a read of N streams that are behind returns up to
            # COUNT x N entries, all decoded before the first is used. Keep it near max_entries.
            count = self.count_for(len(streams))
            args = [*self._head, b"COUNT", str(count).encode()]
            if block is not None:
                args += [b"BLOCK", str(block).encode()]
            args.append(b"STREAMS")
            args += [s.encode() for s in streams]
            args += [i.encode() for i in streams.values()]
            self._packed = pack(args)
            self._key = key
        return self._packed

    async def __call__(self, packed: bytes) -> Any:
        """Send `packed` and return the raw reply (None: nothing within the block time)."""
        pool = self._redis.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(packed, check_health=False)
            return await conn.read_response()
        except ResponseError:
            raise  # a whole error reply: the connection is fine
        except BaseException:
            await conn.disconnect(nowait=True)  # possibly half a reply left on it
            raise
        finally:
            await pool.release(conn)


def streams_of(reply: Any) -> Iterator[tuple[Any, Any]]:
    """(stream, entries) of an XREADGROUP reply, RESP2 (a list) or RESP3 (a map)."""
    if not reply:
        return iter(())
    if isinstance(reply, dict):
        return iter(reply.items())
    return iter(reply)


def fields_dict(fields: Any) -> dict[bytes, bytes]:
    """An entry's fields as a dict, from Redis's flat list or redis-py's dict."""
    if isinstance(fields, dict):
        return fields
    if len(fields) == 2:
        return {fields[0]: fields[1]}
    return dict(zip(fields[::2], fields[1::2], strict=True))
