"""Every kustomization renders with `kubectl kustomize`, identically with every usable kubectl,
and each overlay holds what it promises (dev: simulators, no Karpenter; prod: no simulators)."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path

import pytest

from controller.cli import parse_args
from gateway.settings import ENV_PREFIX, load_settings
from tests.manifests.clis import check_argv
from tests.manifests.kube import (
    MANIFESTS,
    Obj,
    find,
    key,
    of_kind,
    pod_specs,
    render,
    render_text,
    renderers,
)

KUSTOMIZATIONS = [
    "base",
    "base/crd",
    "overlays/dev",
    "overlays/dev/model",
    "overlays/prod",
    "overlays/sim",
    "models/llama3-8b",
    "karpenter",
    "karpenter/headroom",
    "karpenter/capacitybuffer",
    "monitoring",
    "keda",
]


def test_every_kustomization_is_listed() -> None:
    found = sorted(
        str(p.parent.relative_to(MANIFESTS)) for p in MANIFESTS.rglob("kustomization.yaml")
    )
    assert found == sorted(KUSTOMIZATIONS)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_renders_the_same_with_every_kubectl(directory: str) -> None:
    outputs = {r.version: render_text(directory, r.path) for r in renderers()}
    first = next(iter(outputs.values()))
    assert first.strip(), f"manifests/{directory} rendered nothing"
    for version, text in outputs.items():
        assert text == first, f"kubectl {version} renders manifests/{directory} differently"


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_overlay_core_is_complete_and_namespaced(overlay: str) -> None:
    objs = render(overlay)
    keys = [key(o) for o in objs]
    assert len(keys) == len(set(keys)), f"duplicate objects: {keys}"
    for kind, name in [
        ("CustomResourceDefinition", "inferencescalers.surgescale.io"),
        ("Deployment", "surgescale-controller"),
        ("Deployment", "surgescale-gateway"),
        ("Service", "surgescale-gateway"),
        ("HorizontalPodAutoscaler", "surgescale-gateway"),
        ("StatefulSet", "surgescale-redis"),
        ("Service", "surgescale-redis"),
        ("Deployment", "llama3-8b"),
        ("Service", "llama3-8b"),
        ("InferenceScaler", "llama3-8b"),
    ]:
        find(objs, kind, name)
    cluster_scoped = {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "NodePool",
        "EC2NodeClass",
        "PriorityClass",
    }
    for obj in objs:
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in cluster_scoped:
            assert ns is None, f"{key(obj)} is cluster-scoped but has a namespace"
        else:
            assert ns == "surgescale", f"{key(obj)} is not in namespace surgescale"


def _images(objs: list[Obj]) -> set[str]:
    return {c["image"] for _, pod in pod_specs(objs) for c in pod["containers"]}


def test_dev_runs_simulators_and_no_karpenter() -> None:
    objs = render("overlays/dev")
    model = find(objs, "Deployment", "llama3-8b")
    container = model["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "surgescale:dev"
    assert container["args"][:2] == ["sim", "pod"]
    assert "nvidia.com/gpu" not in str(container["resources"])
    assert "nodeSelector" not in model["spec"]["template"]["spec"]
    find(objs, "Job", "surgescale-loadgen")
    assert not of_kind(objs, "NodePool", "EC2NodeClass", "ServiceMonitor")
    scaler = find(objs, "InferenceScaler", "llama3-8b")
    assert scaler["spec"]["capacity"]["strategy"] == "None"
    assert _images(objs) == {"surgescale:dev", "redis:7.4.2-bookworm"}


def test_prod_has_karpenter_monitoring_and_no_simulators() -> None:
    objs = render("overlays/prod")
    pool = find(objs, "NodePool", "gpu")
    assert pool["spec"]["replicas"] == 0
    assert set(pool["spec"]["limits"]) == {"nodes"}
    find(objs, "EC2NodeClass", "gpu")
    assert len(of_kind(objs, "ServiceMonitor")) == 3
    find(objs, "ConfigMap", "surgescale-grafana-dashboard")
    assert not of_kind(objs, "Job")
    for obj, pod in pod_specs(objs):
        for container in pod["containers"]:
            assert container.get("args", [""])[0] != "sim", f"simulator in prod: {key(obj)}"
    model = find(objs, "Deployment", "llama3-8b")
    vllm = model["spec"]["template"]["spec"]["containers"][0]
    assert vllm["image"].startswith("vllm/vllm-openai:v")
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"
    scaler = find(objs, "InferenceScaler", "llama3-8b")
    assert scaler["spec"]["capacity"]["nodePoolRef"]["name"] == pool["metadata"]["name"]
    assert scaler["spec"]["scaleTargetRef"]["name"] == "llama3-8b"
    assert "registry.example.com/surgescale/surgescale:0.1.0" in _images(objs)


def test_sim_overlay_is_the_dev_model_plus_simulated_gpus() -> None:
    """The simulated cluster gets the dev overlay's objects, with only GPUs and nodes added (GPUs
    billed per GPU, so the compose demo's replicas follow its load)."""
    dev, sim = render("overlays/dev"), render("overlays/sim")
    assert sorted(key(o) for o in sim) == sorted(
        [
            "Namespace/surgescale",
            "CustomResourceDefinition/inferencescalers.surgescale.io",
            "Deployment/surgescale/llama3-8b",
            "Service/surgescale/llama3-8b",
            "InferenceScaler/surgescale/llama3-8b",
        ]
    )
    for obj in sim:
        twin = copy.deepcopy(find(dev, obj["kind"], obj["metadata"]["name"]))
        if obj["kind"] in ("Namespace", "CustomResourceDefinition"):
            assert obj.get("spec") == twin.get("spec"), key(obj)  # base adds labels, no more
            continue
        if obj["kind"] == "Deployment":
            resources = twin["spec"]["template"]["spec"]["containers"][0]["resources"]
            resources["requests"]["nvidia.com/gpu"] = "1"
            resources["limits"]["nvidia.com/gpu"] = "1"
        if obj["kind"] == "InferenceScaler":
            assert twin["spec"]["capacity"]["strategy"] == "None"
            twin["spec"]["capacity"] = {
                **twin["spec"]["capacity"],
                "strategy": "StaticNodePool",
                "nodePoolRef": {"name": "gpu"},
                "billing": "GPU",
            }
        assert obj == twin, key(obj)


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_container_args_use_real_flags(overlay: str) -> None:
    """Every surgescale container's command line names flags its CLI really has."""
    checked = 0
    for obj, pod in pod_specs(render(overlay)):
        for container in pod["containers"]:
            if container["image"].split(":")[0].endswith("surgescale"):
                assert check_argv(container["args"]) == [], key(obj)
                checked += 1
    assert checked >= 2


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_gateway_config_loads_with_the_gateways_own_settings(
    overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap's gateway.yaml, with the Deployment's environment, is valid for
    `gateway.settings` and routes every InferenceScaler's model to a real Service port."""
    objs = render(overlay)
    text = find(objs, "ConfigMap", "surgescale-gateway")["data"]["gateway.yaml"]
    gateway = find(objs, "Deployment", "surgescale-gateway")["spec"]["template"]["spec"]
    (container,) = gateway["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    fields = {"metadata.namespace": "surgescale", "metadata.name": "surgescale-gateway-abc"}
    secrets = {"api-keys": "sk-one,sk-two", "api-key": "vllm-key", "password": "pw"}
    seen: dict[str, str] = {}
    for env in container["env"]:
        source = env.get("valueFrom", {})
        if "secretKeyRef" in source:
            value = secrets[source["secretKeyRef"]["key"]]
        else:
            value = env.get("value") or fields[source["fieldRef"]["fieldPath"]]
        value = re.sub(r"\$\((\w+)\)", lambda m: seen[m.group(1)], value)  # as the kubelet does
        seen[env["name"]] = value
        if env["name"] == f"{ENV_PREFIX}CONFIG":
            assert value.startswith(mount["mountPath"] + "/")
            value = str(tmp_path / value.removeprefix(mount["mountPath"] + "/"))
            Path(value).write_text(text)
        monkeypatch.setenv(env["name"], value)
    settings = load_settings()
    assert settings.redis_url == "redis://surgescale:pw@surgescale-redis:6379/0"
    assert settings.upstream_api_key is not None
    assert settings.upstream_api_key.get_secret_value() == "vllm-key"
    assert [k.get_secret_value() for k in settings.api_keys] == ["sk-one", "sk-two"]
    assert settings.allow_unauthenticated is (overlay == "overlays/dev")
    assert settings.host == "0.0.0.0"
    assert settings.namespace == "surgescale"
    assert settings.gateway_id == "surgescale-gateway-abc"
    services = {s["metadata"]["name"]: s for s in of_kind(objs, "Service")}
    for scaler in of_kind(objs, "InferenceScaler"):
        route = settings.route(scaler["spec"]["model"])
        assert route is not None, f"the gateway does not route {scaler['spec']['model']}"
        assert route.service in services
        port_names = [p["name"] for p in services[route.service]["spec"]["ports"]]
        assert route.port_name in port_names
    assert container["ports"][0]["containerPort"] == settings.port


def test_controller_args_parse_with_the_controllers_own_settings() -> None:
    objs = render("overlays/prod")
    (container,) = find(objs, "Deployment", "surgescale-controller")["spec"]["template"]["spec"][
        "containers"
    ]
    env: dict[str, str] = {}
    for e in container["env"]:
        value = "pw" if "secretKeyRef" in e.get("valueFrom", {}) else e.get("value", "")
        env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1)) or "x", value)
    argv = [
        re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1)) or "surgescale", a)
        for a in container["args"][1:]
    ]
    assert not any("redis" in a for a in argv), "the Redis URL (with its password) is in args"
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        settings = parse_args(argv)
    assert settings.http_port == container["ports"][0]["containerPort"]
    assert settings.redis_url == "redis://surgescale:pw@surgescale-redis:6379/0"
    assert any(s["metadata"]["name"] == "surgescale-redis" for s in of_kind(objs, "Service"))
    probe = container["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/readyz", "metrics")
