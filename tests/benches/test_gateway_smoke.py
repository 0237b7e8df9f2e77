"""`surgescale bench gateway` end to end, short (real processes, real Redis, HTTP on loopback).

Checks behaviour, not speed (that is the benchmark's job): the JSON line is last and carries the
issue's keys — the gateway's and the bare pass-through proxy's added TTFT at p50 and p99, their
ratios, chunks per second per core — as numbers, and each ratio is the quotient of the two
figures it names (NaN when the bare proxy's figure is not above zero, as a 2 s run can give);
the sample count of each path adds up to the measured requests, each ratio comes with its
bootstrap interval, the events' delay to Redis is reported, and phase 2b relays one chunk per
write; phases 2 and 2b run through the bare proxy too, with the gateway's figures as ratios.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_gateway_reports_both_proxies(redis_url: str) -> None:
    argv = [
        sys.executable, "-m", "surgescale", "bench", "gateway",
        "--seconds", "2", "--rate", "50", "--throughput-seconds", "2",
        "--redis-url", redis_url,
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=280, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    keys = (
        "added_ttft_p50_ms",
        "added_ttft_p99_ms",
        "bare_proxy_added_ttft_p50_ms",
        "bare_proxy_added_ttft_p99_ms",
        "chunks_per_s_per_core",
    )
    for key in keys:
        value = result[key]
        assert isinstance(value, int | float), key
        assert not isinstance(value, bool), key
        assert math.isfinite(value), (key, value)
    assert result["chunks_per_s_per_core"] > 0
    for q in ("p50", "p99"):
        bare, ratio = result[f"bare_proxy_added_ttft_{q}_ms"], result[f"added_ttft_ratio_{q}"]
        if bare > 0:
            expected = result[f"added_ttft_{q}_ms"] / bare
            assert ratio == pytest.approx(expected, rel=0.01, abs=0.01), q
        else:  # a short run's noise can put the bare proxy at or below direct: no ratio then
            assert math.isnan(ratio), (q, bare, ratio)
    paths = ("samples_direct", "samples_gateway", "samples_bare_proxy")
    assert sum(result[k] for k in paths) == result["phase1_requests"] - result["phase1_failed"]
    assert all(result[k] > 0 for k in paths)
    for q in ("p50", "p99"):
        low, high = result[f"added_ttft_ratio_{q}_ci90"]
        assert (math.isnan(low) and math.isnan(high)) or low <= high, (q, low, high)
    # Stamped and written on one machine's clock, in whole ms: never more than 1 ms early.
    assert result["event_delay_p50_ms"] >= -1
    assert result["event_delay_max_ms"] >= result["event_delay_p99_ms"] >= -1
    # Phase 2's relay writes and phase 2b's lockstep: each lockstep read carries one chunk (the
    # last write adds `[DONE]`), so the CPU per chunk there is a per-iteration figure.
    assert result["chunks_per_relay_write"] >= 1.0
    assert result["gateway_cpu_per_relay_write_us"] > 0
    assert 1.0 <= result["lockstep_chunks_per_relay_write"] < 1.05
    assert result["lockstep_chunks_per_s"] > 0
    assert result["lockstep_gateway_cpu_per_chunk_us"] > 0
    # The same two phases through the bare proxy, to the same upstreams, and the ratios.
    assert result["bare_proxy_chunks_per_s_per_core"] > 0
    assert 1.0 <= result["bare_proxy_lockstep_chunks_per_relay_write"] < 1.05
    assert result["chunks_per_core_vs_bare_proxy"] == pytest.approx(
        result["chunks_per_s_per_core"] / result["bare_proxy_chunks_per_s_per_core"], rel=0.01
    )
    assert result["lockstep_cpu_per_chunk_ratio"] == pytest.approx(
        result["lockstep_gateway_cpu_per_chunk_us"]
        / result["bare_proxy_lockstep_cpu_per_chunk_us"],
        rel=0.01,
    )
