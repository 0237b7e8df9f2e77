"""manifests/keda/external-scaler.yaml: the scaler's Deployment and Service against the
Kubernetes schemas; the ScaledObject (KEDA's CRD is not in the repository) by its shape, and its
trigger metadata through the very parser the scaler uses."""

from __future__ import annotations

import re
from typing import Any

from controller.keda.cli import parse_args
from controller.keda.scaler import Trigger
from tests.manifests.kube import MANIFESTS, find, key, load_file, render, validation_errors

FILE = MANIFESTS / "keda" / "external-scaler.yaml"
SCALED_OBJECT_SPEC = {
    # The fields of KEDA's ScaledObject spec (keda.sh/v1alpha1).
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}


def _objects() -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in load_file(FILE)}


def test_scaler_deployment_and_service_are_valid_and_match() -> None:
    everything = load_file(FILE)
    kinds = sorted(o["kind"] for o in everything)
    assert kinds == ["Deployment", "NetworkPolicy", "NetworkPolicy", "ScaledObject", "Service"]
    for obj in everything:
        if obj["kind"] != "ScaledObject":
            assert validation_errors(obj) == [], key(obj)
    objs = _objects()
    dep, svc = objs["Deployment"], objs["Service"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    settings = parse_args(container["args"][1:])
    assert container["args"][0] == "keda-scaler"
    assert settings.models == ["llama3-8b"]
    assert container["ports"][0]["containerPort"] == settings.port
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def test_network_policies_let_keda_in_and_the_scaler_reach_redis() -> None:
    policies = {
        o["metadata"]["name"]: o["spec"] for o in load_file(FILE) if o["kind"] == "NetworkPolicy"
    }
    scaler = policies["surgescale-keda-scaler"]
    (ingress,) = scaler["ingress"]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "keda"
    }
    assert ingress["ports"][0]["port"] == _objects()["Service"]["spec"]["ports"][0]["port"]
    (egress,) = scaler["egress"]
    assert egress["to"][0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "surgescale-redis"
    }
    redis = policies["redis-from-keda-scaler"]
    assert redis["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "surgescale-redis"}
    assert redis["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "surgescale-keda-scaler"
    }


def test_scaled_object_shape_and_trigger() -> None:
    objs = _objects()
    so, svc, dep = objs["ScaledObject"], objs["Service"], objs["Deployment"]
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC, set(spec) - SCALED_OBJECT_SPEC
    model = find(render("models/llama3-8b"), "Deployment", "llama3-8b")
    ref = spec["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
        "apps/v1",
        "Deployment",
        model["metadata"]["name"],
    )
    assert spec["minReplicaCount"] == 0  # scale from zero is the point of the push trigger
    assert spec["maxReplicaCount"] > 0
    assert isinstance(spec["pollingInterval"], int)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "external-push"
    assert trigger["metricType"] in {"AverageValue", "Value"}
    metadata = trigger["metadata"]
    assert all(isinstance(v, str) for v in metadata.values()), "KEDA metadata is string -> string"
    host, port = re.fullmatch(r"([a-z0-9.-]+):(\d+)", metadata["scalerAddress"]).groups()  # type: ignore[union-attr]
    assert host.split(".")[:2] == [svc["metadata"]["name"], "surgescale"]
    assert int(port) == svc["spec"]["ports"][0]["port"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    served = parse_args(container["args"][1:]).models
    parsed = Trigger.parse(metadata, served)  # what the scaler will make of it
    assert parsed.model == "llama3-8b"
    assert parsed.target == 32.0
