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
from surgescale.events.localredis import RedisUnavailableError


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


async def _main(args: argparse.Namespace, console: Console) -> int:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
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
    try:
        return asyncio.run(_main(args, console))
    except KeyboardInterrupt:
        console.print("interrupted: every process of the demo was stopped.")
        return 130
    except asyncio.CancelledError:
        console.print("terminated: every process of the demo was stopped.")
        return 143
    except (StartError, RedisUnavailableError) as exc:
        console.print(f"[red]demo failed:[/red] {exc}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
