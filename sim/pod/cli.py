"""`surgescale sim pod`: run one simulated vLLM pod until SIGINT/SIGTERM.

Options map onto `sim.pod.runtime.PodOptions` (engine knobs, cold start, faults at start); run
time faults go through `POST /admin/faults`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from sim.engine import PROFILE_NAMES, CalibrationError
from sim.pod.faults import Faults
from sim.pod.runtime import PodOptions, start_pod

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="surgescale sim pod", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (0 = any free port)")
    p.add_argument("--model", required=True, help="served model name, e.g. llama3-8b")
    p.add_argument("--profile", default="llama3-8b-h200", choices=PROFILE_NAMES)
    p.add_argument(
        "--load-seconds", type=float, default=0.0, help="cold start before /health is 200"
    )
    p.add_argument(
        "--max-num-seqs", type=int, default=None, help="batch seats (profile default 256)"
    )
    p.add_argument("--max-num-batched-tokens", type=int, default=None, help="token budget per step")
    p.add_argument("--num-kv-blocks", type=int, default=None, help="override the KV-cache size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--error-rate", type=float, default=0.0, help="fault: fraction answered 500")
    p.add_argument("--slowdown", type=float, default=1.0, help="fault: step-time multiplier")
    p.add_argument("--hang", action="store_true", help="fault: start frozen")
    p.add_argument("--grace", type=float, default=5.0, help="seconds in-flight work gets on stop")
    p.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop (default uvloop)",
    )
    return p


async def _serve(args: argparse.Namespace) -> int:
    options = PodOptions(
        model=args.model,
        profile=args.profile,
        load_seconds=args.load_seconds,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        num_kv_blocks=args.num_kv_blocks,
        seed=args.seed,
        faults=Faults(error_rate=args.error_rate, slowdown=args.slowdown, hang=args.hang),
    )
    pod = await start_pod(options, host=args.host, port=args.port)
    print(f"simulated vLLM pod {args.model} ({args.profile}) at {pod.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await pod.stop(grace_seconds=args.grace)
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        Faults(error_rate=args.error_rate, slowdown=args.slowdown)
    except ValueError as exc:
        print(f"surgescale sim pod: {exc}")
        return 2
    run = asyncio.run
    if args.loop == "uvloop":
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            pass
    try:
        return run(_serve(args))
    except CalibrationError as exc:
        print(f"surgescale sim pod: {exc}")
        return 2
    except OSError as exc:
        print(f"surgescale sim pod: cannot listen on {args.host}:{args.port}: {exc}")
        return 1
