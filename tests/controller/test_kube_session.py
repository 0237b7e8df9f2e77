"""The controller's API client does not look up ~/.netrc per request (`controller.kube.
lean_session`): kubernetes_asyncio's session trusts the environment, and aiohttp then ran that
lookup in the default executor before every request took its connection (3-106 ms at 1,000
models). A proxy from the environment is still honoured, looked up once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes_asyncio import client

from controller.kube import connect_api, lean_session
from tests.controller.conftest import NS, Sim, deployment


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor, counting what is handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


async def test_requests_of_the_controllers_client_leave_the_executor_alone(sim: Sim) -> None:
    api = await connect_api(str(sim.kubeconfig))
    executor = CountingExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    try:
        apps = client.AppsV1Api(api)
        await apps.create_namespaced_deployment(NS, deployment("lean", 0))  # type: ignore[arg-type]
        for replicas in (1, 2, 3):
            await apps.patch_namespaced_deployment_scale(
                "lean", NS, {"spec": {"replicas": replicas}}
            )
        scale = await apps.read_namespaced_deployment_scale("lean", NS)
        assert scale.spec.replicas == 3  # the requests went through, on the new session
        assert executor.submitted == 0, f"{executor.submitted} executor jobs for 5 requests"
    finally:
        await api.close()


@pytest.mark.parametrize(
    ("no_proxy", "expected"),
    [("", "http://127.0.0.1:3128"), ("10.0.0.1", None)],
    ids=["proxied", "bypassed"],
)
async def test_a_proxy_from_the_environment_is_kept(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str, expected: str | None
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    configuration = client.Configuration(host="https://10.0.0.1:6443")
    api = client.ApiClient(configuration)
    try:
        lean_session(api)
        assert api.rest_client.proxy == expected
        assert not api.rest_client.pool_manager.trust_env
    finally:
        await api.close()
