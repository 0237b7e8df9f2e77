"""Scale-down that keeps streams: rank a Deployment's pods by their in-flight requests.

Before the actuator scales a Deployment down, `DeletionCoster` (its `prepare` hook) lists the
Deployment's pods and sets each one's `controller.kubernetes.io/pod-deletion-cost` annotation
to the number of requests the gateways have in flight there (`controller.state` keeps that per
pod, named by the pod's URL as the gateway dispatches to it). The ReplicaSet controller then
removes the pods with the lowest cost first (after unscheduled and not-Ready ones), so the idle
pods leave and the busy ones keep streaming. Where the pods are scheduled, the ranking goes node
by node (`node_first_costs`): the least busy node's pods leave first, so a scale-down frees whole
nodes for Karpenter to consolidate instead of thinning every node. Only annotations that change are written, and each
write is fenced like a scale PATCH (`controller.lease`: leadership still valid at the write).

`deletion_costs` is the pure part (pods and in-flight counts in, costs out); `KubePodAPI` is the
HTTP part (kubernetes_asyncio). RBAC: pods `list` and `patch` in the models' namespace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Final
from urllib.parse import urlsplit

import orjson
from kubernetes_asyncio import client

from controller.actuator import ScaleTarget
from controller.kube import MERGE_PATCH, body_of, classify
from controller.objects import LabelSelector, ObjectList, Pod

log = logging.getLogger(__name__)

DELETION_COST: Final = "controller.kubernetes.io/pod-deletion-cost"
INT32_MAX: Final = 2**31 - 1


def pod_host(pod_ref: str) -> str:
    """The host of a pod reference as the gateway writes it (`http://10.0.0.7:8000`, or a bare
    `10.0.0.7:8000`); the reference itself when it has no host (a pod name)."""
    text = pod_ref if "//" in pod_ref else f"//{pod_ref}"
    try:
        host = urlsplit(text).hostname
    except ValueError:
        return pod_ref
    return host or pod_ref


def node_first_costs(pods: Iterable[tuple[str, str | None, int]]) -> dict[str, int]:
    """(pod, node, in flight) -> deletion cost that empties whole nodes first.

    Nodes are ranked by the requests in flight on them, then by how many of the pods they
    hold, then by name; a pod's cost is its node's rank times (the largest in-flight count + 1)
    plus its own in-flight count. So a scale-down takes every pod of the least busy node before
    any pod of the next (a node the model no longer fills is released under node billing, where
    spreading the removals over all nodes would free none), and within a node the idlest pods
    first. Pods with no node yet all rank 0 (the ReplicaSet removes unscheduled pods first).
    """
    rows = list(pods)
    load: dict[str, int] = {}
    count: dict[str, int] = {}
    for _, node, n in rows:
        if node:
            load[node] = load.get(node, 0) + n
            count[node] = count.get(node, 0) + 1
    ranked = sorted(load, key=lambda node: (load[node], count[node], node))
    rank = {node: i for i, node in enumerate(ranked)}
    step = max((n for _, _, n in rows), default=0) + 1
    return {name: min(rank.get(node or "", 0) * step + n, INT32_MAX) for name, node, n in rows}


def deletion_costs(pods: Iterable[Pod], in_flight: Mapping[str, int]) -> dict[str, int]:
    """Pod name -> deletion cost: the requests in flight on it (matched by pod IP or name),
    ranked node by node (`node_first_costs`) where the pods name their nodes."""
    by_host: dict[str, int] = {}
    for ref, n in in_flight.items():
        if n > 0:
            host = pod_host(ref)
            by_host[host] = by_host.get(host, 0) + n
    rows: list[tuple[str, str | None, int]] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name:
            continue
        ip = (pod.get("status") or {}).get("podIP") or ""
        n = by_host.get(ip, 0) if ip else 0
        n += by_host.get(name, 0)
        node = (pod.get("spec") or {}).get("nodeName") or None
        rows.append((name, node, min(n, INT32_MAX)))
    return node_first_costs(rows)


def current_cost(pod: Pod) -> int:
    """The pod's deletion cost as the ReplicaSet controller reads it (absent or invalid = 0)."""
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST)
    try:
        return int(raw) if raw is not None else 0
    except (TypeError, ValueError):
        return 0


def selector_string(selector: LabelSelector | None) -> str | None:
    """A Deployment's `matchLabels` selector as a `labelSelector` query; None if there is none
    or it uses `matchExpressions` (then the pods are left unranked)."""
    if not isinstance(selector, dict) or selector.get("matchExpressions"):
        return None
    labels = selector.get("matchLabels") or {}
    if not labels:
        return None
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


class KubePodAPI:
    """Lists pods by label selector and merge-PATCHes their deletion-cost annotation."""

    def __init__(self, api: client.ApiClient) -> None:
        self._core = client.CoreV1Api(api)

    async def list_pods(self, namespace: str, selector: str, *, timeout: float) -> list[Pod]:
        """The live pods matching `selector` (terminating ones left out)."""
        try:
            resp = await self._core.list_namespaced_pod(
                namespace,
                label_selector=selector,
                _preload_content=False,
                _request_timeout=timeout,
            )
            data: ObjectList[Pod] = orjson.loads(await body_of(resp))
        except Exception as exc:
            raise classify(exc) from exc
        return [
            pod
            for pod in data.get("items") or []
            if not (pod.get("metadata") or {}).get("deletionTimestamp")
        ]

    async def set_deletion_cost(
        self, namespace: str, name: str, cost: int, *, timeout: float
    ) -> None:
        body = {"metadata": {"annotations": {DELETION_COST: str(cost)}}}
        try:
            resp = await self._core.patch_namespaced_pod(  # type: ignore[call-arg]  # stubs lack _content_type
                name,
                namespace,
                body,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=timeout,
            )
            await body_of(resp)
        except Exception as exc:
            raise classify(exc) from exc


class DeletionCoster:
    """The actuator's `prepare` hook: rank a Deployment's pods before it is scaled down."""

    def __init__(
        self,
        pods: KubePodAPI,
        *,
        selector: Callable[[ScaleTarget], str | None],
        in_flight: Callable[[ScaleTarget], Mapping[str, int] | None],
        fence: Callable[[], float] | None = None,
        target_fence: Callable[[ScaleTarget], float] | None = None,
        request_timeout_s: float = 5.0,
    ) -> None:
        self._pods = pods
        self._selector = selector
        self._in_flight = in_flight
        self._fence = fence
        self._target_fence = target_fence
        self._timeout = request_timeout_s
        self.writes = 0

    def _budget(self, target: ScaleTarget, budget: float) -> float:
        if self._target_fence is not None:
            left = self._target_fence(target)
        else:
            left = self._fence() if self._fence is not None else budget
        return min(left, self._timeout)

    async def __call__(self, target: ScaleTarget, replicas: int, budget: float) -> None:
        selector = self._selector(target)
        in_flight = self._in_flight(target)
        if selector is None or in_flight is None:
            return  # not a model Deployment (e.g. headroom placeholders): nothing to keep
        pods = await self._pods.list_pods(
            target.namespace, selector, timeout=min(budget, self._timeout)
        )
        costs = deletion_costs(pods, in_flight)
        for pod in pods:
            name = (pod.get("metadata") or {}).get("name") or ""
            if not name:
                continue
            cost = costs.get(name, 0)
            if cost == current_cost(pod):
                continue
            timeout = self._budget(target, budget)
            if timeout <= 0:
                return  # leadership ended: the actuator's own fence drops the scale-down
            await self._pods.set_deletion_cost(target.namespace, name, cost, timeout=timeout)
            self.writes += 1
        log.debug("ranked %d pods of %s for %d replicas: %s", len(pods), target, replicas, costs)
