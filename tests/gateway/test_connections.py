"""Client connections under abuse, on real loopback sockets against `gateway.server.serve`.

Idle connections and slowloris ones (a request head trickled byte by byte) are closed once the
keep-alive timeout passes, while normal requests keep being served; a body that never finishes
gets a 408; connections beyond `max_connections` get a JSON 503 and are closed; a gateway with
no API keys refuses to start unless told to serve unauthenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from gateway.cli import main as gateway_main
from gateway.server import OpenAccessRefused, serve
from gateway.settings import GatewaySettings
from tests.gateway.conftest import MODEL, Harness, wait_for

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def served(settings: GatewaySettings) -> AsyncIterator[str]:
    """The gateway's real serving path (`serve`) on a free loopback port; yields its URL."""
    stop = asyncio.Event()
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(settings, stop=stop, handle_signals=False, on_listening=listening.set_result)
    )
    try:
        yield await asyncio.wait_for(listening, 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def _closed_by_peer(reader: asyncio.StreamReader, *, within: float) -> bool:
    """True if the server closes the connection within `within` seconds (EOF or reset)."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


async def _slowloris(host: str, port: int, done: asyncio.Event) -> asyncio.StreamReader:
    reader, writer = await asyncio.open_connection(host, port)

    async def trickle() -> None:
        head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
        with contextlib.suppress(OSError):
            writer.write(head)
            n = 0
            while not done.is_set():
                writer.write(b"X-Slow-%d: y\r\n" % n)  # never the blank line that ends the head
                n += 1
                await asyncio.sleep(0.1)

    task = asyncio.create_task(trickle())
    done_task = asyncio.create_task(done.wait())
    done_task.add_done_callback(lambda _: task.cancel())
    return reader


async def test_idle_and_slowloris_connections_are_shed_and_normal_requests_served(
    harness: Harness,
) -> None:
    pod = await harness.pod()
    timeout = 1.0
    settings = harness.settings(static_pods=[f"{MODEL}={pod.url}"], keepalive_timeout_s=timeout)
    async with served(settings) as url:
        host, port = url.removeprefix("http://").split(":")
        async with aiohttp.ClientSession() as http:
            await wait_for(lambda: _ready(http, url), what="pod ready")
            done = asyncio.Event()
            opened = time.monotonic()
            # Keep the writers: a StreamWriter closes its connection when collected.
            idle = [await asyncio.open_connection(host, int(port)) for _ in range(200)]
            slow = [await _slowloris(host, int(port), done) for _ in range(100)]
            body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
            statuses: list[int] = []

            async def normal() -> None:
                while time.monotonic() - opened < timeout + 1.5:
                    async with http.post(url + "/v1/completions", json=body) as r:
                        statuses.append(r.status)
                        await r.read()
                    await asyncio.sleep(0.05)

            load = asyncio.create_task(normal())
            closed = await asyncio.gather(
                *(_closed_by_peer(r, within=timeout + 3.0) for r in [r for r, _ in idle] + slow)
            )
            done.set()
            await load
    shed = sum(closed)
    assert shed == len(closed), f"only {shed} of {len(closed)} flood connections were closed"
    assert statuses, "no normal request ran during the flood"
    assert set(statuses) == {200}, statuses


async def _ready(http: aiohttp.ClientSession, url: str) -> bool:
    async with http.get(url + "/readyz") as r:
        return r.status == 200


async def test_a_body_that_never_finishes_gets_408(harness: Harness) -> None:
    settings = harness.settings(body_timeout_s=0.5, static_pods=[f"{MODEL}=http://127.0.0.1:9"])
    async with served(settings) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"model"'
        )
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), head
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            error = orjson.loads(await reader.readexactly(length))["error"]
        assert error["code"] == "request_timeout"
        writer.close()


async def test_connections_beyond_the_cap_get_a_json_503(harness: Harness) -> None:
    pod = await harness.pod()
    settings = harness.settings(
        static_pods=[f"{MODEL}={pod.url}"], max_connections=20, keepalive_timeout_s=1.0
    )
    async with served(settings) as url:
        host, port = url.removeprefix("http://").split(":")
        held = [await asyncio.open_connection(host, int(port)) for _ in range(20)]
        await asyncio.sleep(0.1)  # let the server register them
        reader, writer = await asyncio.open_connection(host, int(port))
        async with asyncio.timeout(5):
            reply = await reader.read()
        writer.close()
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), head
        assert orjson.loads(body)["error"]["code"] == "service_unavailable"
        async with (
            aiohttp.ClientSession() as http,
            http.get(url + "/metrics") as r,
        ):
            assert r.status == 503  # still full: the scrape itself is refused
        # Once the idle ones are shed, there is room again.
        assert all(await asyncio.gather(*(_closed_by_peer(r, within=4) for r, _ in held)))
        async with (
            aiohttp.ClientSession() as http,
            http.get(url + "/metrics") as r,
        ):
            text = await r.text()
        assert "surgescale_gateway_connections_refused_total 2.0" in text, text[-600:]
        assert "surgescale_gateway_connections_open 1.0" in text


async def test_no_api_keys_refuses_to_start_unless_allowed(harness: Harness) -> None:
    settings = harness.settings(allow_unauthenticated=False)
    with pytest.raises(OpenAccessRefused, match="allow-unauthenticated"):
        await serve(settings, handle_signals=False)
    code = gateway_main(["--port", "0", "--redis-url", "none"])
    assert code == 2
    keyed = harness.settings(allow_unauthenticated=False, api_keys=["k1"])
    async with (
        served(keyed) as url,
        aiohttp.ClientSession() as http,
        http.get(url + "/healthz") as r,
    ):
        assert r.status == 200
