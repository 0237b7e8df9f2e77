"""`surgescale bench controller --models N` end to end with a few hundred models (real processes,
real Redis, the simulated API server over HTTP).

Checks behaviour, not speed (that is the benchmark's job): the JSON line is last and carries the
issue's keys as numbers (and the loop lag of the API server, which runs in its own process and
times the PATCH), the controller ran every model (it decided for each of them), the
measured model was scaled up from zero in the trials, and nothing is left in Redis.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODELS = 300


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_bench_controller_with_a_few_hundred_models(redis_url: str) -> None:
    argv = [
        sys.executable, "-m", "surgescale", "bench", "controller",
        "--models", str(MODELS), "--rates", "2000", "--no-search", "--trials", "6",
        "--redis-url", redis_url,
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=380, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert f"{MODELS} models" in proc.stdout  # the table came before it
    assert result["models"] == MODELS
    for key in ("reaction_p50_ms", "reaction_p99_ms", "rss_mb", "apiserver_loop_lag_max_ms"):
        assert isinstance(result[key], int | float), key
        assert not isinstance(result[key], bool), key
    assert result["rss_mb"] > 0
    # Every model was run: the measured one and each background model got decisions.
    assert result["models_decided"] == MODELS
    (level,) = result["levels"]
    assert level["target"] == 2000
    assert level["trials"] + level["lost"] == 6
    assert level["trials"] >= 1, "the controller never scaled the measured model up"
    assert math.isfinite(result["reaction_p50_ms"])
    assert result["redis_keys_left"] == 0
