"""Every rendered object validates: built-in kinds against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict), NodePools/NodeClaims against Karpenter's real CRDs,
InferenceScalers against our generated CRD and the controller's own parser. The validators are
shown to reject bad objects too, so a pass means something."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from controller.crd import SpecError, parse_spec
from tests.manifests.kube import (
    MANIFESTS,
    Obj,
    find,
    key,
    known_crds,
    load_file,
    of_kind,
    render,
    validation_errors,
)
from tests.manifests.test_render import KUSTOMIZATIONS


def _all_objects() -> list[Obj]:
    objs: list[Obj] = []
    for directory in KUSTOMIZATIONS:
        objs.extend(render(directory))
    objs.extend(load_file(MANIFESTS / "argocd" / "application.yaml"))
    return objs


@pytest.mark.parametrize("directory", [*KUSTOMIZATIONS, "argocd"])
def test_every_object_validates(directory: str) -> None:
    if directory == "argocd":
        objs = load_file(MANIFESTS / "argocd" / "application.yaml")
    else:
        objs = render(directory)
    problems = {key(o): errs for o in objs if (errs := validation_errors(o))}
    assert not problems, problems


def test_custom_resources_are_really_checked() -> None:
    """Each CRD-backed kind we ship is covered by a schema (not waved through)."""
    crds = known_crds()
    kinds = {(o["apiVersion"], o["kind"]) for o in _all_objects()}
    for api_kind in [
        ("karpenter.sh/v1", "NodePool"),
        ("surgescale.io/v1alpha1", "InferenceScaler"),
    ]:
        assert api_kind in kinds
        assert api_kind in crds
    assert ("karpenter.sh/v1", "NodeClaim") in crds


def test_inferencescalers_parse_with_the_controllers_own_model() -> None:
    scalers = of_kind(render("overlays/dev") + render("overlays/prod"), "InferenceScaler")
    assert len(scalers) == 2
    for scaler in scalers:
        spec = parse_spec(scaler["spec"])
        assert spec.model == scaler["spec"]["model"]


def _nodepool() -> Obj:
    return copy.deepcopy(find(render("karpenter"), "NodePool", "gpu"))


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        pytest.param(lambda o: o["spec"].update(replicas=-1), "spec.replicas", id="negative"),
        pytest.param(lambda o: o["spec"].update(replicas="2"), "spec.replicas", id="string"),
        pytest.param(lambda o: o["spec"].update(bogus=1), "spec", id="unknown-field"),
        pytest.param(
            lambda o: o["spec"]["template"]["spec"].pop("nodeClassRef"),
            "spec.template.spec",
            id="no-nodeclassref",
        ),
        pytest.param(
            lambda o: o["spec"]["disruption"].update(consolidateAfter="soon"),
            "spec.disruption.consolidateAfter",
            id="bad-duration",
        ),
        # Karpenter's CEL rules for static pools, evaluated with cel-python:
        pytest.param(
            lambda o: o["spec"]["limits"].update(cpu="64"),
            "spec: only 'limits.nodes' is supported on static NodePools",
            id="static-cpu-limit",
        ),
        pytest.param(
            lambda o: o["spec"].update(weight=10),
            "spec: 'weight' is not supported on static NodePools",
            id="static-weight",
        ),
        pytest.param(
            lambda o: o["spec"]["template"]["metadata"]["labels"].update(
                {"karpenter.sh/nodepool": "x"}
            ),
            "spec.template.metadata.labels",
            id="restricted-label",
        ),
        pytest.param(
            lambda o: o["spec"]["template"]["spec"]["requirements"].append(
                {"key": "karpenter.k8s.aws/instance-gpu-count", "operator": "Gt", "values": []}
            ),
            "spec.template.spec.requirements",
            id="gt-without-value",
        ),
    ],
)
def test_karpenter_schema_rejects_bad_nodepools(
    mutate: Callable[[Obj], object], where: str
) -> None:
    pool = _nodepool()
    mutate(pool)
    errors = validation_errors(pool)
    assert any(e.startswith(where) for e in errors), errors


def test_karpenter_schema_checks_nodeclaims() -> None:
    """A NodeClaim as Karpenter makes one from our pool validates; a broken one does not."""
    pool = _nodepool()
    claim: Obj = {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {"name": "gpu-abcde"},
        "spec": {
            "nodeClassRef": pool["spec"]["template"]["spec"]["nodeClassRef"],
            "requirements": pool["spec"]["template"]["spec"]["requirements"],
            "taints": pool["spec"]["template"]["spec"]["taints"],
            "expireAfter": "720h",
        },
    }
    assert validation_errors(claim) == []
    claim["spec"]["requirements"][0]["operator"] = "Maybe"
    assert validation_errors(claim)


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        pytest.param(lambda s: s.update(minReplicas=-1), "spec.minReplicas", id="negative-min"),
        pytest.param(lambda s: s.pop("scaleTargetRef"), "spec", id="no-target"),
        pytest.param(lambda s: s.update(typo=1), "spec", id="unknown-field"),
        pytest.param(
            lambda s: s["capacity"].update(strategy="Magic"),
            "spec.capacity.strategy",
            id="bad-strategy",
        ),
    ],
)
def test_our_crd_rejects_bad_inferencescalers(mutate: Callable[[Obj], object], where: str) -> None:
    scaler = copy.deepcopy(find(render("overlays/prod"), "InferenceScaler", "llama3-8b"))
    mutate(scaler["spec"])
    errors = validation_errors(scaler)
    assert any(e.startswith(where) for e in errors), errors
    with pytest.raises(SpecError):
        parse_spec(scaler["spec"])


def test_kubernetes_schema_rejects_bad_builtins() -> None:
    deployment = copy.deepcopy(find(render("base"), "Deployment", "surgescale-controller"))
    deployment["spec"]["replicas"] = "two"
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnly"] = True
    errors = validation_errors(deployment)
    assert any("replicas" in e for e in errors), errors
    assert any("readOnly" in e for e in errors), errors


@pytest.mark.parametrize(
    ("kind", "name", "mutate", "where"),
    [
        pytest.param(
            "EC2NodeClass",
            "gpu",
            lambda o: o["spec"]["amiSelectorTerms"].__setitem__(0, {"alias": "plan9@latest"}),
            "spec.amiSelectorTerms[0].alias",
            id="nodeclass-unknown-ami-family",
        ),
        pytest.param(
            "EC2NodeClass",
            "gpu",
            lambda o: o["spec"]["metadataOptions"].update(httpTokens="sometimes"),
            "spec.metadataOptions.httpTokens",
            id="nodeclass-bad-enum",
        ),
        pytest.param(
            "ServiceMonitor",
            None,
            lambda o: o["spec"].update(scrapeEvery="15s"),
            "spec",
            id="servicemonitor-unknown-field",
        ),
    ],
)
def test_shipped_third_party_crds_reject_bad_objects(
    kind: str, name: str | None, mutate: Callable[[Obj], object], where: str
) -> None:
    """EC2NodeClass and ServiceMonitor are checked against their real CRDs (shipped in sim/data),
    CEL rules included: the prod overlay's objects pass (test above), broken copies do not."""
    objs = render("overlays/prod")
    obj = copy.deepcopy(find(objs, kind, name) if name else of_kind(objs, kind)[0])
    assert validation_errors(obj) == []
    mutate(obj)
    errors = validation_errors(obj)
    assert any(e.startswith(where) for e in errors), errors
