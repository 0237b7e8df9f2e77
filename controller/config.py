"""Controller configuration: one frozen pydantic-settings class, read from flags, env and a YAML file.

Precedence, highest first: values passed in (the command line, `controller.cli`), environment
variables `SURGESCALE_CONTROLLER_<FIELD>`, the YAML file named by `--config` /
`SURGESCALE_CONTROLLER_CONFIG` (keys are the field names), then the defaults here. Validation
happens once, here; an error names the bad field. `Controller` (`controller.loop`) and everything
it wires read the frozen result; tests build one with keyword arguments (which also win over the
environment).

The defaults are those of a controller run in a cluster (`surgescale controller`): the ops server
on 0.0.0.0:8080, identity and Lease namespace from the pod (`POD_NAME`, `POD_NAMESPACE`). An
in-process controller next to others (tests, benchmarks) passes `http_port=0` (any free port) or
`None` (no ops server). docs/controller.md lists every field with its flag.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    SettingsConfigDict,
)

from controller.state import StateSettings
from surgescale.settings import LogLevel, load

ENV_PREFIX = "SURGESCALE_CONTROLLER_"


def _identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def _lease_namespace() -> str:
    return os.environ.get("POD_NAMESPACE") or "default"


class ControllerConfig(BaseSettings):
    """Everything a controller instance can be told. Field docstrings are the reference (and the
    `--help` of each flag)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        validate_default=True,
        use_attribute_docstrings=True,
    )

    # --- where things are
    kubeconfig: str | None = None
    """Path of a kubeconfig; None = the in-cluster service account."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Where the gateway's event streams are (`redis+cluster://` for a Redis Cluster)."""
    stream_prefix: str = "surgescale"
    """Key prefix of the event streams (must match the gateway's)."""
    namespace: str | None = None
    """Watch InferenceScalers (and their Deployments) in this namespace only; None = all."""

    # --- identity and leadership (controller.lease, controller.shards)
    identity: str = Field(default_factory=_identity, min_length=1)
    """Leader-election identity and consumer name (default: `$POD_NAME`, else host-pid)."""
    group_prefix: str = "surgescale-controller"
    """Prefix of this instance's consumer group (one group per instance)."""
    lease_name: str = "surgescale-controller"
    """The `coordination.k8s.io/v1` Lease (with shards: the prefix of the shard Leases)."""
    lease_namespace: str = Field(default_factory=_lease_namespace, min_length=1)
    """Namespace of the Lease (default: `$POD_NAMESPACE`, else `default`)."""
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

    # --- evaluation (controller.schedule, controller.fleet)
    min_eval_interval_s: float = Field(0.05, ge=0)
    """Rate limit of event-driven evaluations per InferenceScaler; the first of a burst and any
    batch that grows the queue are evaluated at once."""
    max_evals_per_s: float = Field(250.0, gt=0)
    """Budget of non-urgent evaluations a second over all models (each model's interval is
    stretched to keep under it when there are many: every 4 s at 1,000 models; a growing queue
    is evaluated at once). 1,000 took a third of a core at 1,000 models and doubled the reaction
    p99 of the urgent path (docs/scale-out.md, eighth round)."""
    tick_s: float = Field(1.0, gt=0)
    """Periodic evaluation (scale-down, idle, staleness)."""
    short_window_s: float = Field(2.0, gt=0)
    """Short arrival-rate window (seconds) of the per-model statistics."""
    long_window_s: float = Field(60.0, gt=0)
    """Long arrival-rate window (seconds): sustained demand, and how much of a stream a
    takeover replays."""

    # --- status (controller.report)
    status_interval_s: float = Field(1.0, gt=0)
    """Status writes are throttled to one per interval per InferenceScaler."""
    max_status_writes_per_s: float = Field(100.0, gt=0)
    """Budget of InferenceScaler status writes a second (with many models they take turns)."""

    # --- garbage collector (controller.gcpause; the `surgescale controller` process only)
    gc_freeze_interval_s: float = Field(1.0, ge=0)
    """Every this many seconds, move the objects alive now out of the garbage collector's view
    (`gc.freeze()`), so full collections stay a few ms instead of walking the whole state
    (0 = never; cycles that die while frozen wait for the full collection below)."""
    gc_full_collect_interval_s: float = Field(3600.0, ge=0)
    """Every this many seconds, unfreeze and collect everything (one pause of ~0.1-0.3 s at
    1,000 models) to reclaim cycles that died while frozen (0 = never)."""

    # --- event intake (surgescale.events consumer)
    consumer_block_ms: int = Field(50, ge=1)
    """Longest a stream read blocks waiting for new entries."""
    consumer_poll_ms: float = Field(0.0, ge=0)
    """Single Redis, > 0: while reads find entries, read again without BLOCK at most every this
    many ms (a blocking read of every model's stream costs Redis per stream named on each wake;
    docs/scale-out.md); 0: every read blocks until an entry comes."""
    consumer_notify: bool = True
    """Single Redis: read only the streams Redis's keyspace notifications say had entries added
    (stream flags are turned on with CONFIG SET; refused, every read names every stream as
    before), and every stream every `consumer_full_read_s` (`surgescale.events.notify`)."""
    consumer_full_read_s: float = Field(1.0, gt=0)
    """With notifications: how often a read names every stream anyway (lost notifications)."""
    consumer_count: int = Field(100, ge=1)
    """Stream entries per read (each holds a producer batch of events): smaller reads keep a
    trigger from waiting behind a huge batch when the controller is catching up."""
    ingest_chunk: int = Field(512, ge=1)
    """Events folded in before urgent models are re-checked, within one batch."""
    ack_interval_s: float = Field(0.05, ge=0)
    """Acks are grouped: at most one XACK round per interval."""
    stale_group_idle_s: float = Field(600.0, gt=0)
    """Other controllers' consumer groups with no reads for this long are removed."""

    # --- ops
    http_host: str = "0.0.0.0"
    """Address of the ops server."""
    http_port: int | None = Field(8080, ge=0, le=65535)
    """Port of /metrics, /healthz and /readyz (0: any free port; None: no ops server)."""
    log_level: LogLevel = "INFO"
    otel: bool = False
    """OpenTelemetry decision spans (also SURGESCALE_OTEL=1; OTEL_* variables; `otel` extra)."""

    @model_validator(mode="after")
    def _lease_timing(self) -> ControllerConfig:
        if self.lease_retry_s >= self.lease_duration_s:
            raise ValueError(
                f"lease_retry_s ({self.lease_retry_s}) must be below lease_duration_s "
                f"({self.lease_duration_s}): a leader's writes must stop (duration - retry after "
                "its last renewal began) before a standby may take the Lease over"
            )
        return self

    @property
    def state(self) -> StateSettings:
        """The per-model statistics' settings (`controller.state`): the windows above, the rest
        at their defaults."""
        return StateSettings(short_window_s=self.short_window_s, long_window_s=self.long_window_s)


def load_config(config_file: str | Path | None = None, **overrides: Any) -> ControllerConfig:
    """Settings from `overrides` > env > the YAML `config_file` > defaults.

    `config_file` defaults to `$SURGESCALE_CONTROLLER_CONFIG`. Raises pydantic's ValidationError
    (which names the field) or FileNotFoundError.
    """
    return load(
        ControllerConfig,
        config_file,
        env_var=f"{ENV_PREFIX}CONFIG",
        what="controller",
        **overrides,
    )
