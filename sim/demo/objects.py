"""The Kubernetes objects of the demo, and applying them through kubernetes_asyncio.

One model Deployment whose pods the simulated cluster runs as simulated vLLM pods (model, profile,
cold start and `max_num_seqs` from the pod template's annotations, GPUs from its resource
requests), the Service the gateway routes by, and for our controller the InferenceScaler CRD and
object. `apply()` creates each object or, if it exists, replaces its spec, so a demo can run
against a cluster it already used (`--kubeconfig`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from controller import crd

log = logging.getLogger(__name__)

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSetup:
    """What the demo deploys (sizes in real-world seconds; the cluster applies the speed)."""

    namespace: str = "surgescale-demo"
    model: str = "llama3-70b"
    profile: str = "llama3-70b-tp4-h200"
    gpus_per_replica: int = 4
    gpus_per_node: int = 8
    max_num_seqs: int = 16
    model_load_s: float = 60.0
    node_boot_s: float = 120.0
    initial_replicas: int = 1
    min_replicas: int = 1
    max_replicas: int = 8
    slo_s: float = 1.0
    scale_down_delay_s: float = 300.0
    scale_down_period_s: float = 30.0
    nodepool: str = "gpu"
    pod_port: int = 8000

    @property
    def deployment(self) -> str:
        return self.model

    @property
    def service(self) -> str:
        return self.model

    @property
    def scaler(self) -> str:
        return self.model

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.model}

    @property
    def selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.labels.items())


def namespace(setup: ModelSetup) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": setup.namespace}}


def deployment(setup: ModelSetup) -> Obj:
    gpus = str(setup.gpus_per_replica)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": setup.deployment,
            "namespace": setup.namespace,
            # opted in: the controller scales only targets that carry this label
            "labels": {**setup.labels, "surgescale.io/scalable": "true"},
        },
        "spec": {
            "replicas": setup.initial_replicas,
            "selector": {"matchLabels": setup.labels},
            "template": {
                "metadata": {
                    "labels": setup.labels,
                    "annotations": {
                        "surgescale.io/model": setup.model,
                        "surgescale.io/profile": setup.profile,
                        "surgescale.io/load-seconds": str(setup.model_load_s),
                        "surgescale.io/max-num-seqs": str(setup.max_num_seqs),
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai:latest",
                            "env": [{"name": "SURGESCALE_MODEL", "value": setup.model}],
                            "ports": [{"name": "http", "containerPort": setup.pod_port}],
                            "readinessProbe": {
                                "httpGet": {"path": "/health", "port": setup.pod_port}
                            },
                            "resources": {
                                "requests": {"nvidia.com/gpu": gpus},
                                "limits": {"nvidia.com/gpu": gpus},
                            },
                        }
                    ],
                },
            },
        },
    }


def service(setup: ModelSetup) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": setup.service, "namespace": setup.namespace, "labels": setup.labels},
        "spec": {
            "selector": setup.labels,
            "ports": [{"name": "http", "port": setup.pod_port, "targetPort": setup.pod_port}],
        },
    }


def inference_scaler(setup: ModelSetup, *, speed: float) -> Obj:
    """Our InferenceScaler; its delays are divided by `speed` like every other period."""
    return {
        "apiVersion": f"{crd.GROUP}/{crd.VERSION}",
        "kind": crd.KIND,
        "metadata": {"name": setup.scaler, "namespace": setup.namespace},
        "spec": {
            "model": setup.model,
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": setup.deployment,
            },
            "minReplicas": setup.min_replicas,
            "maxReplicas": setup.max_replicas,
            "slo": {"ttftP95Ms": setup.slo_s * 1000.0},
            "target": {
                "concurrencyPerReplica": setup.max_num_seqs,
                "coldStartSeconds": setup.model_load_s / speed,
            },
            "scaleDown": {
                "delaySeconds": setup.scale_down_delay_s / speed,
                "periodSeconds": setup.scale_down_period_s / speed,
            },
            "capacity": {
                "strategy": "StaticNodePool",
                "nodePoolRef": {"name": setup.nodepool},
                "gpusPerReplica": setup.gpus_per_replica,
                "gpusPerNode": setup.gpus_per_node,
                "nodeBootSeconds": setup.node_boot_s / speed,
            },
        },
    }


async def _create_or_replace(create: Any, replace: Any, body: Obj, *args: Any) -> None:
    try:
        await create(*args, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        name = body["metadata"]["name"]
        current = await replace[0](name, *args)
        current_obj = current if isinstance(current, dict) else None
        version = (
            current_obj["metadata"]["resourceVersion"]
            if current_obj is not None
            else current.metadata.resource_version
        )
        updated = {**body, "metadata": {**body["metadata"], "resourceVersion": version}}
        await replace[1](name, *args, updated)


async def apply(api: k8s.ApiClient, setup: ModelSetup, *, ours: bool, speed: float) -> None:
    """Create (or update) the demo's objects; with `ours`, also the CRD and the InferenceScaler."""
    core = k8s.CoreV1Api(api)
    apps = k8s.AppsV1Api(api)
    try:
        ns_body: Any = namespace(setup)  # dicts are accepted where the stubs want models
        await core.create_namespace(ns_body)
    except ApiException as exc:
        if exc.status != 409:
            raise
    ns = setup.namespace
    await _create_or_replace(
        apps.create_namespaced_deployment,
        (apps.read_namespaced_deployment, apps.replace_namespaced_deployment),
        deployment(setup),
        ns,
    )
    await _create_or_replace(
        core.create_namespaced_service,
        (core.read_namespaced_service, core.replace_namespaced_service),
        service(setup),
        ns,
    )
    if not ours:
        return
    ext = k8s.ApiextensionsV1Api(api)
    try:
        crd_body: Any = crd.crd_manifest()
        await ext.create_custom_resource_definition(crd_body)
    except ApiException as exc:
        if exc.status != 409:
            raise
    custom = k8s.CustomObjectsApi(api)
    body = inference_scaler(setup, speed=speed)
    try:
        await custom.create_namespaced_custom_object(crd.GROUP, crd.VERSION, ns, crd.PLURAL, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = await custom.get_namespaced_custom_object(
            crd.GROUP, crd.VERSION, ns, crd.PLURAL, setup.scaler
        )
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await custom.replace_namespaced_custom_object(
            crd.GROUP, crd.VERSION, ns, crd.PLURAL, setup.scaler, body
        )
