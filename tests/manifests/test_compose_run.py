"""docker-compose.yml's topology, run without Docker: each service's own command line from the
file, as a process on this machine's loopback (which the services share in compose through the
sim-cluster's network namespace). Only what a container would see differently is rewritten:
fixed ports become free ports, in-container paths become temporary files, `redis:6379` becomes
the test Redis, the stream prefix is the test's own, and the load pattern is shortened. The
`setup` jobs are the same `kubectl apply -k` calls. The gateway and the controller reach the API
server through recording proxies (tests.manifests.rbac), one per ServiceAccount.

Checks that the parts start with these arguments, find each other, and scale the simulated
model's replicas and GPU nodes on the burst; that the NodeClaims made for the nodes pass
Karpenter's real CRD schema; and least privilege: every API call the two processes made is
permitted by the Roles the manifests bind to their ServiceAccounts, and every permission
granted was used (but for those listed in `rbac.UNUSED_OK`, with their reasons)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from kubernetes_asyncio import client

from controller.kube import connect_api
from sim.localredis.server import free_port
from surgescale.events import close, connect
from tests.manifests.kube import MANIFESTS, REPO, render, renderers, validation_errors
from tests.manifests.rbac import (
    Authorizer,
    RecordingProxy,
    denied_calls,
    unused_grants,
    used_grants,
)
from tests.manifests.test_sim_cluster import eventually

COMPOSE = REPO / "docker-compose.yml"


def _rewrite(argv: list[str], replace: dict[str, str]) -> list[str]:
    """Replace `--flag=value` by the value in `replace` (flags that must exist in `argv`)."""
    out, seen = [], set()
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if flag in replace:
            out.append(f"{flag}={replace[flag]}")
            seen.add(flag)
        else:
            out.append(arg)
    missing = set(replace) - seen
    assert not missing, f"compose command {argv} lost flags {missing}"
    return out


async def _start(argv: list[str], log: Path) -> asyncio.subprocess.Process:
    handle = log.open("wb")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "surgescale",
            *argv,
            stdout=handle,
            stderr=asyncio.subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    finally:
        handle.close()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout=10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def _server_of(kubeconfig: Path) -> str | None:
    """The API server URL a kubeconfig names, or None while it is not (fully) written."""
    try:
        loaded: Any = yaml.safe_load(kubeconfig.read_text())
        return str(loaded["clusters"][0]["cluster"]["server"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return None


async def _http_ok(url: str) -> bool:
    timeout = aiohttp.ClientTimeout(total=2)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _kubectl(kubeconfig: Path, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        renderers()[0].path,
        f"--kubeconfig={kubeconfig}",
        f"--cache-dir={kubeconfig.parent / 'kube-cache'}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"


async def test_compose_topology_scales_with_least_privilege(redis_url: str, tmp_path: Path) -> None:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    gw_port, ctl_port = free_port(), free_port()
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    kubeconfig = yaml.safe_load((REPO / "deploy/compose/kubeconfig.yaml").read_text())
    kc = tmp_path / "kubeconfig"
    procs: dict[str, asyncio.subprocess.Process] = {}
    proxies: dict[str, RecordingProxy] = {}
    api = None
    try:
        procs["sim-cluster"] = await _start(
            _rewrite(
                services["sim-cluster"]["command"],
                # port 0: the server binds a free port itself and names it in its kubeconfig (a
                # port picked here could be bound meanwhile by another test's server or proxy,
                # which would then receive this test's calls)
                {"--port": "0", "--kubeconfig": str(tmp_path / "sim.kubeconfig")},
            ),
            tmp_path / "sim-cluster.log",
        )

        async def api_up() -> str | None:
            server = _server_of(tmp_path / "sim.kubeconfig")
            return server if server and await _http_ok(f"{server}/api") else None

        api_url = await eventually(api_up, what="the simulated API server (see sim-cluster.log)")
        kubeconfig["clusters"][0]["cluster"]["server"] = api_url
        kc.write_text(yaml.safe_dump(kubeconfig))
        for job in ("setup-crd", "setup"):
            command = services[job]["command"]
            target = next(a for a in command if a.startswith("--kustomize="))
            path = MANIFESTS / target.split("=", 1)[1].removeprefix("/manifests/")
            await _kubectl(kc, "apply", "-k", str(path))
        configs = {}
        for who in ("gateway", "controller"):
            proxies[who] = RecordingProxy(api_url)
            await proxies[who].start()
            configs[who] = tmp_path / f"{who}.kubeconfig"
            configs[who].write_text(yaml.safe_dump(proxies[who].kubeconfig("surgescale")))
        events = {"--redis-url": redis_url}
        gateway = _rewrite(
            services["gateway"]["command"],
            {**events, "--port": str(gw_port), "--kubeconfig": str(configs["gateway"])},
        )
        procs["gateway"] = await _start(
            [*gateway, f"--events-prefix={prefix}"], tmp_path / "gateway.log"
        )
        controller = _rewrite(
            services["controller"]["command"],
            {**events, "--http-port": str(ctl_port), "--kubeconfig": str(configs["controller"])},
        )
        procs["controller"] = await _start(
            [*controller, f"--stream-prefix={prefix}"], tmp_path / "controller.log"
        )

        async def parts_ready() -> bool:
            return await _http_ok(f"http://127.0.0.1:{gw_port}/readyz") and await _http_ok(
                f"http://127.0.0.1:{ctl_port}/readyz"
            )

        await eventually(parts_ready, timeout=60, what="gateway and controller /readyz")
        loadgen = _rewrite(
            services["loadgen"]["command"],
            {
                "--target": f"http://127.0.0.1:{gw_port}",
                "--at": "1",
                "--pattern-duration": "6",
            },
        )
        load_log = tmp_path / "loadgen.log"
        procs["loadgen"] = await _start(loadgen, load_log)
        code = await asyncio.wait_for(procs["loadgen"].wait(), timeout=90)
        output = load_log.read_text()
        assert code == 0, output[-2000:]
        figures = orjson.loads(output.strip().splitlines()[-1])
        assert figures["requests"] > 0
        assert figures["ok"] == figures["requests"], figures

        api = await connect_api(str(kc))
        dep = await client.AppsV1Api(api).read_namespaced_deployment("llama3-8b", "surgescale")
        assert (dep.spec.replicas or 0) > 1, "the burst did not scale the model"
        pool = await client.CustomObjectsApi(api).get_cluster_custom_object(
            "karpenter.sh", "v1", "nodepools", "gpu"
        )
        assert int(pool["spec"]["replicas"]) >= 1, "no GPU node was requested"
        claims = await client.CustomObjectsApi(api).list_cluster_custom_object(
            "karpenter.sh", "v1", "nodeclaims"
        )
        assert claims["items"], "no NodeClaim was created for the requested node"
        for claim in claims["items"]:
            assert validation_errors(claim) == [], claim["metadata"]["name"]
        calls = {who: list(proxy.calls) for who, proxy in proxies.items()}
    finally:
        for name in ("loadgen", "controller", "gateway", "sim-cluster"):
            if name in procs:
                await _stop(procs[name])
        for proxy in proxies.values():
            await proxy.stop()
        if api is not None:
            await api.close()
        redis = connect(redis_url)
        try:
            async for key in redis.scan_iter(match=f"{prefix}:*"):
                await redis.delete(key)
        finally:
            await close(redis)

    manifests = render("overlays/prod")
    for who in ("controller", "gateway"):
        rbac = Authorizer.for_service_account(manifests, f"surgescale-{who}", "surgescale")
        assert calls[who], f"the {who} made no API call"
        assert denied_calls(rbac, calls[who]) == [], (
            f"the {who} made calls its Role does not permit (it used {used_grants(calls[who])})"
        )
        assert unused_grants(rbac, calls[who]) == [], f"the {who} is granted more than it uses"
    assert used_grants(calls["gateway"]) == {
        ("discovery.k8s.io", "endpointslices", "list"),
        ("discovery.k8s.io", "endpointslices", "watch"),
    }
