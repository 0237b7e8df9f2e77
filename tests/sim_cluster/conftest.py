"""Fixtures for the simulated cluster: a running server on a free port with a fast clock,
a kubeconfig for it, a kubernetes_asyncio ApiClient, and an async `kubectl` runner."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config

from sim.cluster import ClusterOptions, NodePoolConfig, RunningCluster, start_cluster

FAST = 200.0


@pytest.fixture
async def cluster() -> AsyncIterator[RunningCluster]:
    c = await start_cluster(
        ClusterOptions(
            speed=FAST,
            nodepools=(NodePoolConfig(name="gpu", gpus_per_node=8, boot_seconds=20, replicas=1),),
            default_load_s=10,
            seed=7,
        )
    )
    try:
        yield c
    finally:
        await c.stop()


ClusterFactory = Callable[..., Awaitable[RunningCluster]]


@pytest.fixture
async def make_cluster() -> AsyncIterator[ClusterFactory]:
    """Start clusters with custom options; all are stopped at the end of the test."""
    started: list[RunningCluster] = []

    async def make(**options: Any) -> RunningCluster:
        options.setdefault("speed", FAST)
        options.setdefault("seed", 11)
        c = await start_cluster(ClusterOptions(**options))
        started.append(c)
        return c

    try:
        yield make
    finally:
        for c in started:
            await c.stop()


@pytest.fixture
async def api(cluster: RunningCluster, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    path = cluster.write_kubeconfig(tmp_path / "kubeconfig")
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    async with client.ApiClient(cfg) as api_client:
        yield api_client


@dataclass
class KubectlResult:
    code: int
    out: str
    err: str


def kubectl_binary() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed: install Debian's kubernetes-client (.ci/run does)")
    return found


EXTRA_KUBECTLS = [p for p in os.environ.get("SURGESCALE_EXTRA_KUBECTL", "").split(":") if p]
"""More kubectl binaries to run the kubectl tests with (e.g. an unpacked kubectl 1.20)."""


@dataclass
class Kubectl:
    """Runs one kubectl binary against the test cluster without blocking the event loop."""

    binary: str
    kubeconfig: Path
    home: Path

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--kubeconfig", str(self.kubeconfig), *args]

    @property
    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "PATH": "/usr/bin:/bin"}

    async def __call__(
        self, *args: str, stdin: str | None = None, timeout: float = 30.0
    ) -> KubectlResult:
        proc = await asyncio.create_subprocess_exec(
            *self.argv(*args),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout
        )
        return KubectlResult(proc.returncode or 0, out.decode(), err.decode())


@pytest.fixture(params=["kubectl", *EXTRA_KUBECTLS])
def kubectl(cluster: RunningCluster, tmp_path: Path, request: pytest.FixtureRequest) -> Kubectl:
    binary = kubectl_binary() if request.param == "kubectl" else str(request.param)
    if not os.access(binary, os.X_OK):
        pytest.fail(f"SURGESCALE_EXTRA_KUBECTL names {binary}, which is not an executable")
    return Kubectl(binary, cluster.write_kubeconfig(tmp_path / "kubectl.kubeconfig"), tmp_path)


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], *, timeout: float = 40.0, what: str = ""
) -> None:
    """Poll `check` until it holds (generous timeout; the clock is fast anyway)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for: {what or check}")
        await asyncio.sleep(0.02)
