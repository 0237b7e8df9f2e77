"""`python -m tools.compose_check` (`make compose-check`): prepare the engine, build the images,
run docker-compose.yml until the controller has scaled the model under the compose load and the
load has finished, print the figures, and tear everything down whatever happens. Progress goes to
stderr; the last line on stdout is one JSON object. Exit 1 on any failure, naming the step."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from tools.compose_check import engine as engine_mod
from tools.compose_check import images
from tools.compose_check.stack import Stack, load_compose, plan, write_override
from tools.compose_check.steps import CheckError, Timings, exclusive, run, say

REPO = Path(__file__).resolve().parents[2]


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stopped(Exception):
    """A signal asked the check to stop; teardown still runs."""


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(f"stopped by signal {signal.Signals(signum).name}")


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.compose_check", description=__doc__)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("SURGESCALE_COMPOSE_CACHE", "/var/cache/surgescale-compose")),
        help="kept across runs: the debootstrap root filesystem and podman-compose",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("SURGESCALE_DATA", REPO / "sim" / "data")),
        help="calibration tables and Karpenter CRDs for the image (named build contexts); "
        "default: $SURGESCALE_DATA, else sim/data (as docker-compose.yml)",
    )
    parser.add_argument("--load-seconds", type=int, default=25, help="length of the compose load")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start from nothing: remove the check's images and cached root filesystem first",
    )
    return parser.parse_args(argv)


def _fresh(engine: engine_mod.Engine, cache: Path) -> None:
    """Forget what earlier runs left: the check's images and the cached root filesystem (the
    builds then also run with --no-cache)."""
    for image in (
        images.SURGESCALE_IMAGE,
        images.KUBECTL_IMAGE,
        images.REDIS_IMAGE,
        images.BASE_IMAGE,
    ):
        run([engine.podman, "rmi", "-f", image], step="fresh", timeout=120, check=False)
    run([engine.podman, "image", "prune", "-f"], step="fresh", timeout=120, check=False)
    (cache / f"debian-python-{images.RELEASE}.tar").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_signal)
    start = time.monotonic()
    timings = Timings()
    result: dict[str, Any] = {"ok": False}
    stack: Stack | None = None
    code = 1
    with contextlib.ExitStack() as scope:
        tmp = scope.enter_context(tempfile.TemporaryDirectory(prefix="compose-check-"))
        try:
            scope.enter_context(exclusive(args.cache / "lock", wait_s=1200))
            with timings.step("engine"):
                engine = engine_mod.prepare(cache=args.cache)
            if args.fresh:
                _fresh(engine, args.cache)
            with timings.step("images"):
                built = images.build_all(
                    engine,
                    repo=REPO,
                    cache=args.cache,
                    data=args.data,
                    no_cache=args.fresh,
                )
            compose_file = REPO / "docker-compose.yml"
            compose = load_compose(compose_file)
            the_plan = plan(compose)
            override = Path(tmp) / "compose-check.override.yml"
            write_override(compose, the_plan, override, load_s=args.load_seconds)
            stack = Stack(
                engine=engine,
                compose_file=compose_file,
                override=override,
                env={
                    "REDIS_IMAGE": images.REDIS_IMAGE,
                    "KUBECTL_IMAGE": images.KUBECTL_IMAGE,
                    "SURGESCALE_IMAGE": images.SURGESCALE_IMAGE,
                    "SURGESCALE_DATA": str(args.data),
                },
                plan=the_plan,
            )
            with timings.step("clean leftovers"):
                stack.down()
            with timings.step("compose up and load"):
                figures, scale = stack.up(load_bound_s=args.load_seconds + 180)
            requests = int(figures["requests"])
            failed = requests - int(figures["ok"])
            result.update(
                images_built=built.count,
                images=built.images,
                image_s=built.seconds,
                image_mb=round(images.image_size(engine, images.SURGESCALE_IMAGE) / 1e6),
                requests=requests,
                failed=failed,
                statuses=figures["statuses"],
                initial_replicas=scale.initial_replicas,
                max_replicas=scale.max_replicas,
                max_ready_replicas=scale.max_ready,
                max_nodes=scale.max_nodes,
                slo_attainment=figures["slo_attainment"],
                ttft_p99_ms=figures.get("ttft_p99_ms"),
            )
            if scale.initial_replicas is None or scale.max_replicas <= scale.initial_replicas:
                raise CheckError(
                    "scale-up",
                    f"the controller did not scale {the_plan.deployment} up under the load "
                    f"(replicas {scale.initial_replicas} -> max {scale.max_replicas}; "
                    f"{scale.errors[-1:]}); controller's last log lines:\n"
                    + stack.logs("controller"),
                )
            if requests == 0 or failed:
                raise CheckError("load", f"{failed} of {requests} requests failed: {figures}")
            code = 0
        except (CheckError, Stopped) as exc:
            step = exc.step if isinstance(exc, CheckError) else "stopped"
            result["failed_step"] = step
            say(f"FAILED at {exc}")
        finally:
            # Teardown is bounded (its commands time out) and must not be cut short by a second
            # signal.
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            if stack is not None:
                with timings.step("teardown"):
                    left = stack.down()
                if left:
                    say(f"teardown left {left}")
                    result["leftovers"] = left
                    code = 1
    result["ok"] = code == 0
    result["timings_s"] = timings.steps
    if stack is not None:
        result["levels_s"] = stack.ready_s
    result["seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(result), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
