"""What the rendered manifests promise beyond schema validity: least-privilege RBAC with separate
ServiceAccounts, the restricted pod security profile, probes and resources, PDBs and topology
spread, leader-elected controller replicas, the gateway's CPU HPA, NetworkPolicies for the
documented paths only, pinned images, and GitOps settings that never undo a scaling decision."""

from __future__ import annotations

from typing import Any

import pytest

from tests.manifests.kube import (
    MANIFESTS,
    Obj,
    find,
    key,
    load_file,
    of_kind,
    pod_specs,
    render,
)
from tests.manifests.rbac import Attributes, Authorizer

OVERLAYS = ["overlays/dev", "overlays/prod"]

Rule = tuple[str, str, str]  # (apiGroup, resource, verb)

CONTROLLER_GRANTS: set[Rule] = {
    ("surgescale.io", "inferencescalers", "list"),
    ("surgescale.io", "inferencescalers", "watch"),
    ("surgescale.io", "inferencescalers/status", "patch"),
    ("apps", "deployments", "list"),
    ("apps", "deployments", "watch"),
    ("apps", "deployments/scale", "get"),
    ("apps", "deployments/scale", "patch"),
    ("karpenter.sh", "nodepools", "list"),
    ("karpenter.sh", "nodepools", "watch"),
    ("karpenter.sh", "nodepools/scale", "get"),
    ("karpenter.sh", "nodepools/scale", "patch"),
    ("", "nodes", "list"),
    ("", "nodes", "watch"),
    ("", "events", "create"),
    ("autoscaling.x-k8s.io", "capacitybuffers", "get"),
    ("autoscaling.x-k8s.io", "capacitybuffers", "patch"),
    ("", "pods", "list"),
    ("", "pods", "patch"),
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "update"),
    ("coordination.k8s.io", "leases", "list"),  # --shards > 1 counts the member Leases
}
"""What the controller really calls (recorded in test_sim_cluster.py and
tests/controller/test_scale_down.py). It differs from the issue's first sketch (nodeclaims, get
on InferenceScalers, patch on events) because the controller counts ready/starting replicas from
Deployment status and capacity from the NodePools and their nodes; pods are only listed and
their deletion-cost annotation patched before a scale-down. Nothing it does not call is
granted."""

GATEWAY_GRANTS: set[Rule] = {
    ("discovery.k8s.io", "endpointslices", "list"),
    ("discovery.k8s.io", "endpointslices", "watch"),
}


def expand(rules: list[dict[str, Any]]) -> set[Rule]:
    out: set[Rule] = set()
    for rule in rules:
        assert "resourceNames" not in rule or rule["resourceNames"], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    out.add((group, resource, verb))
    return out


def grants_of(objs: list[Obj], service_account: str) -> set[Rule]:
    """Every (group, resource, verb) bound to the ServiceAccount through (Cluster)RoleBindings."""
    out: set[Rule] = set()
    for binding in of_kind(objs, "RoleBinding", "ClusterRoleBinding"):
        subjects = binding.get("subjects", [])
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == service_account for s in subjects
        ):
            continue
        ref = binding["roleRef"]
        role = find(objs, ref["kind"], ref["name"])
        out |= expand(role["rules"])
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_grants_exactly_what_each_part_needs(overlay: str) -> None:
    objs = render(overlay)
    assert grants_of(objs, "surgescale-controller") == CONTROLLER_GRANTS
    assert grants_of(objs, "surgescale-gateway") == GATEWAY_GRANTS
    bound = {
        s["name"] for b in of_kind(objs, "RoleBinding", "ClusterRoleBinding") for s in b["subjects"]
    }
    assert bound == {"surgescale-controller", "surgescale-gateway"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_separate_service_accounts_and_no_token_where_unneeded(overlay: str) -> None:
    objs = render(overlay)
    for obj, pod in pod_specs(objs):
        name = obj["metadata"]["name"]
        if name in ("surgescale-controller", "surgescale-gateway"):
            assert pod["serviceAccountName"] == name
            assert pod["automountServiceAccountToken"] is True
        else:
            assert "serviceAccountName" not in pod, key(obj)
            assert pod.get("automountServiceAccountToken") is False, f"{key(obj)} mounts a token"


ALL_POD_DIRS = [*OVERLAYS, "karpenter/headroom"]


@pytest.mark.parametrize("directory", ALL_POD_DIRS)
def test_restricted_pod_security(directory: str) -> None:
    for obj, pod in pod_specs(render(directory)):
        where = key(obj)
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert psc.get("runAsUser", 1) != 0, where
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["runAsNonRoot"] is True, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert "add" not in sc["capabilities"], (where, c["name"])
            assert not sc.get("privileged", False), (where, c["name"])
            assert c["resources"]["requests"], (where, c["name"])
            assert c["resources"]["limits"].get("memory"), (where, c["name"])
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1], f"{where}: image {image} has no tag"
            assert not image.endswith(":latest"), f"{where}: image {image} is not pinned"
        assert not pod.get("hostNetwork"), where
        assert not pod.get("hostPID"), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_workloads_have_probes_pdbs_and_spread(overlay: str) -> None:
    objs = render(overlay)
    pdbs = of_kind(objs, "PodDisruptionBudget")
    for obj, pod in pod_specs(objs):
        if obj["kind"] == "Job":
            continue
        where = key(obj)
        for c in pod["containers"]:
            assert "readinessProbe" in c, where
            assert "livenessProbe" in c, where
        labels = obj["spec"]["template"]["metadata"]["labels"]
        covered = [
            p
            for p in pdbs
            if all(labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items())
        ]
        if obj["kind"] == "StatefulSet":
            assert not covered, f"{where}: a PDB on a single Redis would block every drain"
            continue
        assert covered, f"{where} has no PodDisruptionBudget"
        spread = pod.get("topologySpreadConstraints", [])
        assert spread, f"{where} has no topology spread"
        for s in spread:
            assert s["labelSelector"]["matchLabels"].items() <= labels.items(), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_controller_is_leader_elected_pair_and_gateway_scales_on_cpu(overlay: str) -> None:
    objs = render(overlay)
    controller = find(objs, "Deployment", "surgescale-controller")
    assert controller["spec"]["replicas"] == 2
    gateway = find(objs, "Deployment", "surgescale-gateway")
    assert "replicas" not in gateway["spec"], "the HPA owns the gateway's replicas"
    hpa = find(objs, "HorizontalPodAutoscaler", "surgescale-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "surgescale-gateway"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    cpu_request = gateway["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert "cpu" in cpu_request, "CPU utilization needs a CPU request"


def _selects(policy: Obj, labels: dict[str, str]) -> bool:
    want = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in want.items())


def _labels(objs: list[Obj], name: str) -> dict[str, str]:
    for obj, _ in pod_specs(objs):
        if obj["metadata"]["name"] == name:
            labels: dict[str, str] = obj["spec"]["template"]["metadata"]["labels"]
            return labels
    raise AssertionError(name)


def _allowed(objs: list[Obj], src: str, dst: str, port: int) -> bool:
    """Does some egress rule of `src` AND some ingress rule of `dst` allow `src` -> `dst`:port?"""
    policies = of_kind(objs, "NetworkPolicy")
    src_labels, dst_labels = _labels(objs, src), _labels(objs, dst)

    def peer_ok(peers: list[Obj] | None, labels: dict[str, str]) -> bool:
        if peers is None:
            return True
        for peer in peers:
            if "podSelector" in peer and "namespaceSelector" not in peer:
                want = peer["podSelector"].get("matchLabels", {})
                if all(labels.get(k) == v for k, v in want.items()):
                    return True
        return False

    def port_ok(ports: list[Obj] | None) -> bool:
        return ports is None or any(p.get("port") == port for p in ports)

    egress = any(
        peer_ok(rule.get("to"), dst_labels) and port_ok(rule.get("ports"))
        for p in policies
        if _selects(p, src_labels) and "Egress" in p["spec"]["policyTypes"]
        for rule in p["spec"].get("egress", [])
    )
    ingress = any(
        peer_ok(rule.get("from"), src_labels) and port_ok(rule.get("ports"))
        for p in policies
        if _selects(p, dst_labels) and "Ingress" in p["spec"]["policyTypes"]
        for rule in p["spec"].get("ingress", [])
    )
    return egress and ingress


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_only_the_documented_paths(overlay: str) -> None:
    objs = render(overlay)
    deny = find(objs, "NetworkPolicy", "default-deny")
    assert deny["spec"]["podSelector"] == {}
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    allowed = [
        ("surgescale-gateway", "llama3-8b", 8000),
        ("surgescale-gateway", "surgescale-redis", 6379),
        ("surgescale-controller", "surgescale-redis", 6379),
    ]
    denied = [
        ("surgescale-controller", "llama3-8b", 8000),
        ("llama3-8b", "surgescale-redis", 6379),
        ("llama3-8b", "surgescale-gateway", 8080),
        ("surgescale-redis", "surgescale-controller", 9090),
        ("surgescale-gateway", "surgescale-controller", 9090),
    ]
    if overlay == "overlays/dev":
        allowed.append(("surgescale-loadgen", "surgescale-gateway", 8080))
        denied.append(("surgescale-loadgen", "llama3-8b", 8000))
    for src, dst, port in allowed:
        assert _allowed(objs, src, dst, port), f"{src} -> {dst}:{port} should be allowed"
    for src, dst, port in denied:
        assert not _allowed(objs, src, dst, port), f"{src} -> {dst}:{port} should be denied"


def test_static_nodepool_and_headroom() -> None:
    pool = find(render("karpenter"), "NodePool", "gpu")
    assert pool["spec"]["replicas"] == 0, "static from creation"
    assert set(pool["spec"]["limits"]) == {"nodes"}, "static pools accept only limits.nodes"
    assert "weight" not in pool["spec"]
    headroom = render("karpenter/headroom")
    priority = find(headroom, "PriorityClass", "surgescale-headroom")
    assert priority["value"] < 0
    assert priority["preemptionPolicy"] == "Never"
    placeholder = find(headroom, "Deployment", "surgescale-headroom")
    assert placeholder["spec"]["replicas"] == 0
    pod = placeholder["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "surgescale-headroom"
    model = find(render("models/llama3-8b"), "Deployment", "llama3-8b")["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["requests"] == {
        k: v
        for k, v in model["containers"][0]["resources"]["requests"].items()
        if k in ("cpu", "memory", "nvidia.com/gpu")
    }, "a placeholder must reserve exactly one model replica"
    assert pod["nodeSelector"] == model["nodeSelector"]
    assert "StaticCapacity" in (MANIFESTS / "karpenter" / "kustomization.yaml").read_text()
    dynamic = find(headroom, "NodePool", "gpu-dynamic")
    assert "replicas" not in dynamic["spec"]


def test_argocd_never_undoes_scaling() -> None:
    (app,) = load_file(MANIFESTS / "argocd" / "application.yaml")
    assert app["spec"]["source"]["path"] == "manifests/overlays/prod"
    assert (MANIFESTS / "overlays" / "prod" / "kustomization.yaml").is_file()
    ignored = {
        (d["kind"], d.get("name")): d["jsonPointers"] for d in app["spec"]["ignoreDifferences"]
    }
    prod = render("overlays/prod")
    assert ignored[("Deployment", "llama3-8b")] == ["/spec/replicas"]
    assert ignored[("NodePool", None)] == ["/spec/replicas"]
    for scaler in of_kind(prod, "InferenceScaler"):
        target = scaler["spec"]["scaleTargetRef"]["name"]
        assert ("Deployment", target) in ignored, f"Argo CD would reset {target}'s replicas"
    assert "RespectIgnoreDifferences=true" in app["spec"]["syncPolicy"]["syncOptions"]


def test_keda_scaledobject_targets_the_same_model() -> None:
    (scaled,) = render("keda")
    model = find(render("models/llama3-8b"), "Deployment", "llama3-8b")
    assert scaled["spec"]["scaleTargetRef"]["name"] == model["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert "vllm:time_to_first_token_seconds_bucket" in trigger["metadata"]["query"]
    scaler = find(render("models/llama3-8b"), "InferenceScaler", "llama3-8b")
    assert float(trigger["metadata"]["threshold"]) == scaler["spec"]["slo"]["ttftP95Ms"] / 1000
    assert scaled["spec"]["pollingInterval"] == 30


def test_third_party_objects_have_what_their_controllers_need() -> None:
    """Beyond their schemas (EC2NodeClass and ServiceMonitor are validated against their real CRDs;
    ScaledObject and Application have none in the repository): the fields their controllers
    require, and references that point at objects that exist."""
    prod = render("overlays/prod")
    (nodeclass,) = of_kind(prod, "EC2NodeClass")
    spec = nodeclass["spec"]
    assert spec["amiSelectorTerms"]
    assert spec["subnetSelectorTerms"]
    assert spec["securityGroupSelectorTerms"]
    assert ("role" in spec) != ("instanceProfile" in spec), "exactly one of role/instanceProfile"
    assert spec["metadataOptions"]["httpTokens"] == "required", "IMDSv2 only"
    for pool in of_kind(prod, "NodePool") + of_kind(render("karpenter/headroom"), "NodePool"):
        ref = pool["spec"]["template"]["spec"]["nodeClassRef"]
        assert (ref["group"], ref["kind"], ref["name"]) == (
            "karpenter.k8s.aws",
            "EC2NodeClass",
            nodeclass["metadata"]["name"],
        )
    for monitor in of_kind(prod, "ServiceMonitor"):
        assert monitor["spec"]["selector"]["matchLabels"]
        assert monitor["spec"]["endpoints"]
    (scaled,) = render("keda")
    assert scaled["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert scaled["spec"]["triggers"][0]["metadata"]["serverAddress"].startswith("http")
    (app,) = load_file(MANIFESTS / "argocd" / "application.yaml")
    assert app["spec"]["destination"]["namespace"] == "surgescale"
    assert app["spec"]["source"]["targetRevision"]
    assert app["spec"]["project"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_sharded_controller_may_use_its_shard_and_member_leases(overlay: str) -> None:
    """--shards > 1: a Lease per shard, a member Lease per replica (named after the pod), listed
    by label to count the members (controller.shards); only in the controller's namespace."""
    rbac = Authorizer.for_service_account(render(overlay), "surgescale-controller", "surgescale")
    lease = {"group": "coordination.k8s.io", "resource": "leases", "namespace": "surgescale"}
    assert rbac.allowed(Attributes(verb="list", **lease))
    for name in ("surgescale-controller-3", "surgescale-controller-member-ctl-7d9f-1"):
        for verb in ("get", "update"):
            assert rbac.allowed(Attributes(verb=verb, name=name, **lease)), (verb, name)
    assert not rbac.allowed(Attributes(verb="watch", **lease))
    assert not rbac.allowed(Attributes(verb="delete", name="surgescale-controller-3", **lease))
    elsewhere = {**lease, "namespace": "kube-system"}
    assert not rbac.allowed(Attributes(verb="list", **elsewhere))
    assert not rbac.allowed(Attributes(verb="update", name="kube-scheduler", **elsewhere))
