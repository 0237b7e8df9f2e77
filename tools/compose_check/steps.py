"""Steps of the compose check: each named, timed, and failing with a `CheckError` that says which
step failed and why. Commands run through `run`, which keeps their output for the error."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


class CheckError(Exception):
    """The check failed at `step`; the message says what is wrong or missing."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


def say(message: str) -> None:
    """Progress goes to stderr, so that stdout ends with the JSON line alone."""
    print(f"compose-check: {message}", file=sys.stderr, flush=True)


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run(
    argv: Sequence[str],
    *,
    step: str,
    timeout: float,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; on failure raise a `CheckError` naming `step` with the
    command's last output lines."""
    full_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(
            list(argv),
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CheckError(step, f"{argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise CheckError(
            step, f"`{' '.join(argv)}` did not finish within {timeout:.0f} s\n{tail(out)}"
        ) from exc
    if check and proc.returncode != 0:
        output = (proc.stdout or "") + (proc.stderr or "")
        raise CheckError(
            step,
            f"`{' '.join(argv)}` exited {proc.returncode}"
            + (f"\n{tail(output)}" if output else " with no output"),
        )
    return proc


@dataclass
class Timings:
    """Wall seconds per step, in the order the steps ran."""

    steps: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        say(f"{name} ...")
        try:
            yield
        finally:
            took = time.monotonic() - start
            self.steps[name] = round(self.steps.get(name, 0.0) + took, 1)
            say(f"{name}: {took:.1f} s")


@contextmanager
def exclusive(path: Path, *, wait_s: float) -> Iterator[None]:
    """One compose check at a time on a machine (they share the project name, the published
    port and the image tags): wait up to `wait_s` for the lock file, else a CheckError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+")
    except OSError as exc:
        raise CheckError("lock", f"cannot open {path}: {exc}") from exc
    with handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CheckError(
                        "lock", f"another compose check held {path} for {wait_s:.0f} s"
                    ) from None
                time.sleep(2.0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
