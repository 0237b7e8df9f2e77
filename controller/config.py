"""The controller's settings: everything one controller instance needs (`ControllerConfig`).

The CLI (`controller.cli`) builds it from flags and environment; tests and the simulated cluster
build it directly. Plain data, no behaviour.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from controller.state import StateSettings


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerConfig:
    """Everything a controller instance needs (the CLI builds it from flags and env)."""

    redis_url: str
    kubeconfig: str | None = None
    namespace: str | None = None
    """Watch InferenceScalers in this namespace only; None = all namespaces."""
    stream_prefix: str = "surgescale"
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    group_prefix: str = "surgescale-controller"
    lease_name: str = "surgescale-controller"
    lease_namespace: str = "default"
    lease_duration_s: float = 3.0
    lease_retry_s: float = 0.5
    shards: int = 1
    """Shard Leases the models are split into among the replicas (1: one leader, standbys)."""
    min_eval_interval_s: float = 0.05
    max_evals_per_s: float = 1_000.0
    """Budget of non-urgent evaluations over all models: with many models each one's
    interval is stretched to keep under it (`controller.fleet`); urgent ones are not limited."""
    max_status_writes_per_s: float = 100.0
    """Budget of InferenceScaler status writes: with many models they take turns."""
    tick_s: float = 1.0
    status_interval_s: float = 1.0
    http_host: str = "127.0.0.1"
    http_port: int | None = 0
    """None = no ops HTTP server."""
    consumer_block_ms: int = 50
    consumer_count: int = 100
    """Stream entries per read (each holds a producer batch of events): smaller reads keep a
    trigger from waiting behind a huge batch when the controller is catching up."""
    ingest_chunk: int = 512
    """Events folded in before urgent models are re-checked, within one batch."""
    ack_interval_s: float = 0.05
    """Acks are grouped: at most one XACK round per interval."""
    stale_group_idle_s: float = 600.0
    """Other controllers' consumer groups with no reads for this long are removed."""
    state: StateSettings = field(default_factory=StateSettings)
