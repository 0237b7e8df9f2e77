"""Check command lines written in manifests and docker-compose.yml against the real CLI.

`surgescale COMMAND --help` is run for every command (through the real `surgescale.cli.main`, all
in one child process) and every `--flag` used in a container's arguments must appear in it; a
command that is not built yet is reported as such. Values are not parsed here: the integration tests run the parts for real."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from typing import Any

from surgescale.cli import resolve
from tests.manifests.kube import REPO

CHECKED = (("gateway",), ("controller",), ("sim", "pod"), ("sim", "cluster"), ("sim", "load"))
"""The commands manifests and docker-compose.yml run; their help is collected in one process."""

_COLLECT = """
import contextlib, io, json, sys
from surgescale.cli import main
out = {}
for words in json.loads(sys.argv[1]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            code = main([*words, "--help"])
        except SystemExit as exc:
            code = exc.code
    out[" ".join(words)] = [code, buf.getvalue()]
print(json.dumps(out))
"""


@functools.cache
def _all_help() -> dict[str, tuple[int, str]]:
    proc = subprocess.run(
        [sys.executable, "-c", _COLLECT, json.dumps(CHECKED)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found: dict[str, list[Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {k: (int(v[0] or 0), str(v[1])) for k, v in found.items()}


def help_text(words: tuple[str, ...]) -> str:
    """What `surgescale WORDS --help` prints; fails with its message if the command fails."""
    if words not in CHECKED:
        raise AssertionError(f"add {words} to CHECKED in {__name__}")
    code, text = _all_help()[" ".join(words)]
    if code != 0:
        raise AssertionError(
            f"`surgescale {' '.join(words)} --help` failed ({code}): {text[-500:]}"
        )
    return text


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
