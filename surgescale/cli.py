"""The `surgescale` command line: one entry point that dispatches to the parts.

Each subcommand lives in the package that owns it and exposes `main(argv: list[str]) -> int`;
this module only maps names to those functions and imports them lazily, so `surgescale --help`
stays fast and a part that is missing its dependencies does not break the others. A command that
needs the simulator's libraries (the `sim` extra, which the container image leaves out) and does
not find them exits with status 2 and the line that installs them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

SIM_EXTRA_MODULES = frozenset({"rich", "matplotlib", "jsonschema", "jsonpatch"})
"""The top-level modules of pyproject.toml's `sim` extra (tests/manifests/test_image_boundary.py
checks that they match); the product packages import none of them (an import-linter contract)."""


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand: where its `main` lives and a one-line summary for `--help`."""

    target: str
    summary: str


COMMANDS: dict[tuple[str, ...], Command] = {
    ("demo",): Command("sim.demo.cli:main", "run the local closed-loop demo (no cluster, no GPU)"),
    ("gateway",): Command(
        "gateway.cli:main", "run the admission gateway (OpenAI-compatible proxy)"
    ),
    ("controller",): Command("controller.cli:main", "run the autoscaling controller"),
    ("keda-scaler",): Command(
        "controller.keda.cli:main", "serve the queue signal to KEDA (external push scaler)"
    ),
    ("sim", "pod"): Command("sim.pod.cli:main", "run a simulated vLLM pod"),
    ("sim", "cluster"): Command("sim.cluster.cli:main", "run the simulated Kubernetes API server"),
    ("sim", "load"): Command("sim.load.cli:main", "replay a trace or a synthetic pattern"),
    ("sim", "evaluate"): Command(
        "sim.evaluate.cli:main", "virtual-time comparison of autoscaling policies"
    ),
    ("bench", "events"): Command("sim.benches.events:main", "event pipeline benchmark"),
    ("bench", "pod"): Command("sim.pod.bench:main", "simulated pod streams-per-core benchmark"),
    ("bench", "cluster"): Command("sim.cluster.bench:main", "simulated API server benchmark"),
    ("bench", "gateway"): Command("sim.benches.gateway:main", "gateway added-latency benchmark"),
    ("bench", "controller"): Command(
        "sim.benches.controller:main", "controller reaction-latency benchmark"
    ),
    ("bench", "faults"): Command(
        "sim.benches.faults.cli:main", "faults and hostile input against the running loop"
    ),
    ("bench", "e2e"): Command("sim.demo.bench:main", "end-to-end: ours against a KEDA-style loop"),
}


def _usage() -> str:
    lines = ["usage: surgescale COMMAND [ARGS...]", "", "commands:"]
    for words, command in COMMANDS.items():
        lines.append(f"  {' '.join(words):<20} {command.summary}")
    lines.append("")
    lines.append("Run `surgescale COMMAND --help` for a command's options.")
    return "\n".join(lines)


def resolve(argv: Sequence[str]) -> tuple[Command, list[str]] | None:
    """Find the longest command name that prefixes `argv`; return it with the remaining args."""
    for length in (2, 1):
        key = tuple(argv[:length])
        if key in COMMANDS:
            return COMMANDS[key], list(argv[length:])
    return None


def load(target: str) -> Callable[[list[str]], int]:
    """Import `module:function` and return the function."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    func: Callable[[list[str]], int] = getattr(module, attr)
    return func


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `surgescale` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] == "--version":
        from surgescale import __version__

        print(__version__)
        return 0
    found = resolve(args)
    if found is None:
        print(f"surgescale: unknown command {' '.join(args[:2])!r}\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    command, rest = found
    words = " ".join(args[: len(args) - len(rest)])
    try:
        func = load(command.target)
    except ModuleNotFoundError as exc:
        if exc.name and command.target.startswith(exc.name.split(".")[0]):
            print(f"surgescale: this command is not built yet ({command.target})", file=sys.stderr)
            return 2
        return _missing_sim_extra(words, exc)
    try:
        return func(rest)
    except ModuleNotFoundError as exc:  # a lazy import, e.g. matplotlib when a report is drawn
        return _missing_sim_extra(words, exc)


def _missing_sim_extra(words: str, exc: ModuleNotFoundError) -> int:
    """Status 2 and the install line when `exc` is a module of the `sim` extra; else re-raise."""
    if (exc.name or "").split(".")[0] not in SIM_EXTRA_MODULES:
        raise exc
    print(
        f"surgescale {words}: needs the simulator's libraries ({exc.name} is not installed):"
        " pip install 'surgescale[sim]'",
        file=sys.stderr,
    )
    return 2
