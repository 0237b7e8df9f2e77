"""One fault's stack of real processes on loopback, started for it and gone after it.

`running_stack(options, work_dir)` starts, each as a child process in its own session (so a
dying bench takes them along, see `sim.demo.procs`):

- a private `redis-server` on a free port (never the shared 6379), no persistence, optionally
  with `maxmemory`; `PrivateRedis` can pause it (SIGSTOP), resume it and restart it empty;
- the simulated cluster (`surgescale sim cluster`, which also runs the simulated vLLM pods) with
  a static GPU NodePool of two 8-GPU nodes, the model's Deployment (1 GPU per replica, 4 sequences
  per pod, a 2 s model load), its Service and our InferenceScaler;
- the gateway (`surgescale gateway`) routing the model by its EndpointSlices, with an API key;
- zero to two controllers (`surgescale controller`, identities `ctl-1`, `ctl-2`), started side
  by side; the one that takes the Lease is `Stack.leader`, the other `Stack.standby`; each
  talking to the API server through its own listener of a `RecordingProxy`.

It waits until the leader holds the Lease, one replica is Ready and a first request went through
the gateway, then yields the `Stack`. On exit (normal, error or cancellation) every child gets
SIGCONT then SIGTERM and, after a grace period, SIGKILL; the Redis process and its keys go with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.benches.faults.apiproxy import RecordingProxy
from sim.benches.faults.observe import get_json
from sim.benches.faults.redisproc import PrivateRedis
from sim.benches.faults.world import (
    LEASE_PATH,
    MODEL,
    NAMESPACE,
    PROBE_MODEL,
    SETUP,
    StackOptions,
    apply_objects,
    warm_up,
    write_kubeconfig,
)
from sim.demo.commands import karpenter_crds
from sim.demo.procs import Child, Children, StartError, spawn, surgescale_argv, wait_http
from sim.localredis.server import free_port

log = logging.getLogger(__name__)
__all__ = ["MODEL", "NAMESPACE", "PROBE_MODEL", "Stack", "StackOptions", "running_stack"]


@dataclass(slots=True)
class Controller:
    identity: str
    child: Child
    metrics_url: str


@dataclass(slots=True)
class Stack:
    """The handles a fault works with."""

    options: StackOptions
    work: Path
    redis: PrivateRedis
    prefix: str
    cluster_url: str
    proxy: RecordingProxy
    children: Children
    gateway: Child | None = None
    gateway_url: str = ""
    controllers: dict[str, Controller] = field(default_factory=dict)
    leader: str = ""
    """Identity of the controller that took the Lease first."""
    standby: str = ""
    """Identity of the other one ('' with a single controller)."""

    @property
    def api_key(self) -> str:
        return self.options.api_key

    async def api_get(self, path: str) -> dict[str, Any] | None:
        return await get_json(self.cluster_url + path)

    async def lease_holder(self) -> str:
        lease = await self.api_get(LEASE_PATH)
        spec = (lease or {}).get("spec") or {}
        return str(spec.get("holderIdentity") or "")

    async def replicas(self, name: str = MODEL) -> tuple[int, int]:
        """(spec.replicas, status.readyReplicas) of a Deployment of the namespace."""
        dep = await self.api_get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}")
        if dep is None:
            return (0, 0)
        spec = dep.get("spec") or {}
        status = dep.get("status") or {}
        return int(spec.get("replicas") or 0), int(status.get("readyReplicas") or 0)

    async def start_controller(self, identity: str) -> Controller:
        """Start a controller whose API traffic goes through its own proxy listener."""
        url = await self.proxy.listen(identity)
        kubeconfig = write_kubeconfig(self.work / f"kubeconfig-{identity}", url)
        port = free_port()
        argv = surgescale_argv(
            "controller",
            "--kubeconfig", str(kubeconfig),
            "--redis-url", self.redis.url,
            "--namespace", NAMESPACE,
            "--stream-prefix", self.prefix,
            "--identity", identity,
            "--http-host", "127.0.0.1",
            "--http-port", str(port),
            "--log-level", "INFO",
            *self.options.controller_args,
        )  # fmt: skip
        child = self.children.add(await spawn(f"controller-{identity}", argv, log_dir=self.work))
        ctl = Controller(identity, child, f"http://127.0.0.1:{port}/metrics")
        self.controllers[identity] = ctl
        await wait_http(child, f"http://127.0.0.1:{port}/healthz", timeout_s=60)
        return ctl

    async def elect(self, timeout_s: float = 30.0) -> None:
        """Wait until one of the controllers holds the Lease; name the leader and the standby."""
        deadline = time.monotonic() + timeout_s
        while (holder := await self.lease_holder()) not in self.controllers:
            if time.monotonic() > deadline:
                logs = "\n".join(c.child.log_tail(10) for c in self.controllers.values())
                raise StartError(f"no controller took the Lease within {timeout_s:.0f}s:\n{logs}")
            await asyncio.sleep(0.1)
        self.leader = holder
        self.standby = next((i for i in self.controllers if i != holder), "")


async def stop_all(children: Children) -> None:
    """SIGTERM every child at once, SIGKILL what is left after the grace period."""
    await asyncio.gather(*(c.stop(grace_s=3.0) for c in children.items), return_exceptions=True)
    children.items.clear()


@contextlib.asynccontextmanager
async def running_stack(options: StackOptions, work: Path) -> AsyncIterator[Stack]:
    """Start the stack (see the module docstring); tear it all down on exit."""
    os.makedirs(work, exist_ok=True)
    children = Children()
    redis = PrivateRedis(work, maxmemory_mb=options.redis_maxmemory_mb)
    proxy: RecordingProxy | None = None
    try:
        await redis.start()
        port = free_port()
        pod_port = free_port()
        argv = surgescale_argv(
            "sim", "cluster",
            "--port", str(port),
            "--kubeconfig", str(work / "cluster.kubeconfig"),
            "--pod-port", str(pod_port),
            "--nodepool", "gpu:8:1:2",
            "--karpenter-crds", str(karpenter_crds()),
            "--log-level", "WARNING",
        )  # fmt: skip
        cluster = children.add(await spawn("cluster", argv, log_dir=work))
        cluster_url = f"http://127.0.0.1:{port}"
        await wait_http(cluster, f"{cluster_url}/version", timeout_s=60)
        await apply_objects(cluster_url, options, pod_port=pod_port)
        proxy = RecordingProxy(cluster_url)
        stack = Stack(
            options=options,
            work=work,
            redis=redis,
            prefix=f"faults-{uuid.uuid4().hex[:8]}",
            cluster_url=cluster_url,
            proxy=proxy,
            children=children,
        )
        gw_port = free_port()
        kubeconfig = write_kubeconfig(work / "kubeconfig-gateway", cluster_url)
        argv = surgescale_argv(
            "gateway",
            "--port", str(gw_port),
            "--model", f"{MODEL}={SETUP.service}",
            "--kubeconfig", str(kubeconfig),
            "--namespace", NAMESPACE,
            "--pod-concurrency", str(SETUP.max_num_seqs),
            "--redis-url", redis.url,
            "--events-prefix", stack.prefix,
            "--log-level", "WARNING",
            *options.gateway_args,
        )  # fmt: skip
        env = {"SURGESCALE_GATEWAY_API_KEYS": json.dumps([options.api_key]), **options.gateway_env}
        stack.gateway = children.add(await spawn("gateway", argv, log_dir=work, env=env))
        stack.gateway_url = f"http://127.0.0.1:{gw_port}"
        # The gateway and the controllers come up side by side.
        await asyncio.gather(
            wait_http(stack.gateway, f"{stack.gateway_url}/healthz", timeout_s=60),
            *(stack.start_controller(f"ctl-{n + 1}") for n in range(options.controllers)),
        )
        if options.controllers:
            await stack.elect()
        deadline = time.monotonic() + 60.0
        while (await stack.replicas())[1] < 1:
            if time.monotonic() > deadline:
                raise StartError("the model's first replica was not Ready within 60 s")
            await asyncio.sleep(0.1)
        await warm_up(stack.gateway_url, options.api_key)
        yield stack
    finally:
        for child in children.items:  # a paused child cannot handle SIGTERM
            if child.pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGCONT)
        await asyncio.shield(stop_all(children))
        if proxy is not None:
            await asyncio.shield(proxy.close())
        await asyncio.shield(redis.remove())
