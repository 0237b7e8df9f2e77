"""The container engine for the compose check: podman, set up as it works on a machine with hybrid
cgroups and no systemd (runc rather than crun, the cgroupfs manager, events to a file, default
ulimits that runc accepts), and podman-compose from PyPI (Debian's 1.0.3 mishandles
`network_mode: service:NAME`). Installs podman and runc with apt-get when they are missing and
this process may; otherwise says what is missing."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tools.compose_check.steps import CheckError, run, say

STEP = "engine"
CONF_DIR = Path("/etc/containers/containers.conf.d")
CONF_NAME = "50-surgescale-compose.conf"
CONTAINERS_CONF = """\
# Written by `make compose-check` (tools/compose_check/engine.py): podman as it runs here.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
PODMAN_COMPOSE = "podman-compose==1.6.0"
APT_PACKAGES = ("podman", "runc")


@dataclass(frozen=True, kw_only=True)
class Engine:
    """How to call the engine and compose."""

    podman: str
    compose: tuple[str, ...]
    version: str


def _can_apt() -> bool:
    return shutil.which("apt-get") is not None and os.geteuid() == 0


_apt_updated = False


def apt_install(*packages: str, step: str) -> None:
    """`apt-get install` (after one `apt-get update` per run) as root, or a CheckError naming
    what is missing."""
    global _apt_updated
    if not _can_apt():
        raise CheckError(
            step,
            f"{' and '.join(packages)} missing, and apt-get cannot install "
            f"{'them' if len(packages) > 1 else 'it'} here (needs apt-get and root): "
            f"install {' '.join(packages)} and run again",
        )
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        run(["apt-get", "update", "-qq"], step=step, timeout=300, env=env)
        _apt_updated = True
    say(f"apt-get install {' '.join(packages)}")
    run(["apt-get", "install", "-y", "-qq", *packages], step=step, timeout=600, env=env)


def write_conf(conf_dir: Path = CONF_DIR) -> bool:
    """Put the drop-in in place; True when it changed."""
    path = conf_dir / CONF_NAME
    if path.is_file() and path.read_text() == CONTAINERS_CONF:
        return False
    try:
        conf_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(CONTAINERS_CONF)
    except OSError as exc:
        raise CheckError(STEP, f"cannot write podman's settings to {path}: {exc}") from exc
    return True


def _compose(cache: Path) -> tuple[str, ...]:
    """podman-compose 1.6 in a virtualenv of its own under the cache directory."""
    venv = cache / "podman-compose-venv"
    exe = venv / "bin" / "podman-compose"
    marker = venv / f".{PODMAN_COMPOSE}"
    if not marker.is_file():
        say(f"installing {PODMAN_COMPOSE} into {venv}")
        run([sys.executable, "-m", "venv", "--clear", str(venv)], step=STEP, timeout=120)
        run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", PODMAN_COMPOSE],
            step=STEP,
            timeout=300,
        )
        marker.touch()
    return (str(exe),)


def prepare(*, cache: Path, conf_dir: Path = CONF_DIR) -> Engine:
    """A working podman (installed if need be) and podman-compose, or a CheckError."""
    if shutil.which("podman") is None or shutil.which("runc") is None:
        missing = [p for p in APT_PACKAGES if shutil.which(p) is None]
        if not _can_apt():
            raise CheckError(
                STEP,
                f"no container engine: {' and '.join(missing)} not found, and apt-get cannot "
                "install them here (needs apt-get and root). Install podman and runc "
                "(a Docker daemon is not used by this check) and run again",
            )
        apt_install(*APT_PACKAGES, step=STEP)
    podman = shutil.which("podman") or "podman"
    if os.geteuid() == 0 and write_conf(conf_dir):
        say(f"wrote {conf_dir / CONF_NAME}")
    info = json.loads(run([podman, "info", "--format", "json"], step=STEP, timeout=60).stdout)
    host = info["host"]
    runtime, manager = host["ociRuntime"]["name"], host["cgroupManager"]
    if runtime != "runc" or manager != "cgroupfs":
        raise CheckError(
            STEP,
            f"podman uses runtime {runtime!r} and cgroup manager {manager!r}; this check needs "
            f'runtime = "runc" and cgroup_manager = "cgroupfs" (see {conf_dir / CONF_NAME})',
        )
    cache.mkdir(parents=True, exist_ok=True)
    return Engine(podman=podman, compose=_compose(cache), version=info["version"]["Version"])
