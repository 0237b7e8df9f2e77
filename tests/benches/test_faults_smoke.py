"""`surgescale bench faults` end to end on its two fastest groups (real processes on loopback).

Checks the shape of the result, not the targets (that is the benchmark's job): the JSON line is
last, carries every figure of the groups run as a number, says which targets were missed, and
the run leaves no child process behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

GROUP_KEYS = {
    "fuzz": ("fuzz_cases", "fuzz_5xx", "fuzz_non_openai_errors", "fuzz_bounds_passed"),
    "duplicates": ("duplicate_events_applied", "duplicate_events_injected"),
}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return [pid for pid in found if _alive(pid)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fuzz_and_duplicates_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "work"
    argv = [
        sys.executable, "-m", "surgescale", "bench", "faults",
        "--quick", "--only", "fuzz,duplicates", "--work-dir", str(work),
    ]  # fmt: skip
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert "FAIL" in proc.stdout or "PASS" in proc.stdout  # the table came before it
    for group, keys in GROUP_KEYS.items():
        assert f"[{group}] did not complete" not in proc.stderr, proc.stderr[-3000:]
        for key in keys:
            value = result[key]
            assert isinstance(value, int | float), (key, value)
            assert not isinstance(value, bool), (key, value)
    assert result["fuzz_cases"] >= 100
    assert result["duplicate_events_injected"] > 0
    assert isinstance(result["targets_met"], bool)
    assert set(result["missed"]) <= set(result["targets"])
    assert result["groups"] == ["fuzz", "duplicates"]
    # nothing left running: no process names the work directory, and Redis is gone
    assert _processes_mentioning(str(work)) == []
    for log in work.glob("*/redis.log"):
        pids = {int(m) for m in re.findall(r"^(\d+):", log.read_text(), flags=re.M)}
        assert not [p for p in pids if _alive(p)], f"redis from {log} still running"


def test_unknown_group_is_refused() -> None:
    from sim.benches.faults.cli import main

    assert main(["--only", "no-such-fault"]) == 2
