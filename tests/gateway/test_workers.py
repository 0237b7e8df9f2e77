"""The workers of one replica outlive nothing: a SIGKILLed supervisor takes them down too."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid

import pytest

from gateway.server import run
from tests.gateway.test_shared_capacity import _settings, _spawned


def _children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(name))
    return out


def _workers_dir(pid: int) -> str:
    """The sockets' directory worker `pid` was given: where its listening Unix socket is."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:[") : -1])
        with open("/proc/net/unix") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 8 and parts[6] in inodes and parts[7].endswith(".sock"):
                    return os.path.dirname(parts[7])
        time.sleep(0.1)
    pytest.fail(f"worker {pid} never listened on its Unix socket")


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_exit_when_their_supervisor_is_killed(redis_url: str) -> None:
    settings = _settings(
        redis_url, f"test-{uuid.uuid4().hex[:12]}", "http://127.0.0.1:9", workers=2
    )
    with _spawned(run, settings) as proc:
        assert proc.pid is not None
        deadline = time.monotonic() + 30
        while len(_children(proc.pid)) < 2:
            if time.monotonic() > deadline:
                pytest.fail("the supervisor did not start two workers within 30 s")
            time.sleep(0.1)
        workers = _children(proc.pid)
        workers_dir = _workers_dir(workers[0])
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)
        deadline = time.monotonic() + settings.drain_timeout_s + 10
        while any(_running(w) for w in workers):
            if time.monotonic() > deadline:
                for w in workers:  # do not leave them behind
                    if _running(w):
                        os.kill(w, signal.SIGKILL)
                pytest.fail(f"workers {workers} kept serving after their supervisor was killed")
            time.sleep(0.1)
    assert not os.path.exists(workers_dir), "the last worker out removes the sockets' directory"
