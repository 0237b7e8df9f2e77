"""A lean pipelined connection to one Redis, for writers that send a batch and read its replies.

Through redis-py a pipeline of a few commands costs ~0.2-0.3 ms of CPU (command objects, packing
through its encoder, a pool checkout with observability hooks, a timeout context per reply read,
response callbacks); in the gateway that is about one write per request, more than the rest of
its event work. `RawPipe` is what is left of it: one asyncio connection of its own, commands
packed as RESP (`rawread.pack`) and written in one call, replies parsed by hiredis as they
arrive, the batch's future resolved when all its replies are in.

- `RawPipe.for_client(client)` gives one for a plain `redis.asyncio.Redis` over TCP or a Unix
  socket (host, port, db, username/password and timeouts taken from its pool) and None for
  anything else (a cluster, TLS, a credential provider, RESP3): the caller keeps redis-py then.
- `execute(commands)` sends the commands and returns one reply per command; an error reply is
  returned as the exception redis-py would raise for it (`ResponseError` subclasses: OOM,
  READONLY, ...), never raised, like redis-py's `execute(raise_on_error=False)`.
- A lost connection or a timeout raises `redis.exceptions.ConnectionError` / `TimeoutError`
  (both `TRANSPORT_ERRORS`) and closes the connection (half a reply may be on it); the next call
  connects again (AUTH and SELECT first). There is no retry here: callers retry with their own
  backoff.
- One batch at a time (callers run one flush at a time; a second concurrent call waits).
- `listen(command, on_push)`: subscribe mode on a pipe of its own (PSUBSCRIBE), every reply
  handed to `on_push` as hiredis parses it, until the connection is lost (`surgescale.events
  .notify`: 1 µs of CPU per message against 14 µs through redis-py's PubSub).
- Closing the client (`surgescale.events.close`) closes its pipes too, as it closes redis-py's
  pooled connections: a writer still running (a producer nobody closed) gets a transport error
  and backs off, as it did through redis-py, instead of writing on after its owner cleaned up.
  A failed or closed connection is aborted: bytes not yet sent are dropped, never sent later.
- `PackedScript(pipe, lua)`: a Lua script by EVALSHA on such a pipe (EVAL again on NOSCRIPT).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import weakref
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from surgescale.events.rawread import pack

try:  # where redis-py keeps its error-prefix -> exception map (OOM, READONLY, LOADING, ...)
    from redis._parsers.base import BaseParser

    _parse_error: Any = BaseParser.parse_error
except ImportError:  # pragma: no cover - an older or newer redis-py layout
    _parse_error = ResponseError


class _Protocol(asyncio.Protocol):
    """Feeds hiredis; resolves the waiting batch once it has `expected` replies."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=_parse_error)
        self.transport: asyncio.Transport | None = None
        self.replies: list[Any] = []
        self.expected = 0
        self.waiter: asyncio.Future[list[Any]] | None = None
        self.lost: BaseException | None = None
        self.on_push: Callable[[Any], None] | None = None
        """Subscribe mode (`RawPipe.listen`): every reply goes here as it is parsed."""
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        replies = self.replies
        on_push = self.on_push
        try:
            while (reply := reader.gets()) is not False:
                if on_push is not None:
                    on_push(reply)
                else:
                    replies.append(reply)
        except InvalidResponse as exc:  # not RESP: nothing more on this connection is usable
            self._fail(exc)
            if self.transport is not None:
                self.transport.close()
            return
        waiter = self.waiter
        if waiter is not None and len(replies) >= self.expected and not waiter.done():
            self.replies = []
            waiter.set_result(replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("Redis closed the connection")
        self._fail(self.lost)
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class RawPipe:
    """One connection to a single Redis for pipelined batches (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 1.0,
        connect_timeout: float = 1.0,
    ) -> None:
        self._host, self._port, self._path = host, port, path
        self._setup: list[list[bytes]] = []
        if password is not None:
            user = [username.encode()] if username else []
            self._setup.append([b"AUTH", *user, password.encode()])
        if db:
            self._setup.append([b"SELECT", str(db).encode()])
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._proto: _Protocol | None = None
        self._lock = asyncio.Lock()
        self.connects = 0
        """Connections opened so far (a reconnect after a failure counts again)."""

    @classmethod
    def for_client(cls, client: object) -> RawPipe | None:
        """A pipe to the server `client` talks to, or None if it is not a plain single Redis."""
        if not isinstance(client, Redis):
            return None
        pool = client.connection_pool
        kwargs: dict[str, Any] = dict(getattr(pool, "connection_kwargs", {}))
        kind = getattr(pool, "connection_class", None)
        if kind not in (Connection, UnixDomainSocketConnection):
            return None  # TLS or a custom connection: redis-py's own path
        if kwargs.get("credential_provider") is not None or kwargs.get("protocol") not in (
            None,
            2,
            "2",
        ):
            return None
        timeout = kwargs.get("socket_timeout") or 1.0
        common: dict[str, Any] = {
            "db": int(kwargs.get("db") or 0),
            "username": kwargs.get("username"),
            "password": kwargs.get("password"),
            "timeout": float(timeout),
            "connect_timeout": float(kwargs.get("socket_connect_timeout") or timeout),
        }
        if kind is UnixDomainSocketConnection:
            pipe = cls(path=str(kwargs["path"]), **common)
        else:
            pipe = cls(
                host=str(kwargs.get("host") or "localhost"),
                port=int(kwargs.get("port") or 6379),
                **common,
            )
        _PIPES.setdefault(client, weakref.WeakSet()).add(pipe)
        return pipe

    @property
    def connected(self) -> bool:
        proto = self._proto
        return proto is not None and proto.lost is None and proto.transport is not None

    async def execute(self, commands: Sequence[Sequence[bytes]]) -> list[Any]:
        """Send `commands` in one write; one reply per command (error replies as exceptions)."""
        if not commands:
            return []
        packed = b"".join([pack(c) for c in commands])
        async with self._lock:
            proto = self._proto
            if proto is None or not self.connected:
                proto = await self._connect()
            try:
                return await self._roundtrip(proto, packed, len(commands))
            except BaseException:
                self.close()  # half a reply may be left on the connection
                raise

    async def _roundtrip(self, proto: _Protocol, packed: bytes, n: int) -> list[Any]:
        transport = proto.transport
        assert transport is not None
        waiter: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        proto.waiter, proto.expected = waiter, n
        try:
            transport.write(packed)
            async with asyncio.timeout(self.timeout):
                return await waiter
        except TimeoutError:
            raise RedisTimeoutError(f"Redis did not answer within {self.timeout:g}s") from None
        except (OSError, InvalidResponse) as exc:
            raise RedisConnectionError(f"Redis connection failed: {exc!r}") from exc
        finally:
            proto.waiter, proto.expected = None, 0

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        proto = _Protocol()
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self._path is not None:
                    await loop.create_unix_connection(lambda: proto, self._path)
                else:
                    assert self._host is not None
                    transport, _ = await loop.create_connection(
                        lambda: proto, self._host, self._port
                    )
                    sock = transport.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._setup:
                    packed = b"".join([pack(c) for c in self._setup])
                    for reply in await self._roundtrip(proto, packed, len(self._setup)):
                        if isinstance(reply, Exception):
                            raise reply
        except TimeoutError:
            self._drop(proto)
            raise RedisTimeoutError(
                f"could not connect to Redis within {self.connect_timeout:g}s"
            ) from None
        except OSError as exc:
            self._drop(proto)
            raise RedisConnectionError(f"could not connect to Redis: {exc!r}") from exc
        except BaseException:
            self._drop(proto)
            raise
        self._proto = proto
        self.connects += 1
        return proto

    async def listen(self, command: Sequence[bytes], on_push: Callable[[Any], None]) -> None:
        """Subscribe mode: send `command` (SUBSCRIBE, PSUBSCRIBE) on a connection of this
        pipe's own and hand every reply from then on (the confirmation, then each message) to
        `on_push`, called from the protocol as replies are parsed, several per read when they
        came together. Ends, by raising `redis.exceptions.ConnectionError`, when the connection
        is lost or `close()`d. The pipe is for this alone until then."""
        async with self._lock:
            proto = self._proto
            if proto is None or not self.connected:
                proto = await self._connect()
            transport = proto.transport
            assert transport is not None
            proto.on_push = on_push
            try:
                transport.write(pack(command))
                await proto.closed
            finally:
                self.close()
        raise RedisConnectionError(f"Redis connection lost: {proto.lost!r}")

    def send(self, command: Sequence[bytes]) -> bool:
        """Write `command` without waiting for its reply (PING while `listen`ing: its reply
        goes to `on_push`); False if there is no connection."""
        proto = self._proto
        if proto is None or proto.transport is None or proto.lost is not None:
            return False
        proto.transport.write(pack(command))
        return True

    @staticmethod
    def _drop(proto: _Protocol) -> None:
        if proto.transport is not None:
            proto.transport.abort()  # unsent bytes are dropped, not sent after the failure

    def close(self) -> None:
        """Close the connection (the next `execute` opens a new one)."""
        proto, self._proto = self._proto, None
        if proto is not None:
            self._drop(proto)


_PIPES: weakref.WeakKeyDictionary[object, weakref.WeakSet[RawPipe]] = weakref.WeakKeyDictionary()
"""client -> the pipes made for it (closed with it)."""


def close_pipes(client: object) -> None:
    """Close the connections of every pipe made for `client` (`surgescale.events.close`)."""
    for pipe in list(_PIPES.get(client, ())):
        pipe.close()


class PackedScript:
    """A Lua script run by EVALSHA over a `RawPipe` (redis-py's `Script` without its overhead).

    On NOSCRIPT (a Redis that never saw it, or restarted) it is sent once more with EVAL, which
    also caches it for the next EVALSHA. An error reply is raised, as redis-py's `Script` does."""

    def __init__(self, pipe: RawPipe, script: str) -> None:
        self.pipe = pipe
        self._body = script.encode()
        self.sha = hashlib.sha1(self._body, usedforsecurity=False).hexdigest().encode()

    async def __call__(self, *, keys: Sequence[str], args: Sequence[str | int | bytes]) -> Any:
        tail = [b"%d" % len(keys), *(k.encode() for k in keys), *(_arg(a) for a in args)]
        (reply,) = await self.pipe.execute([[b"EVALSHA", self.sha, *tail]])
        if isinstance(reply, NoScriptError):
            (reply,) = await self.pipe.execute([[b"EVAL", self._body, *tail]])
        if isinstance(reply, Exception):
            raise reply
        return reply


def _arg(value: str | int | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return b"%d" % value
    return value.encode()
