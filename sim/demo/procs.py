"""Child processes of the demo: start each in its own process group, wait until it answers,
stop it within a bound, and leave nothing behind.

Each child runs `python -m surgescale ...` (same interpreter, same venv) in a new session, so a
Ctrl-C in the terminal reaches only the demo, which then stops the children in order; on Linux a
child also gets SIGTERM if the demo itself dies (PR_SET_PDEATHSIG). `stop()` sends SIGTERM to the
whole group, waits up to its grace period, then SIGKILLs the group. Output goes to a log file per
child, whose tail is quoted when a child fails to come up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class StartError(RuntimeError):
    """A child did not come up; the message says which and quotes its log."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def surgescale_argv(*args: str) -> list[str]:
    """argv that runs a `surgescale` subcommand with this interpreter."""
    return [sys.executable, "-m", "surgescale", *args]


@dataclass(slots=True)
class Child:
    """One running child process."""

    name: str
    argv: list[str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    started_at: float = field(default=0.0)
    cpu_at_start: float = 0.0
    """CPU seconds at the start of the measured window (set by the caller)."""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the child has used so far (Linux /proc; None elsewhere)."""
        if self.process is None:
            return None
        try:
            with open(f"/proc/{self.process.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGTERM the group, wait up to `grace_s`, then SIGKILL it; return the exit code."""
        proc = self.process
        if proc is None:
            return None
        if proc.returncode is None:
            started = time.monotonic()
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                log.warning("%s did not stop within %.1fs: killing it", self.name, grace_s)
                _signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
            log.info("%s stopped in %.2fs", self.name, time.monotonic() - started)
        # Anything the child left in its group (workers) goes too.
        _signal_group(proc.pid, signal.SIGKILL)
        return proc.returncode


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_dir: Path,
    env: dict[str, str] | None = None,
) -> Child:
    """Start `argv` in a new session with stdout and stderr to `log_dir/<name>.log`."""
    os.makedirs(log_dir, exist_ok=True)
    child = Child(name=name, argv=list(argv), log_path=log_dir / f"{name}.log")
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    if env:
        full_env.update(env)
    with open(child.log_path, "ab") as out:  # noqa: ASYNC230 (a local file, opened once)
        child.process = await asyncio.create_subprocess_exec(
            *child.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    child.started_at = time.monotonic()
    log.debug("started %s (pid %s): %s", name, child.pid, " ".join(argv))
    return child


async def wait_http(
    child: Child,
    url: str,
    *,
    timeout_s: float = 30.0,
    ok_statuses: Sequence[int] = (200,),
) -> None:
    """Poll `url` until it answers with an OK status; fail early if the child exits."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if not child.running:
                raise StartError(
                    f"{child.name} exited with code {child.process.returncode if child.process else '?'}"
                    f" before answering on {url}; its log ends with:\n{child.log_tail()}"
                )
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
                    if resp.status in ok_statuses:
                        return
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = type(exc).__name__
            await asyncio.sleep(0.05)
    raise StartError(
        f"{child.name} did not answer on {url} within {timeout_s:.0f}s ({last}); "
        f"its log ends with:\n{child.log_tail()}"
    )


@dataclass(slots=True)
class Children:
    """The demo's children, stopped in reverse start order."""

    items: list[Child] = field(default_factory=list)

    def add(self, child: Child) -> Child:
        self.items.append(child)
        return child

    async def stop_all(self, grace_s: float = 5.0) -> None:
        for child in reversed(self.items):
            try:
                await asyncio.shield(child.stop(grace_s))
            except asyncio.CancelledError:
                # An interrupt while stopping: still make sure every group is gone.
                for rest in self.items:
                    if rest.process is not None and rest.process.returncode is None:
                        _signal_group(rest.process.pid, signal.SIGKILL)
                raise
        self.items.clear()
