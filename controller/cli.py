"""`surgescale controller`: run the autoscaling controller until SIGINT/SIGTERM.

Settings (`controller.config.ControllerConfig`) come from flags, else environment variables
`SURGESCALE_CONTROLLER_<NAME>`, else the YAML file of `--config` / `SURGESCALE_CONTROLLER_CONFIG`,
else the defaults; validated once (a bad value names its flag). Every field has a flag, made from
its name (`lease_duration_s` -> `--lease-duration-s`), its help from the field's docstring.
Without `--kubeconfig` the in-cluster service account is used. Shutdown is bounded: pending
scale writes get a moment, the Lease is released (a standby takes over at once), then
everything stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys

from pydantic import ValidationError

from controller import gcpause, telemetry
from controller.config import ENV_PREFIX, ControllerConfig, load_config
from controller.loop import Controller

log = logging.getLogger("controller")


def parse_args(argv: list[str]) -> ControllerConfig:
    """The configuration from the command line (over env, the file and the defaults)."""
    parser = argparse.ArgumentParser(
        prog="surgescale controller", description="Run the surgescale autoscaling controller."
    )
    parser.add_argument(
        "--config", help=f"YAML file with settings (env: {ENV_PREFIX}CONFIG), keys as below"
    )
    for name, info in ControllerConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, dest=name, default=None, help=info.description)
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    try:
        return load_config(args.config, **given)
    except FileNotFoundError as exc:
        parser.error(f"--config: {exc}")
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        parser.error(f"--{field.replace('_', '-')}: {message}" if field else message)
    raise AssertionError("unreachable: parser.error exits")


async def run(config: ControllerConfig) -> int:
    ctl = Controller(config)
    ctl.telemetry = telemetry.from_env(config.otel)  # None unless on (controller.telemetry)
    # Long-lived objects (modules, clients) leave the collector's view: full collections stay
    # short, so they do not stall event handling.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await ctl.start()
    log.info(
        "controller %s started (metrics on %s:%s)", config.identity, config.http_host, ctl.http_port
    )
    # Process-wide, so here and not in `Controller` (tests run several in one process).
    collector = asyncio.create_task(
        gcpause.run(config.gc_freeze_interval_s, config.gc_full_collect_interval_s)
    )
    try:
        await stop.wait()
    finally:
        collector.cancel()
        await ctl.stop()
        if ctl.telemetry is not None:
            ctl.telemetry.close()
    return 0


def main(argv: list[str]) -> int:
    config = parse_args(argv)
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(run(config))
    return uvloop.run(run(config))
