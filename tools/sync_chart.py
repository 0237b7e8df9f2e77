"""`python -m tools.sync_chart`: copy the files the Helm chart shares with the kustomize
manifests into charts/surgescale (Helm cannot read files outside the chart directory, and a
packaged chart must carry its own copies). `--check` only reports stale copies (exit 1), which is
what tests/charts asserts; run without it after changing the CRD (`python -m controller.crd
--write`) or the Grafana dashboard."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "surgescale"

COPIES: tuple[tuple[Path, Path], ...] = (
    (
        REPO / "manifests" / "base" / "crd" / "inferencescalers.surgescale.io.yaml",
        CHART / "crds" / "inferencescalers.surgescale.io.yaml",
    ),
    (
        REPO / "manifests" / "monitoring" / "dashboards" / "surgescale.json",
        CHART / "dashboards" / "surgescale.json",
    ),
)
"""(source of truth, the chart's copy)."""


def stale() -> list[tuple[Path, Path]]:
    """The pairs whose chart copy is missing or differs from its source, byte for byte."""
    return [
        (src, dst)
        for src, dst in COPIES
        if not dst.is_file() or dst.read_bytes() != src.read_bytes()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.sync_chart", description=__doc__)
    parser.add_argument("--check", action="store_true", help="report stale copies, change nothing")
    args = parser.parse_args(argv)
    todo = stale()
    for src, dst in todo:
        where = f"{dst.relative_to(REPO)} <- {src.relative_to(REPO)}"
        if args.check:
            print(f"stale: {where}", file=sys.stderr)
        else:
            shutil.copyfile(src, dst)
            print(f"copied: {where}", file=sys.stderr)
    return 1 if args.check and todo else 0


if __name__ == "__main__":
    sys.exit(main())
