"""`surgescale demo` end to end, as a user runs it: a short fast run, and Ctrl-C in the middle.

Both start the real stack on loopback (simulated cluster, gateway, controller, Redis from the
`redis_url` fixture) as child processes of a `surgescale demo` process. The short run checks that
the loop scaled up, that every request the schedule holds was sent and ended with a terminal
status (none lost, and the gateway's events account for each), and that the report holds its
plots. The interrupt test sends SIGINT once the load is running and checks that the demo exits
promptly and leaves none of its processes and none of their listening ports behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from sim.demo.report import PLOTS
from sim.demo.run import add_options, build_config
from tests.waiting import wait_until_sync

TERMINAL = {"ok", "timeout", "connection_error", "protocol_error"}  # not "cancelled"
REPO = Path(__file__).resolve().parents[2]
LOAD = ["--speed", "30", "--duration", "24", "--seed", "7"]


def _demo(args: list[str], redis_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "surgescale", "demo", "--redis-url", redis_url, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_short_demo_scales_up_loses_nothing_and_reports(tmp_path: Path, redis_url: str) -> None:
    out = tmp_path / "report"
    proc = _demo([*LOAD, "--no-live", "--out", str(out)], redis_url)
    try:
        stdout, _ = proc.communicate(timeout=110)
    finally:
        proc.kill()
    text = stdout.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert f"report: {(out / 'report.html').resolve()}" in text.replace("\n", "")

    run = orjson.loads((out / "run-surgescale.json").read_bytes())
    ups = [c for c in run["changes"] if c["target"] == "replicas" and c["new"] > c["old"]]
    assert ups, f"no scale-up recorded: {run['changes']}"
    assert max(c["replicas_ready"] for c in run["cluster"]) > 1, "no new replica became Ready"

    parser = argparse.ArgumentParser()
    add_options(parser)
    expected = build_config(parser.parse_args(LOAD), live=False)
    requests = run["requests"]
    assert len(requests) == len(expected.schedule), "a scheduled request went missing"
    statuses = {r["status"] for r in requests}
    assert all(
        s in TERMINAL or (s.startswith("http_") and s.removeprefix("http_").isdigit())
        for s in statuses
    ), statuses
    counts = dict(run["event_counts"])
    assert counts["enqueued"] == len(requests), counts
    # each request has one terminal event at the gateway (a client that hangs up right after
    # [DONE] may be booked as a cancel there: terminal all the same)
    assert counts["completed"] + counts["rejected"] + counts["cancelled"] == len(requests), counts

    page = (out / "report.html").read_text()
    for name in PLOTS:
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
        assert f'src="{name}"' in page


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            raw = Path(f"/proc/{parent}/task/{parent}/children").read_text()
        except OSError:
            continue
        for child in raw.split():
            found.add(int(child))
            todo.append(int(child))
    return found


def _listening_ports(pids: set[int]) -> set[int]:
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with_target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if with_target.startswith("socket:["):
                    inodes.add(with_target[8:-1])
        except OSError:
            continue
    return {port for port, inode in _listeners() if inode in inodes}


def _listeners() -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                out.append((int(fields[1].rsplit(":", 1)[1], 16), fields[9]))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigint_mid_run_leaves_nothing_behind(tmp_path: Path, redis_url: str) -> None:
    proc = _demo(
        ["--speed", "30", "--duration", "60", "--no-live", "--out", str(tmp_path)], redis_url
    )
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
            if b" t=" in line and b"sent=" in line and b"sent=0 " not in line:
                break  # the load is running
        assert b"sent=" in seen, seen.decode(errors="replace")[-3000:]
        children = _descendants(proc.pid)
        ports = _listening_ports(children)
        assert len(children) >= 3, f"expected cluster, gateway and controller: {children}"
        assert ports, "the children should be listening somewhere"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    text = (seen + rest).decode(errors="replace")
    assert proc.returncode == 130, text[-3000:]
    with contextlib.suppress(AssertionError):  # the assert below names them
        wait_until_sync(lambda: not any(map(_alive, children)), timeout=5.0, what="children gone")
    left = {pid for pid in children if _alive(pid)}
    assert not left, f"processes left behind: {left}"
    still = {port for port, _ in _listeners() if port in ports}
    assert not still, f"ports still listening: {still}"
