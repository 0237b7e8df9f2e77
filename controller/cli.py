"""`surgescale controller`: run the autoscaling controller until SIGINT/SIGTERM.

Settings come from flags, else environment variables `SURGESCALE_CONTROLLER_<NAME>` (validated
once by pydantic-settings; a bad value names its field), else the defaults below. Without
`--kubeconfig` the in-cluster service account is used. Shutdown is bounded: pending scale writes
get a moment, the Lease is released (a standby takes over at once), then everything stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from controller import telemetry
from controller.loop import Controller, ControllerConfig
from controller.state import StateSettings

log = logging.getLogger("controller")


class ControllerSettings(BaseSettings):
    """The controller's configuration (env prefix SURGESCALE_CONTROLLER_)."""

    model_config = SettingsConfigDict(
        env_prefix="SURGESCALE_CONTROLLER_", extra="ignore", use_attribute_docstrings=True
    )

    kubeconfig: str | None = None
    """Path of a kubeconfig; None = in-cluster config."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Where the gateway's event streams are."""
    namespace: str | None = None
    """Watch InferenceScalers in this namespace only (default: all namespaces)."""
    stream_prefix: str = "surgescale"
    """Key prefix of the event streams (must match the gateway's)."""
    identity: str = Field(
        default_factory=lambda: (
            os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        )
    )
    """Leader-election identity and consumer name (the pod name in a cluster)."""
    lease_name: str = "surgescale-controller"
    lease_namespace: str = Field(default_factory=lambda: os.environ.get("POD_NAMESPACE", "default"))
    lease_duration_s: float = Field(3.0, gt=0)
    """Seconds a Lease stays valid without renewal (a standby waits this long after a crash;
    with the default retry a takeover takes at most duration + 2 x retry = 4 s)."""
    lease_retry_s: float = Field(0.5, gt=0)
    """Seconds between Lease renewals / acquisition attempts; the leader's writes stop
    `duration - retry` after its last successful renewal began (the renew deadline)."""
    shards: int = Field(1, ge=1, le=1024)
    """Shard Leases the models are split into among the controller replicas (each replica
    takes about shards / replicas of them; a lost replica's shards are taken over like a lost
    leader's Lease). 1 = one leader drives every model, the others stand by."""
    min_eval_interval_s: float = Field(0.05, ge=0)
    """Rate limit of event-driven evaluations per InferenceScaler; the first of a burst and any
    batch that grows the queue are evaluated at once."""
    max_evals_per_s: float = Field(1000.0, gt=0)
    """Budget of non-urgent evaluations a second over all models (each model's interval is
    stretched to keep under it when there are many; a growing queue is evaluated at once)."""
    max_status_writes_per_s: float = Field(100.0, gt=0)
    """Budget of InferenceScaler status writes a second (with many models they take turns)."""
    tick_s: float = Field(1.0, gt=0)
    """Periodic evaluation (scale-down, idle, staleness)."""
    status_interval_s: float = Field(1.0, gt=0)
    """Status writes are throttled to one per interval per InferenceScaler."""
    http_host: str = "0.0.0.0"
    http_port: int = Field(8080, ge=0, le=65535)
    """Port of /metrics, /healthz and /readyz."""
    short_window_s: float = Field(2.0, gt=0)
    long_window_s: float = Field(60.0, gt=0)
    log_level: str = "INFO"
    otel: bool = False
    """OpenTelemetry decision spans (also SURGESCALE_OTEL=1; OTEL_* variables; `otel` extra)."""


def parse_args(argv: list[str]) -> ControllerSettings:
    parser = argparse.ArgumentParser(
        prog="surgescale controller", description="Run the surgescale autoscaling controller."
    )
    for name, info in ControllerSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, dest=name, default=None, help=info.description)
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None}
    try:
        return ControllerSettings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        parser.error(f"--{field.replace('_', '-')}: {first['msg']}")
        raise  # unreachable: parser.error exits


def to_config(settings: ControllerSettings) -> ControllerConfig:
    return ControllerConfig(
        redis_url=settings.redis_url,
        kubeconfig=settings.kubeconfig,
        namespace=settings.namespace,
        stream_prefix=settings.stream_prefix,
        identity=settings.identity,
        lease_name=settings.lease_name,
        lease_namespace=settings.lease_namespace,
        lease_duration_s=settings.lease_duration_s,
        lease_retry_s=settings.lease_retry_s,
        shards=settings.shards,
        min_eval_interval_s=settings.min_eval_interval_s,
        max_evals_per_s=settings.max_evals_per_s,
        max_status_writes_per_s=settings.max_status_writes_per_s,
        tick_s=settings.tick_s,
        status_interval_s=settings.status_interval_s,
        http_host=settings.http_host,
        http_port=settings.http_port,
        state=StateSettings(
            short_window_s=settings.short_window_s, long_window_s=settings.long_window_s
        ),
    )


async def run(config: ControllerConfig, *, otel: bool = False) -> int:
    ctl = Controller(config)
    ctl.telemetry = telemetry.from_env(otel)  # None unless on (controller.telemetry)
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
    try:
        await stop.wait()
    finally:
        await ctl.stop()
        if ctl.telemetry is not None:
            ctl.telemetry.close()
    return 0


def main(argv: list[str]) -> int:
    settings = parse_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    config = to_config(settings)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(run(config, otel=settings.otel))
    return uvloop.run(run(config, otel=settings.otel))
