"""Where pods come from: a static list probed on `/health`, or EndpointSlices watched live.

Both report through one callback, `on_pods(model, {url: ready})`, with the full current set of
a model's pods each time; the scheduler marks pods that disappear as leaving (no new work, their
in-flight requests finish). EndpointSlice discovery lists then watches the slices of each
model's Service (or label selector) through kubernetes_asyncio, relisting on 410 Gone and
backing off (`surgescale.retry`) on errors; an endpoint receives work only when its `ready`
condition is true (absent counts as true, as the API defines) and it is not terminating.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from gateway.settings import GatewaySettings, ModelRoute, StaticPod
from surgescale.cancel import checkpoint
from surgescale.retry import ExponentialBackoff

log = logging.getLogger(__name__)

OnPods = Callable[[str, dict[str, bool]], None]
"""Called with a model and its complete pod set (url -> ready)."""


# ------------------------------------------------------------------ static
async def probe_static(
    pods: list[StaticPod],
    *,
    session: aiohttp.ClientSession,
    on_pods: OnPods,
    interval_s: float,
    path: str,
) -> None:
    """Probe every static pod forever; report a model whenever a pod's readiness changes."""
    state: dict[str, dict[str, bool]] = {}
    for pod in pods:
        state.setdefault(pod.model, {})[pod.url] = False
    for model, urls in state.items():
        on_pods(model, dict(urls))
    timeout = aiohttp.ClientTimeout(total=max(0.2, min(2.0, interval_s * 4)))

    async def probe(pod: StaticPod) -> None:
        while True:
            checkpoint()
            try:
                async with session.get(pod.url + path, timeout=timeout) as resp:
                    ok = resp.status == 200
                    await resp.read()
            except (aiohttp.ClientError, OSError, TimeoutError):
                ok = False
            urls = state[pod.model]
            if urls[pod.url] != ok:
                urls[pod.url] = ok
                log.info("pod %s of %s is %s", pod.url, pod.model, "ready" if ok else "not ready")
                on_pods(pod.model, dict(urls))
            await asyncio.sleep(interval_s)

    async with asyncio.TaskGroup() as tg:
        for pod in pods:
            tg.create_task(probe(pod), name=f"probe {pod.url}")


# ----------------------------------------------------------- EndpointSlice
def endpoints_of(slice_obj: Mapping[str, Any], *, port_name: str | None) -> dict[str, bool]:
    """url -> ready for the endpoints of one EndpointSlice (raw API dict)."""
    ports = slice_obj.get("ports") or []
    port: int | None = None
    for p in ports:
        if port_name is None or p.get("name") == port_name:
            port = p.get("port")
            break
    if port is None:
        return {}
    out: dict[str, bool] = {}
    for ep in slice_obj.get("endpoints") or []:
        addresses = ep.get("addresses") or []
        if not addresses:
            continue
        cond = ep.get("conditions") or {}
        ready = cond.get("ready") is not False and cond.get("terminating") is not True
        host = addresses[0]
        if ":" in host:  # IPv6
            host = f"[{host}]"
        out[f"http://{host}:{port}"] = ready
    return out


class SliceTracker:
    """The pods of one model, merged over all its EndpointSlices."""

    def __init__(self, model: str, *, port_name: str | None, on_pods: OnPods) -> None:
        self.model = model
        self.port_name = port_name
        self.on_pods = on_pods
        self.slices: dict[str, dict[str, bool]] = {}
        self._last: dict[str, bool] | None = None

    def replace(self, items: list[Mapping[str, Any]]) -> None:
        self.slices = {
            _name(s): endpoints_of(s, port_name=self.port_name) for s in items if _name(s)
        }
        self._publish()

    def apply(self, kind: str, obj: Mapping[str, Any]) -> None:
        name = _name(obj)
        if not name:
            return
        if kind == "DELETED":
            self.slices.pop(name, None)
        elif kind in ("ADDED", "MODIFIED"):
            self.slices[name] = endpoints_of(obj, port_name=self.port_name)
        else:
            return
        self._publish()

    def merged(self) -> dict[str, bool]:
        out: dict[str, bool] = {}
        for eps in self.slices.values():
            for url, ready in eps.items():
                out[url] = out.get(url, False) or ready
        return out

    def _publish(self) -> None:
        merged = self.merged()
        if merged != self._last:
            self._last = merged
            self.on_pods(self.model, dict(merged))


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return str(meta.get("name") or "")


async def make_api_client(settings: GatewaySettings) -> Any:
    """A kubernetes_asyncio client from the kubeconfig setting, else the in-cluster config.

    kubernetes_asyncio is imported here, not at module level: it takes seconds to import and
    a gateway with static pods does not need it.
    """
    from kubernetes_asyncio import client as k8s
    from kubernetes_asyncio import config as k8s_config

    configuration = k8s.Configuration()
    if settings.kubeconfig:
        await k8s_config.load_kube_config(
            config_file=settings.kubeconfig, client_configuration=configuration
        )
    else:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return k8s.ApiClient(configuration)


async def watch_slices(
    api_client: Any,
    route: ModelRoute,
    *,
    namespace: str,
    on_pods: OnPods,
    watch_timeout_s: int = 300,
) -> None:
    """List, then watch, the EndpointSlices of one model forever."""
    from kubernetes_asyncio import client as k8s
    from kubernetes_asyncio import watch as k8s_watch
    from kubernetes_asyncio.client.exceptions import ApiException

    api = k8s.DiscoveryV1Api(api_client)
    tracker = SliceTracker(route.name, port_name=route.port_name, on_pods=on_pods)
    selector = route.selector() or ""
    backoff = ExponentialBackoff(base=0.1, cap=5.0)
    failures = 0
    while True:
        checkpoint()
        try:
            resp = await api.list_namespaced_endpoint_slice(
                namespace, label_selector=selector, _preload_content=False
            )
            listed = await resp.json()  # type: ignore[attr-defined]
            tracker.replace(listed.get("items") or [])
            version = (listed.get("metadata") or {}).get("resourceVersion")
            failures = 0
            while True:
                async with k8s_watch.Watch() as watcher:
                    async for event in watcher.stream(
                        api.list_namespaced_endpoint_slice,
                        namespace,
                        label_selector=selector,
                        resource_version=version,
                        timeout_seconds=watch_timeout_s,
                        allow_watch_bookmarks=True,
                    ):
                        tracker.apply(str(event.get("type")), event.get("raw_object") or {})
                version = watcher.resource_version or version
        except asyncio.CancelledError:
            raise
        except ApiException as exc:
            if exc.status != 410:
                failures += 1
                log.warning("EndpointSlice watch for %s failed: %s", route.name, exc.reason)
        except Exception as exc:
            failures += 1
            log.warning("EndpointSlice watch for %s failed: %r", route.name, exc)
        await asyncio.sleep(backoff.compute(failures))
