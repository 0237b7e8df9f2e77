"""`surgescale keda-scaler`: serve the queue signal to KEDA as an external (push) scaler.

Flags, else environment variables `SURGESCALE_KEDA_<NAME>`: `--model` (repeatable, or a
comma-separated `SURGESCALE_KEDA_MODELS`) names the models served, `--redis-url` and
`--stream-prefix` where the gateway's events are, `--listen` the gRPC address. Runs until
SIGINT/SIGTERM; its consumer group is removed on the way out. Needs the `keda` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

log = logging.getLogger("controller.keda")

ENV = "SURGESCALE_KEDA_"


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="surgescale keda-scaler",
        description="KEDA external scaler (externalscaler.ExternalScaler, push) serving "
        "surgescale's per-model queue signal from the gateway's event streams.",
    )
    models = [m for m in env(ENV + "MODELS", "").split(",") if m.strip()]
    p.add_argument(
        "--model",
        action="append",
        dest="models",
        default=None,
        help="a model served (repeatable; env SURGESCALE_KEDA_MODELS=a,b)",
    )
    p.add_argument("--redis-url", default=env(ENV + "REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--stream-prefix", default=env(ENV + "STREAM_PREFIX", "surgescale"))
    p.add_argument("--listen", default=env(ENV + "LISTEN", "0.0.0.0:9090"), help="gRPC host:port")
    p.add_argument(
        "--identity",
        default=env("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
        help="consumer group suffix (default: the pod name, else host-pid)",
    )
    p.add_argument("--log-level", default=env(ENV + "LOG_LEVEL", "INFO"))
    p.set_defaults(env_models=[m.strip() for m in models])
    return p


async def run(args: argparse.Namespace) -> int:
    from controller.keda.scaler import QueueSignal, start_server
    from surgescale.events import StreamKeys, close, connect

    redis = connect(args.redis_url)
    qs = QueueSignal(
        redis, models=args.models, keys=StreamKeys(args.stream_prefix), identity=args.identity
    )
    reader = asyncio.create_task(qs.run(), name="keda-events")
    server, port = await start_server(qs, args.listen)
    log.info("KEDA external scaler on port %d for models %s", port, ", ".join(args.models))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait(
            [asyncio.create_task(stop.wait()), reader], return_when=asyncio.FIRST_COMPLETED
        )
        if reader.done() and reader.exception() is not None:
            log.error("event reader stopped: %r", reader.exception())
            return 1
    finally:
        try:  # bounded: a stuck call must not keep the pod from terminating
            await asyncio.wait_for(server.stop(grace=1.0), 5.0)
        except TimeoutError:
            log.warning("gRPC server did not stop within 5 s; exiting anyway")
        qs.stop()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(reader, 5.0)
        await qs.close()
        await close(redis)
    return 0


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.models = args.models or args.env_models
    if not args.models:
        parser.error("name at least one model: --model NAME (or SURGESCALE_KEDA_MODELS)")
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        import grpc  # noqa: F401
    except ImportError:
        print(
            "surgescale keda-scaler: grpcio is missing: pip install 'surgescale[keda]'",
            file=sys.stderr,
        )
        return 2
    return asyncio.run(run(args))
