"""`gateway.podlink`: the gateway's own keep-alive connections to pods, for streamed requests.

Against real sockets on loopback: a scripted pod (`asyncio.start_server`) that answers each
request with the bytes a test gives, so framing, early closes and keep-alive are exact. Checks
that a connection is reused after a clean end and not after a broken one or `Connection: close`,
that a pooled connection the pod closed meanwhile is replaced without the caller seeing it, that
a body is the same pulled or pushed (chunks split anywhere), that `close(finish_s=...)` keeps a
connection whose end follows and drops one whose end does not, and that each failure has the
aiohttp type the proxy's retry rules expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import trustme

from gateway.podlink import PodLinks
from tests.gateway.conftest import wait_for

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


@dataclass
class Pod:
    """A scripted pod: each request (read whole) gets `answer`; connections are counted."""

    answer: Answer
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    url: str = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                await self.answer(reader, writer)
                if writer.is_closing():
                    return
        writer.close()


@contextlib.asynccontextmanager
async def scripted(answer: Answer, tls: ssl.SSLContext | None = None) -> AsyncIterator[Pod]:
    pod = Pod(answer)
    server = await asyncio.start_server(pod.serve, "127.0.0.1", 0, ssl=tls)
    scheme = "https" if tls else "http"
    pod.url = f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/completions"
    try:
        yield pod
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)


def stream_of(*parts: bytes, end: bool = True) -> Answer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD)
        for part in parts:
            writer.write(chunk(part))
            await writer.drain()
        if end:
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    return answer


@pytest.fixture
async def links() -> AsyncIterator[PodLinks]:
    pool = PodLinks(connect_timeout_s=2.0, idle_timeout_s=5.0)
    yield pool
    pool.close()


async def pulled(links: PodLinks, url: str) -> bytes:
    stream = await links.post(url, b"{}", {"Content-Type": "application/json"})
    try:
        assert stream.status == 200
        return await stream.read()
    finally:
        stream.close()


async def test_a_connection_is_reused_after_a_clean_end(links: PodLinks) -> None:
    async with scripted(stream_of(b"data: 1\n\n", b"data: [DONE]\n\n")) as pod:
        for _ in range(3):
            assert await pulled(links, pod.url) == b"data: 1\n\ndata: [DONE]\n\n"
        assert pod.connections == 1
        assert len(pod.requests) == 3
        head = pod.requests[0]
        assert head.startswith(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"Content-Type: application/json\r\n" in head
        assert head.endswith(b"Content-Length: 2\r\n\r\n{}")


async def test_connection_close_and_a_broken_body_are_not_reused(links: PodLinks) -> None:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with scripted(closing) as pod:
        assert await pulled(links, pod.url) == b"ok"
        assert await pulled(links, pod.url) == b"ok"
        assert pod.connections == 2
    async with scripted(stream_of(b"data: 1\n\n", end=False)) as pod:
        stream = await links.post(pod.url, b"{}", {})
        assert await stream.readany() == b"data: 1\n\n"
        stream.close()  # before the end: the connection cannot carry another request
        async with scripted(stream_of(b"data: 2\n\n")) as other:
            assert await pulled(links, other.url) == b"data: 2\n\n"
        assert links.idle() == 1  # only the other pod's


async def test_a_pooled_connection_the_pod_closed_is_replaced(links: PodLinks) -> None:
    served = 0

    async def once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        served += 1
        await stream_of(b"data: %d\n\n" % served)(reader, writer)
        writer.close()  # a keep-alive timeout at the pod, after a clean end

    async with scripted(once_then_close) as pod:
        assert await pulled(links, pod.url) == b"data: 1\n\n"
        await asyncio.sleep(0.05)  # the close has reached us, or is about to
        assert await pulled(links, pod.url) == b"data: 2\n\n"
        assert pod.connections == 2


@pytest.mark.parametrize("split", [1, 3, 7, 64])
async def test_pushed_and_pulled_bodies_are_the_same_however_split(
    links: PodLinks, split: int
) -> None:
    events = [b'data: {"n": %d}\n\n' % i for i in range(20)] + [b"data: [DONE]\n\n"]
    wire = HEAD + b"".join(chunk(e) for e in events) + b"0\r\n\r\n"

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in range(0, len(wire), split):
            writer.write(wire[i : i + split])
            await writer.drain()

    async with scripted(dribble) as pod:
        assert await pulled(links, pod.url) == b"".join(events)
        stream = await links.post(pod.url, b"{}", {})
        got = [await stream.readany()]
        await stream.relay(collect(got))
        stream.close()
        assert b"".join(got) == b"".join(events)
        assert pod.connections == 1  # both ended cleanly: one connection


async def test_a_sink_stops_the_relay_and_finish_keeps_the_connection(links: PodLinks) -> None:
    release = asyncio.Event()

    async def done_then_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + chunk(b"data: 1\n\n"))
        await writer.drain()
        await asyncio.sleep(0.1)  # `[DONE]` reaches a relay already waiting, not a buffer
        writer.write(chunk(b"data: [DONE]\n\n"))
        await writer.drain()
        await release.wait()  # the end comes after the relay has stopped
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with scripted(done_then_end) as pod:
        stream = await links.post(pod.url, b"{}", {})
        seen: list[bytes] = []
        await stream.relay(collect(seen, until=b"[DONE]"))
        assert b"".join(seen) == b"data: 1\n\ndata: [DONE]\n\n"
        stream.close(finish_s=2.0)
        assert links.idle() == 0
        release.set()
        await wait_for(lambda: links.idle() == 1, timeout=2.0, what="the connection kept")
        release.clear()
        stream = await links.post(pod.url, b"{}", {})
        await stream.relay(lambda data: b"[DONE]" in data)
        stream.close(finish_s=0.1)  # and this time the end never comes
        await asyncio.sleep(0.3)
        assert links.idle() == 0
        assert pod.connections == 1
        release.set()


async def test_failures_have_the_types_the_retry_rules_expect(links: PodLinks) -> None:
    async with scripted(stream_of()) as pod:
        url = pod.url
    with pytest.raises(aiohttp.ClientConnectionError):  # refused: nobody listens any more
        await links.post(url, b"{}", {})

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with scripted(hang_up) as pod:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await links.post(pod.url, b"{}", {})

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + b"zz\r\nnot a chunk\r\n")
        await writer.drain()

    async with scripted(garbage) as pod:
        stream = await links.post(pod.url, b"{}", {})
        with pytest.raises(aiohttp.ClientPayloadError):
            await stream.read()
        stream.close()

    async with scripted(stream_of(b"data: 1\n\n", end=False)) as pod:

        async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await stream_of(b"data: 1\n\n", end=False)(reader, writer)
            writer.close()

        pod.answer = cut
        stream = await links.post(pod.url, b"{}", {})
        got: list[bytes] = []
        with pytest.raises(aiohttp.ClientPayloadError):
            await stream.relay(collect(got))
        assert got == [b"data: 1\n\n"]
        stream.close()


async def test_a_silent_pod_times_out_pulled_and_pushed() -> None:
    links = PodLinks(connect_timeout_s=2.0, idle_timeout_s=0.3)
    try:
        async with scripted(stream_of(b"data: 1\n\n", end=False)) as pod:
            loop = asyncio.get_running_loop()
            stream = await links.post(pod.url, b"{}", {})
            assert await stream.readany() == b"data: 1\n\n"
            started = loop.time()
            with pytest.raises(aiohttp.SocketTimeoutError):
                await stream.readany()
            assert 0.25 <= loop.time() - started < 2.0
            stream.close()
            stream = await links.post(pod.url, b"{}", {})
            started = loop.time()
            with pytest.raises(aiohttp.SocketTimeoutError):
                await stream.relay(lambda data: False)
            assert 0.25 <= loop.time() - started < 2.0
            stream.close()
            # Paused (the client's socket is full), the pod's silence is not held against it.
            stream = await links.post(pod.url, b"{}", {})
            relay = asyncio.ensure_future(stream.relay(lambda data: False))
            await asyncio.sleep(0.05)
            stream.pause()
            await asyncio.sleep(0.6)
            assert not relay.done()
            stream.resume()
            with pytest.raises(aiohttp.SocketTimeoutError):
                await relay
            stream.close()
    finally:
        links.close()


async def test_a_plain_answer_with_a_length_is_read_whole(links: PodLinks) -> None:
    async def error(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b'{"error": {"message": "bad"}}'
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
        )
        await writer.drain()

    async with scripted(error) as pod:
        stream = await links.post(pod.url, b"{}", {})
        assert stream.status == 400
        assert stream.content_type == "application/json"
        assert stream.headers["content-type"].startswith("application/json")
        assert await stream.read() == b'{"error": {"message": "bad"}}'
        stream.close()
        assert links.idle() == 1


async def test_a_pod_over_tls_is_verified() -> None:
    ca = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(served)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with scripted(stream_of(b"data: 1\n\n"), tls=served) as pod:
        links = PodLinks(connect_timeout_s=2.0, idle_timeout_s=5.0, tls=trusting)
        try:
            assert await pulled(links, pod.url) == b"data: 1\n\n"
            assert await pulled(links, pod.url) == b"data: 1\n\n"
            assert pod.connections == 1
        finally:
            links.close()
        system = PodLinks(connect_timeout_s=2.0, idle_timeout_s=5.0)  # the default: verified
        try:
            with pytest.raises(aiohttp.ClientConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await system.post(pod.url, b"{}", {})
        finally:
            system.close()


def collect(into: list[bytes], until: bytes | None = None) -> Callable[[bytes], bool]:
    """A relay sink appending to `into`; it stops the relay at a chunk holding `until`."""

    def sink(data: bytes) -> bool:
        into.append(data)
        return until is not None and until in data

    return sink
