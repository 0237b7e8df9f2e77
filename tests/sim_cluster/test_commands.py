"""The two commands: `surgescale sim cluster` (as a process) and `surgescale bench cluster`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from sim.cluster import bench
from sim.cluster.cli import parse_nodepool

from .conftest import eventually


@pytest.mark.parametrize(
    ("text", "dynamic", "expected"),
    [
        pytest.param("gpu:8:60", False, ("gpu", 8, 60.0, 0), id="static"),
        pytest.param("gpu:4:30:2", False, ("gpu", 4, 30.0, 2), id="static-replicas"),
        pytest.param("burst:8:90", True, ("burst", 8, 90.0, None), id="dynamic"),
    ],
)
def test_parse_nodepool(text: str, dynamic: bool, expected: tuple[object, ...]) -> None:
    cfg = parse_nodepool(text, dynamic=dynamic)
    assert (cfg.name, cfg.gpus_per_node, cfg.boot_seconds, cfg.replicas) == expected


@pytest.mark.parametrize("text", ["gpu", "gpu:x:60", ":8:60", "gpu:0:60", "gpu:8:-1"])
def test_parse_nodepool_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_nodepool(text, dynamic=False)


async def test_sim_cluster_command_serves_and_writes_kubeconfig(tmp_path: Path, port: int) -> None:
    kubeconfig = tmp_path / "kc"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "surgescale",
        "sim",
        "cluster",
        "--port",
        str(port),
        "--nodepool",
        "gpu:8:10:1",
        "--speed",
        "100",
        "--kubeconfig",
        str(kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def nodes() -> bool:
            with contextlib.suppress(aiohttp.ClientError):
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://127.0.0.1:{port}/api/v1/nodes") as r,
                ):
                    return r.status == 200 and len((await r.json())["items"]) == 1
            return False

        await eventually(nodes, timeout=30, what="the command's static pool node")
        assert f"127.0.0.1:{port}" in kubeconfig.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    assert b"simulated cluster serving at" in out


def test_bench_prints_table_then_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = bench.main(
        [
            "--writes",
            "20",
            "--watchers",
            "3",
            "--max-pods",
            "100",
            "--boot-s",
            "0.5",
            "--start-s",
            "0.2",
            "--step-fraction",
            "0.1",
            "--idle-s",
            "0.5",
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["watch_events"] == 60
    assert result["watch_latency_p99_ms"] > 0
    assert result["scale"][0]["pods"] == 100
    assert isinstance(result["max_pods_realtime"], int)
    assert any("watch fan-out" in line for line in lines)
