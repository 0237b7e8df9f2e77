"""The faults bench's Kubernetes world: the model and its objects, and what a fault may vary.

`StackOptions` is what one fault asks of its stack (controllers, Redis memory, scaler settings,
gateway settings); `apply_objects` creates the namespace, the model's Deployment and Service, our
CRD and the InferenceScalers in the simulated API server over plain HTTP; `write_kubeconfig`
points a client at a server (the API server itself, or a controller's proxy listener);
`warm_up` waits for a first request to go through the gateway. `sim.benches.faults.stack` starts
the processes that use them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from controller import crd
from controller.scaler import OPT_IN_LABEL
from sim.demo import objects, startup
from sim.demo.procs import StartError

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
    max_replicas: int = 8
    probe_model: bool = False
    """Also an InferenceScaler for `PROBE_MODEL` (events written by the bench, no pods)."""
    gateway_args: tuple[str, ...] = ()
    gateway_env: dict[str, str] = field(default_factory=dict)
    controller_args: tuple[str, ...] = ()
    """Extra `SURGESCALE_GATEWAY_*` settings (a gateway ignores names it does not know)."""
    api_key: str = field(default_factory=lambda: f"sk-faults-{uuid.uuid4().hex[:12]}")


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
            # the stack's pods are Ready 2 s after creation: the policy plans with that
            "target": {
                "concurrencyPerReplica": SETUP.max_num_seqs,
                "coldStartSeconds": SETUP.model_load_s,
            },
            # GPUs billed per replica (shared nodes): the replicas follow demand rather than
            # filling the node, so the faults have scale-ups and scale-downs to watch.
            "capacity": {
                "strategy": "None",
                "billing": "GPU",
                "gpusPerReplica": SETUP.gpus_per_replica,
                "gpusPerNode": SETUP.gpus_per_node,
            },
            "scaleDown": {
                "delaySeconds": options.scale_down_delay_s,
                "periodSeconds": options.scale_down_period_s,
            },
        },
    }


def opted_in(obj: Any) -> Any:
    """The object with the label by which a scale target opts in to the controller."""
    meta = obj.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), OPT_IN_LABEL: "true"}
    return obj


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
        (f"/apis/apps/v1/namespaces/{ns}/deployments", opted_in(objects.deployment(setup))),
        (f"/api/v1/namespaces/{ns}/services", objects.service(setup)),
        ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd.crd_manifest()),
    ]
    scalers = [scaler_body(options, model=MODEL, target=MODEL, max_replicas=options.max_replicas)]
    if options.probe_model:
        steps.append((f"/apis/apps/v1/namespaces/{ns}/deployments", opted_in(probe_deployment())))
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
    """A first request through the gateway (with the stack's key) has been served."""
    await startup.warm_up(url, MODEL, timeout_s, api_key=api_key)
