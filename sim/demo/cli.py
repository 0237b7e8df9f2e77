"""`surgescale demo`: the whole loop on this machine in one command, with a live view and a report.

    surgescale demo [--speed X] [--duration S] [--trace FILE] [--redis-url URL]
                    [--kubeconfig PATH] [--compare keda] [--compare fifo] [--out DIR]
                    [--no-live]

Starts a Redis (found or private), the simulated cluster with a GPU NodePool, the gateway, the
controller and the load (see `sim.demo.stack`), plays quiet -> burst -> decay -> quiet, shows the
loop live, stops everything and writes `DIR/report.html` (plots and summary), whose path it prints
last. `--compare keda` runs the same scenario again under a KEDA + Prometheus + HPA loop and puts
both side by side; `--compare fifo` runs ours again with the gateway's FIFO dispatch (the gain of
the deadline order alone). Ctrl-C stops everything cleanly (exit status 130).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import signal
import sys

from rich.console import Console

from sim.demo.procs import StartError
from sim.demo.run import add_options, build_config, finish, run_all
from sim.demo.stack import Arm
from sim.localredis.server import RedisUnavailableError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="surgescale demo",
        description="Run the closed loop (gateway, controller, simulated cluster and pods, load) "
        "on loopback with a live view, then write an HTML report.",
    )
    add_options(p)
    p.add_argument(
        "--compare",
        choices=["keda", "fifo"],
        action="append",
        default=[],
        help="run the scenario again under a KEDA + Prometheus + HPA loop (keda) or with the "
        "gateway's FIFO dispatch (fifo); repeatable",
    )
    p.add_argument("--no-live", action="store_true", help="log lines instead of the live view")
    p.add_argument("--log-level", default="WARNING")
    return p


_RECANCEL_S = 3.0
"""How often a stop signal's cancellation is repeated until the run has ended."""


def _stop_on_signals(task: asyncio.Task[int], received: list[signal.Signals]) -> None:
    """Cancel `task` on SIGINT or SIGTERM, and again every `_RECANCEL_S` until it is done: a
    cancellation that lands in a clean-up step that absorbs it (a library's own handling of a
    cancelled read) must not leave the demo running."""
    loop = asyncio.get_running_loop()

    def cancel() -> None:
        if not task.done():
            task.cancel()
            loop.call_later(_RECANCEL_S, cancel)

    def on_signal(sig: signal.Signals) -> None:
        if not received:
            received.append(sig)
            cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)


async def _main(args: argparse.Namespace, console: Console, received: list[signal.Signals]) -> int:
    task = asyncio.current_task()
    if task is not None:
        _stop_on_signals(task, received)
    config = build_config(args, live=not args.no_live)
    arms = [Arm.OURS]
    arms += [Arm.KEDA] if "keda" in args.compare else []
    arms += [Arm.OURS_FIFO] if "fifo" in args.compare else []
    records = await run_all(config, arms, redis_url=args.redis_url, console=console)
    page = finish(records, config.work_dir, console)
    console.print(f"report: {page.resolve()}")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` dumps the stacks
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    console = Console()
    received: list[signal.Signals] = []
    try:
        return asyncio.run(_main(args, console, received))
    except (KeyboardInterrupt, asyncio.CancelledError):
        if received == [signal.SIGTERM]:
            console.print("terminated: every process of the demo was stopped.")
            return 143
        console.print("interrupted: every process of the demo was stopped.")
        return 130
    except (StartError, RedisUnavailableError) as exc:
        console.print(f"[red]demo failed:[/red] {exc}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
