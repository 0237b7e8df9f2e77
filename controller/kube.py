"""The controller's Kubernetes I/O through kubernetes_asyncio: client, scale API, informers, writes.

- `connect_api(kubeconfig)`: an `ApiClient` from a kubeconfig file or the in-cluster config;
- `KubeScaleAPI`: the actuator's `ScaleAPI` (merge-PATCH of `deployments/{name}/scale` and of
  the cluster-scoped `nodepools/{name}/scale`), mapping HTTP failures onto the retry taxonomy;
- `Informer`: list-then-watch of one resource kind as plain dicts (typed by the views in
  `controller.objects`), resuming each ended watch from its last resourceVersion and re-listing
  only on 410, errors or a slow safety-net period,
  calling back on every change; every list has a client timeout and every watch a client-side
  bound just past its server-side `timeoutSeconds`, so a slow or half-open connection to the API
  server costs one timeout, never a watch that silently stops;
- `KubeWriter`: the InferenceScaler status subresource (merge-PATCH) and core/v1 Events.

Responses that nothing reads are not deserialized (`_preload_content=False`), which keeps the
scale PATCH on the hot path cheap. Leader election lives in `controller.lease`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Generic, cast

import aiohttp
import orjson
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from controller import crd
from controller.actuator import ConflictError, ScaleTarget, TargetKind
from controller.objects import (
    Deployment,
    InferenceScalerObject,
    KubeObject,
    Node,
    NodePool,
    ObjectList,
    T,
)
from surgescale.cancel import checkpoint
from surgescale.retry import Backoff, ExponentialBackoff, PermanentError, TemporaryError

log = logging.getLogger(__name__)

RELIST_CHUNK = 64
"""Objects of a relist compared (and announced when changed) before letting other work run."""

MERGE_PATCH: Final = "application/merge-patch+json"
KARPENTER_GROUP: Final = "karpenter.sh"
KARPENTER_VERSION: Final = "v1"
NODEPOOL_LABEL: Final = "karpenter.sh/nodepool"


async def connect_api(kubeconfig: str | None) -> client.ApiClient:
    """An API client from `kubeconfig`, or from the in-cluster service account when None,
    on a session that does not look up ~/.netrc per request (`lean_session`)."""
    configuration = client.Configuration()
    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    api = client.ApiClient(configuration)
    lean_session(api)
    return api


def lean_session(api: client.ApiClient) -> None:
    """Give `api` an aiohttp session on the same connector that does not trust the environment.

    kubernetes_asyncio builds its session with `trust_env=True`, and aiohttp then looks up
    ~/.netrc for every request in a thread of the default executor: a round trip through another
    thread, which has to win the GIL from a busy event loop, before each request may take a
    connection. In the 1,000-model bench that put 3-106 ms (median ~20) between a scale PATCH's
    start and its connection. What the environment was trusted for is kept: a proxy from
    HTTPS_PROXY / HTTP_PROXY for the API server's host (NO_PROXY honoured), looked up once here,
    becomes the client's configured proxy unless the kubeconfig names one."""
    rest = api.rest_client
    old: aiohttp.ClientSession = rest.pool_manager
    if not rest.proxy:
        host = urllib.parse.urlsplit(str(api.configuration.host))
        proxies = urllib.request.getproxies()
        proxy = proxies.get(host.scheme or "https")
        if proxy and host.hostname and not urllib.request.proxy_bypass(host.hostname):
            rest.proxy = proxy
    connector = old.connector
    old.detach()  # the old session lets go of the connector without closing it
    # The read buffer as kubernetes_asyncio sets it (a watch event may carry a 1.5 MiB object).
    rest.pool_manager = aiohttp.ClientSession(
        connector=connector, trust_env=False, read_bufsize=2**21
    )


def _version(obj: KubeObject) -> str:
    """An object's resourceVersion ("" when it has none)."""
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def now_rfc3339(micro: bool = False) -> str:
    """The wall-clock time as Kubernetes writes it (Time, or MicroTime with `micro`)."""
    now = datetime.now(UTC)
    if micro:
        return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def status_error(status: int, reason: str, headers: Any = None) -> Exception:
    """The retry-taxonomy error for an HTTP status (409 conflict, 429/5xx temporary, else permanent)."""
    text = f"HTTP {status}: {reason}"
    if status == 409:
        return ConflictError(text)
    if status == 429 or status >= 500 or status == 0:
        retry_after = headers.get("Retry-After") if hasattr(headers, "get") else None
        return TemporaryError(text, delay=parse_retry_after(retry_after))
    return PermanentError(text)


def parse_retry_after(value: object, *, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP-date); None when absent or
    not a finite, non-negative time (`inf`, `nan`, `-1`, garbage), so the caller's own backoff
    applies. Capping a valid but long hint is the caller's business (`controller.actuator`)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
        return max(seconds, 0.0)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def classify(exc: BaseException) -> Exception:
    """Map a client failure onto `TemporaryError` / `ConflictError` / `PermanentError`."""
    if isinstance(exc, (TemporaryError, PermanentError)):
        return exc
    if isinstance(exc, ApiException):
        return status_error(int(exc.status or 0), str(exc.reason), exc.headers)
    if isinstance(exc, (aiohttp.ClientError, OSError, asyncio.TimeoutError)):
        return TemporaryError(f"{type(exc).__name__}: {exc}")
    return PermanentError(f"{type(exc).__name__}: {exc}")


async def body_of(resp: Any) -> bytes:
    """Read a `_preload_content=False` response; raise the taxonomy error unless it is 2xx."""
    try:
        data: bytes = await resp.read()
    finally:
        resp.release()
    if not 200 <= resp.status < 300:
        detail = data[:200].decode(errors="replace")
        raise status_error(resp.status, f"{resp.reason} {detail}", resp.headers)
    return data


class KubeScaleAPI:
    """`ScaleAPI` over HTTP: merge-PATCH `{"spec": {"replicas": n}}` on the scale subresource."""

    def __init__(self, api: client.ApiClient, *, request_timeout: float = 5.0) -> None:
        self._apps = client.AppsV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._timeout = request_timeout

    async def patch_replicas(
        self, target: ScaleTarget, replicas: int, *, timeout: float | None = None
    ) -> None:
        body = {"spec": {"replicas": replicas}}
        budget = self._timeout if timeout is None else max(min(timeout, self._timeout), 0.001)
        try:
            if target.kind is TargetKind.DEPLOYMENT:
                resp = await self._apps.patch_namespaced_deployment_scale(  # type: ignore[call-arg]  # stubs lack _content_type
                    target.name,
                    target.namespace,
                    body,
                    _content_type=MERGE_PATCH,
                    _preload_content=False,
                    _request_timeout=budget,
                )
            else:
                resp = await self._custom.patch_cluster_custom_object_scale(  # type: ignore[call-arg]
                    KARPENTER_GROUP,
                    KARPENTER_VERSION,
                    "nodepools",
                    target.name,
                    body,
                    _content_type=MERGE_PATCH,
                    _preload_content=False,
                    _request_timeout=budget,
                )
            await body_of(resp)
        except Exception as exc:
            raise classify(exc) from exc

    async def read_replicas(self, target: ScaleTarget) -> int:
        try:
            if target.kind is TargetKind.DEPLOYMENT:
                resp = await self._apps.read_namespaced_deployment_scale(
                    target.name,
                    target.namespace,
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
            else:
                resp = await self._custom.get_cluster_custom_object_scale(
                    KARPENTER_GROUP,
                    KARPENTER_VERSION,
                    "nodepools",
                    target.name,
                    _preload_content=False,
                    _request_timeout=self._timeout,
                )
            data: Deployment | NodePool = orjson.loads(await body_of(resp))
        except Exception as exc:
            raise classify(exc) from exc
        return int((data.get("spec") or {}).get("replicas") or 0)


Handler = Callable[[str, T], None]
"""(event type: ADDED / MODIFIED / DELETED / SYNC, object) -> None; SYNC ends a (re)list (its
object is empty)."""


class Informer(Generic[T]):
    """Keeps `objects` ((namespace, name) -> object) in step with one resource kind."""

    def __init__(
        self,
        name: str,
        list_func: Callable[..., Awaitable[Any]],
        *args: Any,
        handler: Handler[T] | None = None,
        watch_timeout_s: int = 60,
        relist_s: float = 600.0,
        request_timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        **kwargs: Any,
    ) -> None:
        self.name = name
        self._list = list_func
        self._args = args
        self._kwargs = kwargs
        self._handler = handler
        self._watch_timeout_s = max(int(watch_timeout_s), 1)
        """Server-side end of each watch (`timeoutSeconds`); then a watch from where it ended."""
        self._relist_s = relist_s
        """A full list at least this often (otherwise only at start, after a 410 or a failure):
        a safety net; at 1,000 objects a list is tens of ms of the loop, on both ends."""
        self._request_timeout_s = request_timeout_s
        """Client timeout of a list, and of connecting a watch."""
        self._watch_client_timeout = aiohttp.ClientTimeout(
            total=self._watch_timeout_s * 1.25 + 1.0,
            sock_connect=request_timeout_s,
        )
        """A watch the server does not end in time (a half-open connection, a stalled server)
        is ended by the client a little after its `timeoutSeconds`."""
        self._backoff = backoff or ExponentialBackoff(base=0.2, cap=10.0)
        self.objects: dict[tuple[str, str], T] = {}
        self.synced = asyncio.Event()
        self.errors = 0
        self.rewatches = 0
        """Watches that ended normally and were resumed from their last version (no list)."""

    @staticmethod
    def key(obj: KubeObject) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace") or ""), str(meta.get("name") or "")

    def _emit(self, kind: str, obj: T) -> None:
        if self._handler is not None:
            try:
                self._handler(kind, obj)
            except Exception:
                log.exception("informer %s: handler failed on %s", self.name, kind)

    async def _relist(self) -> str:
        resp = await self._list(
            *self._args,
            _preload_content=False,
            _request_timeout=self._request_timeout_s,
            **self._kwargs,
        )
        data: ObjectList[T] = orjson.loads(await body_of(resp))
        fresh = {self.key(o): o for o in data.get("items") or []}
        for gone in set(self.objects) - set(fresh):
            self._emit("DELETED", self.objects.pop(gone))
        for i, (key, obj) in enumerate(fresh.items()):
            if i and i % RELIST_CHUNK == 0:
                await asyncio.sleep(0)  # 1,000 objects in one go held the loop for tens of ms
            known = self.objects.get(key)
            self.objects[key] = obj
            if known is None:
                self._emit("ADDED", obj)
            elif _version(known) != _version(obj) or not _version(obj):
                # Unchanged objects are not re-announced: a relist would otherwise ask to
                # evaluate every scaler at once.
                self._emit("MODIFIED", obj)
        self.synced.set()
        self._emit("SYNC", cast(T, {}))
        return str((data.get("metadata") or {}).get("resourceVersion") or "")

    async def run(self) -> None:
        """List, then watch from the list's resourceVersion; when a watch ends (its
        `timeoutSeconds`), watch again from the last version seen, as client-go's reflector
        does. Re-list only after a 410 (the version is gone from the server's history), a
        failure, or every `relist_s` (a safety net)."""
        loop = asyncio.get_running_loop()
        failures = 0
        version: str | None = None
        listed_at = -math.inf
        while True:
            checkpoint()
            try:
                if version is None or loop.time() - listed_at >= self._relist_s:
                    version = await self._relist()
                    listed_at = loop.time()
                    failures = 0
                version = await self._watch_from(version)
                self.rewatches += 1
            except asyncio.CancelledError:
                raise
            except _Expired:
                version = None  # 410: the version is too old to resume from; list again
            except Exception as exc:
                version = None
                failures += 1
                self.errors += 1
                log.warning(
                    "informer %s failed (%d in a row): %s", self.name, failures, classify(exc)
                )
                await asyncio.sleep(self._backoff.compute(failures))

    async def _watch_from(self, version: str) -> str:
        """One watch from `version` until the server ends it; returns the last resourceVersion
        seen (an event's or a BOOKMARK's). Lines are read and decoded here (orjson), not by
        kubernetes_asyncio's `Watch`: that builds an `ApiClient` (an SSL context: ~28 ms of
        the loop) per watch and decodes every event twice, into a typed model too."""
        resp = await self._list(
            *self._args,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=version,
            timeout_seconds=self._watch_timeout_s,
            _preload_content=False,
            _request_timeout=self._watch_client_timeout,
            **self._kwargs,
        )
        try:
            if not 200 <= resp.status < 300:
                await body_of(resp)  # raises the taxonomy error
            streak = 0
            async for line in resp.content:
                if not line.strip():
                    continue
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object")
                if not isinstance(obj, dict):
                    continue
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired(str(obj.get("message") or "expired"))
                    raise status_error(int(obj.get("code") or 500), str(obj.get("message")))
                version = _version(cast(KubeObject, obj)) or version
                if kind not in ("ADDED", "MODIFIED", "DELETED"):
                    continue  # BOOKMARK: only the version
                typed = cast(T, obj)
                key = self.key(typed)
                if kind == "DELETED":
                    self.objects.pop(key, None)
                else:
                    self.objects[key] = typed
                self._emit(kind, typed)
                streak += 1
                if streak % RELIST_CHUNK == 0:
                    await asyncio.sleep(0)  # a burst of buffered events: let other work in
        finally:
            resp.release()
        return version


class _Expired(Exception):
    """A watch's ERROR event with 410: its resourceVersion is no longer in the history."""


def controller_informers(
    api: client.ApiClient,
    *,
    namespace: str | None,
    on_scaler: Handler[InferenceScalerObject],
    on_deployment: Handler[Deployment],
    on_nodes: Handler[Node | NodePool],
) -> dict[str, Informer[Any]]:
    """The controller's informers by name: InferenceScalers and Deployments (one namespace or
    all), Nodes of Karpenter NodePools, and NodePools (their handler also gets the Nodes)."""
    custom = client.CustomObjectsApi(api)
    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    if namespace:
        scalers = Informer(
            "inferencescalers",
            custom.list_namespaced_custom_object,
            crd.GROUP,
            crd.VERSION,
            namespace,
            crd.PLURAL,
            handler=on_scaler,
        )
        deployments = Informer(
            "deployments", apps.list_namespaced_deployment, namespace, handler=on_deployment
        )
    else:
        scalers = Informer(
            "inferencescalers",
            custom.list_cluster_custom_object,
            crd.GROUP,
            crd.VERSION,
            crd.PLURAL,
            handler=on_scaler,
        )
        deployments = Informer(
            "deployments", apps.list_deployment_for_all_namespaces, handler=on_deployment
        )
    nodes = Informer("nodes", core.list_node, label_selector=NODEPOOL_LABEL, handler=on_nodes)
    pools = Informer(
        "nodepools",
        custom.list_cluster_custom_object,
        KARPENTER_GROUP,
        KARPENTER_VERSION,
        "nodepools",
        handler=on_nodes,
    )
    return {i.name: i for i in (scalers, deployments, nodes, pools)}


class KubeWriter:
    """Writes the InferenceScaler status subresource and core/v1 Events (never scale)."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        group: str,
        version: str,
        plural: str,
        kind: str,
        component: str = "surgescale-controller",
        request_timeout: float = 5.0,
    ) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._group = group
        self._version = version
        self._plural = plural
        self._kind = kind
        self._component = component
        self._timeout = request_timeout
        self.host = uuid.uuid4().hex[:8]

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, object]) -> None:
        try:
            resp = await self._custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
                self._group,
                self._version,
                namespace,
                self._plural,
                name,
                {"status": status},
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            await body_of(resp)
        except Exception as exc:
            raise classify(exc) from exc

    async def event(
        self,
        *,
        namespace: str,
        name: str,
        uid: str | None,
        reason: str,
        message: str,
        warning: bool = False,
    ) -> None:
        stamp = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": f"{self._group}/{self._version}",
                "kind": self._kind,
                "name": name,
                "namespace": namespace,
                **({"uid": uid} if uid else {}),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "reportingInstance": self.host,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            resp = await self._core.create_namespaced_event(
                namespace,
                body,  # type: ignore[arg-type]
                _preload_content=False,
                _request_timeout=self._timeout,
            )
            await body_of(resp)
        except Exception as exc:
            raise classify(exc) from exc
