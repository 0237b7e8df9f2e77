"""Bringing a demo run's pieces up and down: API client, readiness waits, warm-up, Redis keys.

Small async helpers for `sim.demo.stack.run_arm`, each bounded by a timeout and failing with a
`StartError` that says what did not come up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from sim.demo import objects
from sim.demo.procs import StartError
from surgescale.events import RedisClient, close, connect

log = logging.getLogger(__name__)


async def api_client(kubeconfig: Path) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration
    )
    return k8s.ApiClient(configuration=configuration)


async def wait_file(path: Path, child_ok: Callable[[], bool], timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await asyncio.to_thread(path.exists):
        if not child_ok() or loop.time() > deadline:
            raise StartError(f"{path} was not written")
        await asyncio.sleep(0.05)


async def wait_ready_replicas(
    api: k8s.ApiClient, setup: objects.ModelSetup, timeout_s: float
) -> None:
    apps = k8s.AppsV1Api(api)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        dep = await apps.read_namespaced_deployment(setup.deployment, setup.namespace)
        ready = int((dep.status.ready_replicas if dep.status else 0) or 0)
        if ready >= setup.initial_replicas:
            return
        if loop.time() > deadline:
            raise StartError(
                f"the model's first {setup.initial_replicas} replica(s) were not Ready within "
                f"{timeout_s:.0f}s ({ready} ready)"
            )
        await asyncio.sleep(0.1)


async def warm_up(
    gateway_url: str, model: str, timeout_s: float, *, api_key: str | None = None
) -> str:
    """One tiny request through the gateway, retried until it succeeds (routing is live); the
    gateway's id of the request that succeeded (its `X-Request-Id`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    body = {"model": model, "prompt": "hi", "max_tokens": 1}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    last = ""
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            try:
                async with session.post(
                    f"{gateway_url}/v1/completions",
                    json=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as resp:
                    await resp.read()
                    if resp.status == 200:
                        return resp.headers.get("X-Request-Id", "")
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = type(exc).__name__
            await asyncio.sleep(0.2)
    raise StartError(f"the gateway did not serve a first request within {timeout_s:.0f}s ({last})")


async def delete_keys(redis: RedisClient, prefix: str) -> None:
    keys = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
    if keys:
        await redis.delete(*keys)


@contextlib.asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[RedisClient]:
    client = connect(url)
    try:
        yield client
    finally:
        await close(client)


async def bounded(step: Awaitable[Any], what: str, timeout_s: float = 10.0) -> None:
    """Await a clean-up step for at most `timeout_s`; a step that fails or hangs is logged. An
    interrupt that arrives meanwhile lets this (bounded) step finish before it propagates, so a
    repeated Ctrl-C cannot leave a step half done."""
    started = time.monotonic()
    task = asyncio.ensure_future(asyncio.wait_for(step, timeout_s))
    try:
        await asyncio.shield(task)
        log.info("stopped %s in %.2fs", what, time.monotonic() - started)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise
    except TimeoutError:
        log.warning("stopping %s took longer than %.0fs; moving on", what, timeout_s)
    except Exception as exc:
        log.warning("stopping %s failed: %s", what, exc)
