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
from sim.localredis.server import free_port
from sim.pod.runtime import RunningPod


async def test_tokens_never_come_before_the_engine_model_says(
    pod: RunningPod, http: aiohttp.ClientSession
) -> None:
    body = {"model": "llama3-8b", "prompt": "abcd" * 512, "max_tokens": 40, "stream": True}
    arrivals: list[float] = []
    sent = time.monotonic()
    async with http.post(pod.url + "/v1/completions", json=body) as r:
        async for line in r.content:
            if line.startswith(b"data: {"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 40
    step = get_profile("llama3-8b-h200").step
    n = 512
    prefill = step.seconds(
        n_decode=0,
        decode_context=0,
        prefill_tokens=n,
        prefill_pairs=n * (n + 1) / 2,
        prefill_kv_read=n,
    )
    model_e2e = prefill + sum(step.decode_seconds(1, n + i) for i in range(1, 40))
    # the model schedule starts no earlier than the request was sent; a token may be written up
    # to MAX_LEAD (5 ms) early, never a step early; a busy machine only makes it later
    assert arrivals[-1] - sent >= model_e2e - 0.0055, (arrivals[-1] - sent, model_e2e)
    assert arrivals[0] - sent >= prefill - 0.0055
    assert arrivals[-1] - sent < 5 * model_e2e + 1.0
    errors = pod.driver.timing_errors
    assert len(errors) == 40
    assert min(errors) >= -0.0051  # never more than MAX_LEAD early


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
