"""Live timing: the pod emits tokens on the engine model's schedule, never ahead of it.

Only the direction that load cannot cause is asserted tightly (a busy machine makes a pod late,
never early); lateness gets a generous bound. Exact ITL figures come from `surgescale bench pod`.
"""

from __future__ import annotations

import subprocess
import sys
import time

import aiohttp

from sim.engine import get_profile
from sim.pod.runtime import RunningPod
from surgescale.events.localredis import free_port


async def test_token_gaps_follow_the_engine_model(
    pod: RunningPod, http: aiohttp.ClientSession
) -> None:
    body = {"model": "llama3-8b", "prompt": "abcd" * 512, "max_tokens": 40, "stream": True}
    arrivals: list[float] = []
    async with http.post(pod.url + "/v1/completions", json=body) as r:
        async for line in r.content:
            if line.startswith(b"data: {"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 40
    model_gap = get_profile("llama3-8b-h200").step.decode_seconds(1, 513)
    mean_gap = (arrivals[-1] - arrivals[0]) / 39
    # the pod may write a token up to 5 ms before its model time, never a whole step earlier
    assert mean_gap > model_gap - 0.005 / 39 - 1e-4, (mean_gap, model_gap)
    assert mean_gap < 5 * model_gap, (mean_gap, model_gap)
    stats = pod.driver.timing_errors
    assert len(stats) == 40
    assert min(stats) >= -0.0051  # never more than MAX_LEAD early


def test_cli_serves_until_sigint() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "surgescale", "sim", "pod", "--port", str(port), "--model", "m"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline().decode()
        assert f"127.0.0.1:{port}" in banner, banner
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(2)
        code = proc.wait(timeout=30)
    assert code == 0
