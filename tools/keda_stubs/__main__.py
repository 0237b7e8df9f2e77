"""`python -m tools.keda_stubs [--check]`: see the package docstring."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = Path("controller/keda/externalscaler.proto")
OUTPUTS = (
    "externalscaler_pb2.py",
    "externalscaler_pb2.pyi",
    "externalscaler_pb2_grpc.py",
    "externalscaler_pb2_grpc.pyi",
)


def generate(out: Path) -> None:
    """Run protoc (grpcio-tools) with the mypy-protobuf plugins, writing under `out`."""
    try:
        from grpc_tools import protoc
    except ImportError:
        sys.exit("grpcio-tools is missing: pip install -e '.[test]'")
    bindir = Path(sys.executable).parent
    plugins = [
        f"--plugin=protoc-gen-mypy={shutil.which('protoc-gen-mypy', path=str(bindir))}",
        f"--plugin=protoc-gen-mypy_grpc={shutil.which('protoc-gen-mypy_grpc', path=str(bindir))}",
    ]
    if any(p.endswith("=None") for p in plugins):
        sys.exit("mypy-protobuf is missing: pip install -e '.[test]'")
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        *plugins,
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        str(ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.keda_stubs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a diff")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        made = Path(tmp) / PROTO.parent
        stale = []
        for name in OUTPUTS:
            new = (made / name).read_bytes()
            target = ROOT / PROTO.parent / name
            if target.exists() and target.read_bytes() == new:
                continue
            stale.append(name)
            if not args.check:
                target.write_bytes(new)
    if args.check and stale:
        print(f"stale generated files (run python -m tools.keda_stubs): {stale}", file=sys.stderr)
        return 1
    print("regenerated: " + (", ".join(stale) if stale else "nothing changed"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
