"""Fuzzing the HTTP surface: whatever a client sends, the answer is never a 5xx, and every
error is OpenAI-shaped JSON (`{"error": {"message", "type", "param", "code"}}`), including the
ones aiohttp produces by itself (a malformed request line or header, 404, 405, 413).

Hypothesis builds raw requests (method, path, HTTP version, hostile headers, bodies from random
bytes to almost-valid completions); each goes over a real loopback socket to a gateway served
by `gateway.server.serve` (in a thread with its own event loop) in front of a simulated pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.server import serve
from gateway.settings import GatewaySettings
from sim.pod.runtime import PodOptions, start_pod
from tests.gateway.conftest import MODEL

pytestmark = pytest.mark.timeout(300)


@dataclass
class Served:
    host: str
    port: int


@contextlib.contextmanager
def gateway_in_thread() -> Iterator[Served]:
    """A pod and a gateway (`serve`) on their own event loop in a thread."""
    ready: list[str] = []
    started = threading.Event()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        pod = await start_pod(PodOptions(model=MODEL))
        s = GatewaySettings(
            port=0,
            redis_url=None,
            allow_unauthenticated=True,
            static_pods=[f"{MODEL}={pod.url}"],
            health_interval_s=0.05,
            max_output_tokens=8,
            max_body_bytes=64 * 1024,
            body_timeout_s=0.5,
            keepalive_timeout_s=2.0,
            max_queue_wait_s=5.0,
            drain_timeout_s=0.5,
        )

        def listening(url: str) -> None:
            ready.append(url)
            started.set()

        try:
            await serve(s, stop=stop, handle_signals=False, on_listening=listening)
        finally:
            await pod.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(30), "the gateway did not start"
    host, port = ready[0].removeprefix("http://").split(":")
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(ready[0] + "/readyz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the pod never became ready"
        time.sleep(0.05)
    try:
        yield Served(host=host, port=int(port))
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)


# ---------------------------------------------------------------- strategies
_PATHS = [
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/models",
    "/healthz",
    "/readyz",
    "/metrics",
    "/",
    "/v1",
    "/v1/completions/",
    "/v1/embeddings",
    "/%ff%fe",
    "/v1/../../etc/passwd",
    "*",
    "http://evil/v1/completions",
]
_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW", "P@ST", "G\x01T"]
_VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "HTTX/1.1", "", "HTTP/1.1 junk"]
_HEADERS: list[bytes] = [
    b"Authorization: Bearer \xff\xfe\xfd",
    b"Authorization: Basic Zm9vOmJhcg==",
    b"Authorization: Bearer " + b"k" * 5000,
    b"Authorization:",
    b"Content-Type: text/plain",
    b"Content-Type: application/json; charset=latin-1",
    b"Content-Encoding: gzip",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: identity",
    b"Expect: 100-continue",
    b"Expect: teapot",
    b"X-Long: " + b"a" * 9000,
    b"Bad Header: x",
    b"NoColonHeader",
    b"X-Null: a\x00b",
    b": empty-name",
    b"Host: \xff",
    b"Connection: upgrade",
    b"Upgrade: websocket",
]
_LENGTHS = [None, "-1", "abc", "99999999999999999999", "0", "1, 2", "1000000"]

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_FIELDS = ["model", "prompt", "messages", "stream", "n", "max_tokens", "max_completion_tokens"]


@st.composite
def _almost_valid(draw: st.DrawFn) -> bytes:
    chat = draw(st.booleans())
    payload: dict[str, object] = {"model": MODEL, "max_tokens": 2}
    if chat:
        payload["messages"] = [{"role": "user", "content": "hi"}]
    else:
        payload["prompt"] = "hi"
    for name in draw(st.lists(st.sampled_from(_FIELDS), max_size=3, unique=True)):
        payload[name] = draw(_json)
    return _dumps(payload)


def _dumps(value: object) -> bytes:
    """JSON as a client might send it (stdlib: integers beyond 64 bits included)."""
    return json.dumps(value).encode()


_BODIES = st.one_of(
    st.binary(max_size=300),
    _almost_valid(),
    _json.map(_dumps),
    st.just(b'{"model": "' + MODEL.encode() + b'", "prompt": "x", "n": 1000000}'),
    st.just(b"[" * 5000),
    st.just(b'{"model": "nope", "prompt": "x"}'),
)


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    # Mostly well-formed HTTP around hostile content, sometimes hostile HTTP itself.
    method = draw(st.sampled_from(["POST"] * 6 + ["GET"] * 2 + _METHODS))
    paths = _PATHS[:2] * 6 + _PATHS
    path = draw(st.sampled_from(paths) | st.text(max_size=20).map(lambda t: "/" + t))
    version = draw(st.sampled_from(["HTTP/1.1"] * 10 + _VERSIONS))
    line = f"{method} {path} {version}".rstrip().encode("utf-8", "surrogatepass")
    headers = [b"Host: gw", b"Connection: close"]
    if draw(st.integers(0, 3)) == 0:
        headers += draw(st.lists(st.sampled_from(_HEADERS), min_size=1, max_size=3))
    else:
        headers.append(b"Content-Type: application/json")
    body: bytes = draw(_BODIES)
    length = draw(st.sampled_from([None] * 10 + _LENGTHS))
    if b"Transfer-Encoding: chunked" not in headers:
        headers.append(b"Content-Length: " + (length or str(len(body))).encode())
    elif draw(st.booleans()):
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)  # well-formed chunks
    return line + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body


# ---------------------------------------------------------------- exchange
def _exchange(served: Served, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request`; return (status, headers, body of an error) or status 0 if no answer."""
    with socket.create_connection((served.host, served.port), timeout=10) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                chunk = b""
            if not chunk:
                return (0, {}, data)
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for h in lines[1:]:
            name, _, value = h.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status < 400:
            return (status, headers, b"")
        want = int(headers.get("content-length", "-1"))
        while len(body) < want:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            body += chunk
        return (status, headers, body)


def _check(status: int, headers: dict[str, str], body: bytes, request: bytes) -> None:
    assert status != 0, f"no answer to {request[:200]!r}"
    assert status < 500, f"{status} for {request[:200]!r}: {body[:300]!r}"
    if status >= 400:
        assert headers.get("content-type", "").startswith("application/json"), (
            f"{status} not JSON for {request[:200]!r}: {body[:300]!r}"
        )
        error = orjson.loads(body)["error"]
        assert set(error) >= {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str)
        assert error["message"]


_KNOWN = [
    b"GET /nope HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    b"DELETE /v1/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    b"GET /v1/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    b"POST /v1/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
    b"Content-Length: 100000\r\n\r\n" + b"x" * 100000,
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: gw\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
    # Found by this fuzzer: an unknown Expect (417 before any middleware runs) on a route and
    # on no route, and a body whose Content-Encoding does not decode (was a 500).
    b"POST /v1/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nExpect: teapot\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    b"POST /nope HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nExpect: teapot\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    b"POST /v1/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
    b"Content-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}",
]


def test_every_error_is_openai_json_and_nothing_is_5xx() -> None:
    cases = 0
    statuses: set[int] = set()
    with gateway_in_thread() as served:
        for request in _KNOWN:
            status, headers, body = _exchange(served, request)
            _check(status, headers, body, request)
            statuses.add(status)
            cases += 1

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(raw_requests())
        def fuzz(request: bytes) -> None:
            nonlocal cases
            cases += 1
            status, headers, body = _exchange(served, request)
            _check(status, headers, body, request)
            statuses.add(status)

        fuzz()
    assert cases >= 100
    # The fuzzer reaches the HTTP layer's errors and the gateway's own, not just one kind.
    assert {400, 404, 405, 413} <= statuses, statuses
