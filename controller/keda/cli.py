"""`surgescale keda-scaler`: serve the queue signal to KEDA as an external (push) scaler.

Its settings are one frozen object, `KedaSettings`: flags, else environment variables
`SURGESCALE_KEDA_<NAME>`, else the defaults (validated once; a bad value names its flag).
`--model` (repeatable, or a comma-separated `SURGESCALE_KEDA_MODELS`) names the models served,
`--redis-url` and `--stream-prefix` where the gateway's events are, `--listen` the gRPC address.
Runs until SIGINT/SIGTERM; its consumer group is removed on the way out. Needs the `keda` extra.
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
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from surgescale.cancel import wait_for
from surgescale.settings import LogLevel

log = logging.getLogger("controller.keda")

ENV = "SURGESCALE_KEDA_"


def _identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class KedaSettings(BaseSettings):
    """Everything `surgescale keda-scaler` can be told (env prefix SURGESCALE_KEDA_)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV, extra="forbid", frozen=True, use_attribute_docstrings=True
    )

    models: Annotated[list[str], NoDecode] = Field(min_length=1)
    """Models served (`--model`, repeatable; env SURGESCALE_KEDA_MODELS=a,b)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Where the gateway's event streams are."""
    stream_prefix: str = "surgescale"
    """Key prefix of the event streams (must match the gateway's)."""
    listen: str = Field("0.0.0.0:9090", pattern=r"^.+:\d+$")
    """gRPC host:port."""
    identity: str = Field(default_factory=_identity, min_length=1)
    """Consumer group suffix (default: the pod name, else host-pid)."""
    log_level: LogLevel = "INFO"

    @field_validator("models", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            return [m.strip() for m in value if isinstance(m, str) and m.strip()]
        return value

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


FLAGS = {"models": "--model"}
"""Fields whose flag is not their name with dashes."""


def parse_args(argv: list[str]) -> KedaSettings:
    """The settings from the command line (over env and the defaults)."""
    p = argparse.ArgumentParser(
        prog="surgescale keda-scaler",
        description="KEDA external scaler (externalscaler.ExternalScaler, push) serving "
        "surgescale's per-model queue signal from the gateway's event streams.",
    )
    for name, info in KedaSettings.model_fields.items():
        flag = FLAGS.get(name, "--" + name.replace("_", "-"))
        repeat = "append" if name == "models" else "store"
        p.add_argument(flag, dest=name, action=repeat, default=None, help=info.description)
    args = p.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None}
    try:
        return KedaSettings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        if name == "models" and first["type"] in ("missing", "too_short"):
            p.error("name at least one model: --model NAME (or SURGESCALE_KEDA_MODELS)")
        p.error(f"{FLAGS.get(name, '--' + name.replace('_', '-'))}: {first['msg']}")
    raise AssertionError("unreachable: parser.error exits")


async def run(args: KedaSettings) -> int:
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
            await wait_for(server.stop(grace=1.0), 5.0)
        except TimeoutError:
            log.warning("gRPC server did not stop within 5 s; exiting anyway")
        qs.stop()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await wait_for(reader, 5.0)
        await qs.close()
        await close(redis)
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
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
