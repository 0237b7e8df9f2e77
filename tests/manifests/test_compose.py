"""docker-compose.yml is validated without Docker: parsed by the `compose-spec` package (the
compose_spec Rust library: the Compose Specification, unknown keys are errors) after PyYAML has
resolved the merge keys, then checked for the demo's topology, references that resolve,
hardening, build contexts that exist (only the data the image needs) and command lines that the
real CLI accepts. `make compose-check` (tools/compose_check, run by CI) runs it for real."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

from tests.manifests.clis import check_argv
from tests.manifests.kube import MANIFESTS, REPO, render

COMPOSE = REPO / "docker-compose.yml"
OURS = "surgescale:dev"


def _load() -> dict[str, Any]:
    """The file with `${VAR:-default}` interpolated as Compose does, the images at their
    defaults (the published ones)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_IMAGE")}
    data: dict[str, Any] = yaml.safe_load(_interpolate(COMPOSE.read_text(), env))
    return data


def _kubeconfig_mount(svc: dict[str, Any]) -> Path:
    (mount,) = [v for v in svc["volumes"] if v["target"] == "/etc/surgescale/kubeconfig"]
    assert mount["type"] == "bind"
    assert mount["read_only"] is True
    return (REPO / str(mount["source"])).resolve()


def _interpolate(text: str, env: Mapping[str, str] = os.environ) -> str:
    """Compose's `${VAR:-default}` / `${VAR}` with `env` (this process's environment)."""

    def sub(m: re.Match[str]) -> str:
        return env.get(m.group(1)) or (m.group(3) or "")

    return re.sub(r"\$\{([A-Z0-9_]+)(:-([^}]*))?\}", sub, text)


def _flag(argv: list[str], name: str) -> str:
    for arg in argv:
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {argv}")


def test_compose_spec_accepts_the_file() -> None:
    compose = PyCompose.from_json(json.dumps(_load()))
    compose.validate()
    assert {"redis", "sim-cluster", "gateway", "controller", "loadgen"} <= set(
        compose.service_names()
    )


def test_compose_spec_rejects_a_typo() -> None:
    data = _load()
    data["services"]["gateway"]["comand"] = data["services"]["gateway"].pop("command")
    with pytest.raises(ValueError, match="comand"):
        PyCompose.from_json(json.dumps(data)).validate()


def test_references_resolve() -> None:
    services = _load()["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        mode = svc.get("network_mode", "")
        if mode.startswith("service:"):
            target = mode.split(":", 1)[1]
            assert target in services, f"{name} shares the network of unknown {target}"
            assert "ports" not in svc, f"{name} cannot publish ports in a shared namespace"
        if "--kubeconfig=/etc/surgescale/kubeconfig" in svc.get("command", []):
            assert _kubeconfig_mount(svc).is_file(), f"{name}: kubeconfig not mounted"


def test_one_image_built_once_from_our_dockerfile() -> None:
    services = _load()["services"]
    builders = [n for n, s in services.items() if "build" in s]
    assert builders == ["sim-cluster"]
    build = services["sim-cluster"]["build"]
    assert (REPO / build["context"] / build["dockerfile"]).resolve() == REPO / "Dockerfile"
    dockerfile = (REPO / "Dockerfile").read_text()
    for name, path in build["additional_contexts"].items():
        assert f"FROM scratch AS {name}" in dockerfile, f"context {name} replaces no stage"
        resolved = (REPO / _interpolate(path)).resolve()
        assert resolved.is_dir(), f"build context {name}: {resolved} does not exist"
        assert resolved.name in {"calibration", "karpenter-crds"}, (
            f"build context {name}: {resolved} is not data the image needs"
        )
    ours = [n for n, s in services.items() if s.get("image") == OURS]
    assert set(ours) == {"sim-cluster", "gateway", "controller", "loadgen"}


def test_every_image_can_be_replaced_by_a_local_one() -> None:
    """Where no registry is reachable (`make compose-check`), each image comes from a variable."""
    raw = yaml.safe_load(COMPOSE.read_text())
    variables = {
        "SURGESCALE_IMAGE": "localhost/surgescale:dev",
        "REDIS_IMAGE": "localhost/redis:x",
        "KUBECTL_IMAGE": "localhost/kubectl:x",
    }
    local = yaml.safe_load(_interpolate(COMPOSE.read_text(), variables))["services"]
    for name, svc in yaml.safe_load(_interpolate(COMPOSE.read_text(), {}))["services"].items():
        assert re.fullmatch(r"\$\{[A-Z]+_IMAGE:-[^}]+\}", raw["services"][name]["image"]), name
        assert local[name]["image"] in variables.values(), name
        assert svc["image"] not in variables.values(), name


def test_every_service_is_hardened() -> None:
    for name, svc in _load()["services"].items():
        assert svc.get("read_only") is True, name
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        assert "privileged" not in svc, name
        image = svc["image"]
        assert ":" in image.rsplit("/", 1)[-1], f"{name}: {image} has no tag"
        assert not image.endswith(":latest"), name
        if image == OURS or image.startswith("redis:"):
            user = svc["user"].split(":")[0]
            assert user.isdigit(), f"{name}: user {user} is not numeric"
            assert int(user) > 0, f"{name} runs as root"


def test_topology_matches_the_demo() -> None:
    data = _load()
    services = data["services"]
    cluster_argv = services["sim-cluster"]["command"]
    assert cluster_argv[:2] == ["sim", "cluster"]
    api_port = _flag(cluster_argv, "--port")
    kubeconfig = yaml.safe_load(_kubeconfig_mount(services["gateway"]).read_text())
    (cluster,) = kubeconfig["clusters"]
    assert cluster["cluster"]["server"] == f"http://127.0.0.1:{api_port}"
    gateway = services["gateway"]["command"]
    assert gateway[0] == "gateway"
    published = services["sim-cluster"]["ports"]
    assert any(p.endswith(f":{_flag(gateway, '--port')}") for p in published)
    assert _flag(gateway, "--redis-url") == "redis://redis:6379/0"
    controller = services["controller"]["command"]
    assert controller[0] == "controller"
    assert _flag(controller, "--redis-url") == "redis://redis:6379/0"
    assert _flag(controller, "--kubeconfig") == "/etc/surgescale/kubeconfig"
    loadgen = services["loadgen"]["command"]
    assert loadgen[:2] == ["sim", "load"]
    # The setup jobs apply the CRD, then the overlay the simulated cluster understands.
    crd = _flag(services["setup-crd"]["command"], "--kustomize").removeprefix("/manifests/")
    overlay = _flag(services["setup"]["command"], "--kustomize").removeprefix("/manifests/")
    assert (crd, overlay) == ("base/crd", "overlays/sim")
    assert (MANIFESTS / crd / "kustomization.yaml").is_file()
    assert (MANIFESTS / overlay / "kustomization.yaml").is_file()
    assert "setup-crd" in services["setup"]["depends_on"]
    for part in ("gateway", "controller"):
        assert services[part]["depends_on"]["setup"]["condition"] == (
            "service_completed_successfully"
        )
    # The simulated pool is the one the sim overlay's InferenceScaler sizes, with its GPUs.
    pool_name, gpus_per_node, *_ = _flag(cluster_argv, "--nodepool").split(":")
    (scaler,) = [o for o in render("overlays/sim") if o["kind"] == "InferenceScaler"]
    capacity = scaler["spec"]["capacity"]
    assert capacity["nodePoolRef"]["name"] == pool_name
    assert capacity["gpusPerNode"] == int(gpus_per_node)
    namespace = kubeconfig["contexts"][0]["context"]["namespace"]
    assert scaler["metadata"]["namespace"] == namespace
    assert _flag(gateway, "--namespace") == namespace
    assert _flag(controller, "--namespace") == namespace


@pytest.mark.parametrize("service", ["sim-cluster", "gateway", "controller", "loadgen"])
def test_commands_use_real_flags(service: str) -> None:
    argv = _load()["services"][service]["command"]
    assert check_argv(argv) == []


def test_cli_check_can_fail() -> None:
    assert check_argv(["sim", "cluster", "--no-such-flag=1"])
    assert check_argv(["no-such-command"])


def test_paths_in_compose_exist() -> None:
    for name, svc in _load()["services"].items():
        for volume in svc.get("volumes", []):
            source = (REPO / volume["source"]).resolve()
            assert source.is_relative_to(REPO), f"{name} mounts {source} from outside the repo"
            assert source.exists(), f"{name} mounts {source}, which does not exist"
    assert Path(COMPOSE).name == "docker-compose.yml"
