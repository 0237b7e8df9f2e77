"""Failover that cannot split the brain: a real controller process, paused with SIGSTOP while it
leads, must not write anything once a standby holds the Lease (issue 15).

The paused leader talks to the simulated API server through a loopback recording proxy, so every
request it sends is seen with the time it arrived; the standby runs in this process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.controller.conftest import NS, Gateway, Sim, eventually
from tests.manifests.rbac import RecordingProxy

REPO = Path(__file__).resolve().parents[2]


class TimedProxy(RecordingProxy):
    """A RecordingProxy that also notes when each request arrived (loop time)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.timed: list[tuple[float, str, str]] = []

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.timed.append((asyncio.get_running_loop().time(), request.method, request.path))
        return await super()._forward(request)

    def writes_since(self, since: float) -> list[tuple[float, str, str]]:
        """Writes other than to the Lease (whose writes are conditional on its resourceVersion)."""
        return [
            (t, method, path)
            for t, method, path in self.timed
            if t >= since and method in ("POST", "PUT", "PATCH", "DELETE") and "/leases" not in path
        ]


async def _holder(sim: Sim, lease: str) -> str:
    try:
        obj = await client.CoordinationV1Api(sim.api).read_namespaced_lease(lease, NS)
    except ApiException as exc:
        if exc.status == 404:
            return ""  # not created yet
        raise
    return str(obj.spec.holder_identity or "")


async def test_a_paused_leader_never_writes_after_losing_its_lease(
    sim: Sim, gateway_factory: Callable[[], Gateway], tmp_path: Path
) -> None:
    await sim.create_model("llama", replicas=1)
    proxy = TimedProxy(sim.cluster.url)
    await proxy.start()
    kubeconfig = tmp_path / "old-leader.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(proxy.kubeconfig(NS)))
    lease = f"lease-{sim.keys.prefix}"
    log = (tmp_path / "old-leader.log").open("wb")
    old = await asyncio.create_subprocess_exec(
        *[
            sys.executable,
            "-m",
            "controller",
            f"--kubeconfig={kubeconfig}",
            f"--redis-url={sim.redis_url}",
            f"--namespace={NS}",
            f"--stream-prefix={sim.keys.prefix}",
            "--identity=old",
            f"--lease-name={lease}",
            f"--lease-namespace={NS}",
            "--lease-duration-s=2",
            "--lease-retry-s=0.25",
            "--tick-s=0.25",
            "--status-interval-s=0.25",
            "--http-host=127.0.0.1",
            "--http-port=0",
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    paused = False
    try:
        async with gateway_factory() as gw:

            async def old_leads() -> bool:
                return await _holder(sim, lease) == "old"

            await eventually(old_leads, timeout=20.0, what="the process to take the Lease")
            await asyncio.sleep(1.0)  # it reads the model's stream by now
            gw.enqueue(12)

            async def old_scaled() -> bool:
                return await sim.replicas("llama") > 1

            await eventually(old_scaled, timeout=10.0, what="the process to scale as leader")
            before = await sim.replicas("llama")

            os.kill(old.pid, signal.SIGSTOP)  # paused while leading: it cannot renew
            paused = True
            new = await sim.controller("new")

            async def new_leads() -> bool:
                return new.is_leader

            await eventually(new_leads, timeout=10.0, what="the standby to take the Lease")
            loop = asyncio.get_running_loop()
            gw.enqueue(40)  # the paused process will find these when it wakes up

            async def new_scaled() -> bool:
                return await sim.replicas("llama") > before

            await eventually(new_scaled, timeout=5.0, what="the new leader to scale")
            # Someone scales the Deployment by hand: the woken process's belief is now stale
            # twice over, and anything it wrote would undo this.
            await sim.apps.patch_namespaced_deployment_scale("llama", NS, {"spec": {"replicas": 2}})
            # Writes it sent before the pause may still sit unread in the proxy's socket while
            # this (busy) process scales the new leader; what matters is what it sends once awake.
            woke = loop.time()
            os.kill(old.pid, signal.SIGCONT)
            paused = False
            await asyncio.sleep(3.0)  # several of its ticks, renewals and event batches
            assert old.returncode is None, "the woken process should keep running as a standby"
            assert await _holder(sim, lease) == "new"
            assert proxy.writes_since(woke) == []
            # It did wake up and talk to the API server (it is alive, just fenced).
            assert any(t > woke for t, _, _ in proxy.timed)
    finally:
        if paused:
            os.kill(old.pid, signal.SIGCONT)
        old.terminate()
        try:
            await asyncio.wait_for(old.wait(), 10)
        except TimeoutError:
            old.kill()
            await old.wait()
        log.close()
        await proxy.stop()
