"""Check command lines written in manifests and docker-compose.yml against the real CLI.

`surgescale COMMAND --help` is run once per command (as a user would) and every `--flag` used
in a container's arguments must appear in it; a command that is not built yet is reported as
such. Values are not parsed here: the integration tests run the parts for real."""

from __future__ import annotations

import functools
import re
import subprocess
import sys

from surgescale.cli import resolve
from tests.manifests.kube import REPO


@functools.cache
def help_text(words: tuple[str, ...]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "surgescale", *words, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"`surgescale {' '.join(words)} --help` failed ({proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-500:]}"
        )
    return proc.stdout


def check_argv(argv: list[str]) -> list[str]:
    """Problems with one `surgescale` argument list (empty when every flag exists)."""
    found = resolve(argv)
    if found is None:
        return [f"unknown command {argv[:2]}"]
    _command, rest = found
    words = tuple(argv[: len(argv) - len(rest)])
    text = help_text(words)
    known = set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", text))
    problems = []
    for arg in rest:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            if flag not in known:
                problems.append(f"`surgescale {' '.join(words)}` has no flag {flag}")
    return problems
