"""The producer's lean write path to a single Redis (`surgescale.events.rawwrite.RawPipe`), on a
real Redis: replies in order, error replies returned (not raised) like redis-py's pipeline,
the client's database honoured, a lost connection reported as a transport error and reopened."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sim.localredis.server import RedisServer, start_private_redis
from surgescale.events import Event, EventProducer, EventType, StreamKeys, close, connect
from surgescale.events.client import TRANSPORT_ERRORS
from surgescale.events.rawwrite import RawPipe
from surgescale.events.schema import decode_entry
from tests.conftest import client_for


async def test_a_batch_gets_one_reply_per_command_and_errors_come_back_as_values(
    redis_url: str, keys: StreamKeys
) -> None:
    async with client_for(redis_url, keys) as client:
        pipe = RawPipe.for_client(client)
        assert pipe is not None
        key = f"{keys.prefix}:k".encode()
        try:
            replies = await pipe.execute(
                [
                    [b"SET", key, b"not a number"],
                    [b"INCR", key],  # an error reply in the middle of the batch
                    [b"GET", key],
                    [b"XADD", key + b":s", b"MAXLEN", b"~", b"10", b"*", b"e", b"{}"],
                ]
            )
        finally:
            pipe.close()
        assert replies[0] == b"OK"
        assert isinstance(replies[1], Exception)
        assert "not an integer" in str(replies[1])
        assert replies[2] == b"not a number"  # the command after the error still ran
        assert isinstance(replies[3], bytes)
        assert b"-" in replies[3]
        assert await client.xlen(key + b":s") == 1


async def test_the_client_s_database_is_the_one_written(redis_url: str, keys: StreamKeys) -> None:
    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    other = connect(f"{base}/7")
    key = f"{keys.prefix}:db".encode()
    try:
        pipe = RawPipe.for_client(other)
        assert pipe is not None
        assert await pipe.execute([[b"SET", key, b"seven"]]) == [b"OK"]
        pipe.close()
        assert await other.get(key) == b"seven"
        async with client_for(redis_url, keys) as db0:
            assert await db0.get(key) is None
    finally:
        await other.delete(key)
        await close(other)


async def test_a_cluster_client_keeps_redis_py_s_pipeline(redis_cluster_url: str) -> None:
    client = connect(redis_cluster_url)
    try:
        assert RawPipe.for_client(client) is None
        assert EventProducer(client)._raw is None
    finally:
        await close(client)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = start_private_redis()
    try:
        yield server
    finally:
        server.stop()


async def test_a_lost_connection_is_a_transport_error_and_the_next_batch_reconnects(
    private_redis: RedisServer,
) -> None:
    client = connect(private_redis.url, timeout=0.5, connect_timeout=0.2)
    pipe = RawPipe.for_client(client)
    assert pipe is not None
    try:
        assert await pipe.execute([[b"PING"]]) == [b"PONG"]
        private_redis.stop()
        with pytest.raises(TRANSPORT_ERRORS):
            await pipe.execute([[b"PING"]])
        private_redis.start()
        assert await pipe.execute([[b"PING"]]) == [b"PONG"]
        assert pipe.connects == 2
    finally:
        pipe.close()
        await close(client)


async def test_the_producer_writes_through_its_own_pipe_on_a_single_redis(
    redis_url: str, keys: StreamKeys
) -> None:
    async with client_for(redis_url, keys) as client:
        producer = EventProducer(client, keys=keys)
        assert producer._raw is not None
        await producer.start()
        for n in range(5):
            producer.emit(Event(type=EventType.ENQUEUE, model="m", gateway="g", ts_ms=n + 1))
        assert await producer.flush()
        assert producer._raw.connects == 1
        await producer.close()
        assert not producer._raw.connected  # closed with the producer
        entries: Any = await client.xrange(keys.stream("m"))
        events = [e for _, fields in entries for e in decode_entry(fields)[0]]
        assert [e.ts_ms for e in events] == [1, 2, 3, 4, 5]
        assert [e.eseq for e in events] == [1, 2, 3, 4, 5]
        assert keys.stream("m").encode() in await client.smembers(keys.registry)


async def test_closing_the_client_closes_its_pipes(redis_url: str, keys: StreamKeys) -> None:
    """A producer nobody closed stops writing when its client is closed (as through redis-py):
    the events bench, cancelled by SIGTERM, relies on it to clean up after itself."""
    client = connect(redis_url)
    pipe = RawPipe.for_client(client)
    assert pipe is not None
    assert await pipe.execute([[b"PING"]]) == [b"PONG"]
    await close(client)
    assert not pipe.connected
    assert await pipe.execute([[b"PING"]]) == [b"PONG"]  # used again: connects again
    assert pipe.connects == 2
    pipe.close()
