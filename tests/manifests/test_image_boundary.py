"""The product boundary of the container image: the Dockerfile installs pyproject.toml's base
dependencies and no extra unless asked (docker-compose.yml asks for `sim`: it runs the simulated
cluster); the commands the product image runs work with every library of the `sim` extra (and
what only it pulls in) made unimportable, and the commands that need it say how to install it.
import-linter's contract "The product packages import none of the sim extra" covers the imports
written in gateway/, controller/ and surgescale/; this covers what they load when they run."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from surgescale.cli import SIM_EXTRA_MODULES
from tests.manifests.kube import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

PRODUCT_IMAGE_COMMANDS = (
    ("gateway",),
    ("controller",),
    ("sim", "pod"),  # manifests/overlays/dev runs simulated pods and the load generator
    ("sim", "load"),
    ("bench", "events"),
)
"""What runs from the image built without extras; `sim cluster` runs only in docker-compose."""


def _closure(requirements: list[str]) -> set[str]:
    """The canonical names of the installed distributions `requirements` pull in, transitively."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in md.requires(req.name) or []]
            todo += [
                Requirement(r)
                for extra in req.extras
                for r in md.requires(req.name) or []
                if Requirement(r).marker is not None
                and Requirement(r).marker.evaluate({"extra": extra})  # type: ignore[union-attr]
            ]
        except md.PackageNotFoundError as exc:
            raise AssertionError(
                f"{req.name} is not installed: pip install -e '.[sim,test]'"
            ) from exc
    return seen


def _sim_only_modules() -> set[str]:
    """Top-level modules that only the `sim` extra brings (not the base dependencies)."""
    sim_only = _closure(PROJECT["optional-dependencies"]["sim"]) - _closure(PROJECT["dependencies"])
    return {
        module
        for module, dists in md.packages_distributions().items()
        if dists and all(canonicalize_name(d) in sim_only for d in dists)
    }


def _dockerfile_requirements(tmp_path: Path, extras: str) -> list[str]:
    """What the Dockerfile's requirements step writes, run as written in the Dockerfile."""
    dockerfile = (REPO / "Dockerfile").read_text()
    (line,) = re.findall(r'^RUN (python -c ".*?" "\$EXTRAS") > requirements.txt', dockerfile, re.M)
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    proc = subprocess.run(
        ["bash", "-c", line.replace("python ", f"{sys.executable} ", 1)],
        env={"EXTRAS": extras},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout.splitlines()


def test_the_image_installs_the_base_dependencies_unless_compose_asks_for_the_sim_extra(
    tmp_path: Path,
) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.findall(r'^ARG EXTRAS="([^"]*)"', dockerfile, flags=re.M) == [""]
    assert _dockerfile_requirements(tmp_path, "") == PROJECT["dependencies"]
    assert (
        _dockerfile_requirements(tmp_path, "sim")
        == PROJECT["dependencies"] + PROJECT["optional-dependencies"]["sim"]
    )
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    built = [s for s in compose["services"].values() if "build" in s]
    assert [s["build"]["args"]["EXTRAS"] for s in built] == ["sim"]
    images = (REPO / "tools" / "compose_check" / "images.py").read_text()
    assert '"EXTRAS": "sim"' in images, "make compose-check must build the image as compose does"


def test_the_cli_names_the_modules_of_the_sim_extra() -> None:
    sim = PROJECT["optional-dependencies"]["sim"]
    assert {canonicalize_name(Requirement(r).name).replace("-", "_") for r in sim} == (
        SIM_EXTRA_MODULES
    )
    assert _sim_only_modules() >= SIM_EXTRA_MODULES


_PROBE = """
import contextlib, importlib.abc, io, json, sys
blocked = set(json.loads(sys.argv[1]))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())
from surgescale.cli import main
out = {}
for words in json.loads(sys.argv[2]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            code = main([*words, "--help"])
        except SystemExit as exc:
            code = exc.code
    out[" ".join(words)] = [code or 0, buf.getvalue()[-400:]]
from sim.load.runner import _Progress
out["progress bar"] = repr(_Progress.start(3))
out["loaded"] = sorted({m.split(".")[0] for m in sys.modules} & blocked)
print(json.dumps(out))
"""


def test_the_product_commands_run_without_the_sim_extra_and_the_others_say_what_to_install() -> (
    None
):
    blocked = sorted(_sim_only_modules())
    assert {"matplotlib", "rich", "jsonschema", "jsonpatch", "numpy"} <= set(blocked)
    needing = (("sim", "cluster"), ("demo",), ("bench", "e2e"))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            json.dumps(blocked),
            json.dumps([*PRODUCT_IMAGE_COMMANDS, *needing]),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for words in PRODUCT_IMAGE_COMMANDS:
        code, text = out[" ".join(words)]
        assert code == 0, f"surgescale {' '.join(words)} --help without the sim extra: {text}"
    for words in needing:
        code, text = out[" ".join(words)]
        assert code == 2, (words, text)
        assert "pip install 'surgescale[sim]'" in text, (words, text)
    assert out["progress bar"] == "None"  # the load runs on without its bar
    assert out["loaded"] == []
