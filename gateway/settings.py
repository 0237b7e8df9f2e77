"""Gateway configuration: one pydantic-settings class, read from flags, env and a YAML file.

Precedence, highest first: values passed in (the command line), environment variables
`SURGESCALE_GATEWAY_<FIELD>` (lists and nested objects as JSON), the YAML file named by
`--config` / `SURGESCALE_GATEWAY_CONFIG`, then the defaults here. Validation happens once, here;
an error names the bad field. The rest of the gateway reads the frozen result.

Pods come either from `static_pods` (local runs) or from EndpointSlices watched through the
Kubernetes API (`models[*].service` or `.label_selector`, plus `kubeconfig`/`in_cluster`).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    SettingsConfigDict,
)

from gateway.dispatch import DispatchOrder, DispatchPolicy
from surgescale.settings import LogLevel, load
from surgescale.slo import Slo

ENV_PREFIX = "SURGESCALE_GATEWAY_"


class StaticPod(BaseModel):
    """One pod given by hand: the model it serves and its base URL."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    """Served model name, as clients put it in the request's `model`."""
    url: str = Field(pattern=r"^https?://[^/]+$")
    """Base URL of the pod, e.g. `http://127.0.0.1:8000` (no path)."""

    @classmethod
    def parse(cls, text: str) -> StaticPod:
        """`MODEL=URL`, the command-line form."""
        model, sep, url = text.partition("=")
        if not sep:
            raise ValueError(f"static pod {text!r} must look like MODEL=URL")
        return cls(model=model.strip(), url=url.strip().rstrip("/"))


class ModelRoute(BaseModel):
    """A model the gateway routes to, and where its pods are found in Kubernetes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    """Model name clients ask for."""
    service: str | None = None
    """Service whose EndpointSlices list the pods (label `kubernetes.io/service-name`)."""
    label_selector: str | None = None
    """Alternative to `service`: a label selector for the EndpointSlices."""
    namespace: str | None = None
    """Namespace of the EndpointSlices (default: the gateway's `namespace`)."""
    port_name: str | None = None
    """Which EndpointSlice port to use (default: the first one)."""
    pod_concurrency: int | None = Field(default=None, ge=1)
    """Per-pod concurrency cap for this model (default: the gateway's `pod_concurrency`)."""

    def selector(self) -> str | None:
        if self.label_selector:
            return self.label_selector
        if self.service:
            return f"kubernetes.io/service-name={self.service}"
        return None


class ModelSlo(BaseModel):
    """A model's TTFT objective (`surgescale.slo.Slo`) and how its queue hands out slots
    (`gateway.dispatch.DispatchPolicy`). Negative or non-finite values are refused, naming the field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttft_base_s: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    """TTFT allowed to every request, seconds: the deadline is arrival + this + the allowance."""
    ttft_per_input_token_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """Extra TTFT per prompt token (estimated from the body), e.g. 0.0002 = 0.2 s per 1,000."""
    tpot_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """Mean time per output token objective (None: none); reported, not used for dispatch."""
    dispatch: DispatchOrder = DispatchOrder.DEADLINE
    """`deadline`: requests that can still meet their deadline first, then late ones (FIFO in
    each); `fifo`: arrival order."""
    first_token_s: float = Field(default=0.1, ge=0, allow_inf_nan=False)
    """Expected time from dispatch to the first token: a request that cannot be dispatched by
    `deadline - first_token_s` counts as late."""
    late_max_wait_s: float = Field(default=30.0, ge=0, allow_inf_nan=False)
    """Bound on a late request's wait: once it has waited this long it goes before every newer
    request (no starvation). Keep it below `max_queue_wait_s`."""
    prefill_limit: int | None = Field(default=None, ge=0)
    """The prefill gate: a pod takes a new request only while fewer than this many of the
    streams this gateway sent it await their first token (None or 0: no gate). A prompt's
    prefill stalls every decode on its pod; this keeps prompts from piling up there and waits
    in the gateway's deadline-ordered queue instead (`gateway.admission`). Off by default: on
    the evaluator's matrix 1 helps TTFT but, with the controller's prefill-stall capacity rule,
    costs 70B code 1x attainment (docs/gateway.md, "The prefill gate")."""

    def objective(self) -> Slo:
        """The `Slo` of this model (validated by `Slo.checked`)."""
        return Slo.checked(
            ttft_base_s=self.ttft_base_s,
            ttft_per_input_token_s=self.ttft_per_input_token_s,
            tpot_s=self.tpot_s,
        )

    def policy(self) -> DispatchPolicy:
        """The dispatch policy of this model (validated by `DispatchPolicy.checked`)."""
        return DispatchPolicy.checked(
            order=self.dispatch,
            first_token_s=self.first_token_s,
            late_max_wait_s=self.late_max_wait_s,
            prefill_limit=self.prefill_limit,
        )


class RequestLimits(BaseModel):
    """Bounds on what one request may ask a model for (None: the gateway-wide default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_n: int | None = Field(default=None, ge=1)
    """Largest `n` (number of choices)."""
    max_output_tokens: int | None = Field(default=None, ge=1)
    """Largest `max_tokens` / `max_completion_tokens`."""


class GatewaySettings(BaseSettings):
    """Everything the gateway can be told. Field docstrings are the reference."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, validate_default=True
    )

    # --- server
    host: str = "127.0.0.1"
    """Address to listen on (use 0.0.0.0 in a container)."""
    port: int = Field(default=8080, ge=0, le=65535)
    """Port to listen on (0 = any free port; not allowed with more than one worker)."""
    workers: int = Field(default=1, ge=1, le=64)
    """Worker processes sharing the port through SO_REUSEPORT."""
    gateway_id: str = ""
    """Instance id in events (default: hostname-pid; workers add `-w<N>`)."""
    log_level: LogLevel = "INFO"

    # --- routing and pods
    models: list[ModelRoute] = Field(default_factory=list)
    """Models routed through EndpointSlice discovery."""
    static_pods: list[StaticPod] = Field(default_factory=list)
    """Pods given by hand (`MODEL=URL` on the command line)."""
    pod_concurrency: int = Field(default=256, ge=1)
    """Requests one pod may have outstanding at once (its slot count). Set it to the engine's
    `--max-num-seqs` (vLLM's default is 256): what a pod actually runs at once. Less leaves
    capacity idle; more lets requests queue inside the engine, where the gateway can no longer
    order them by deadline. Reported per model in `snapshot` events as `pod_cap`."""
    health_interval_s: float = Field(default=0.5, gt=0)
    """How often static pods are probed on `health_path` (they get work only when healthy)."""
    health_path: str = "/health"
    kubeconfig: str | None = None
    """Kubeconfig for EndpointSlice discovery (None: in-cluster config when `models` is set)."""
    namespace: str = "default"
    """Default namespace of the models' EndpointSlices."""

    # --- admission
    max_queue_length: int = Field(default=1024, ge=0)
    """Queued requests per model beyond which new ones get 429."""
    max_queue_wait_s: float = Field(default=120.0, gt=0)
    """Longest a request waits for a slot (incl. at zero pods) before it gets 503."""
    retry_after_s: int = Field(default=1, ge=0)
    """`Retry-After` sent with 429 and 503."""
    fairness: bool = False
    """Serve API keys round-robin and share a full queue fairly among them."""
    per_key_concurrency: int | None = Field(default=None, ge=1)
    """Most requests one API key may have in flight at once (None: no limit)."""

    # --- upstream
    connect_timeout_s: float = Field(default=2.0, gt=0)
    first_byte_timeout_s: float = Field(default=600.0, gt=0)
    """Longest wait for the response head from a pod."""
    idle_timeout_s: float = Field(default=300.0, gt=0)
    """Longest silence between two chunks of a stream."""
    retries: int = Field(default=1, ge=0, le=5)
    """Extra attempts on another pod after a connect error or a 5xx before the first byte."""
    upstream_api_key: SecretStr | None = None
    """Bearer key sent to the pods (vLLM started with --api-key); clients' keys never are."""
    request_usage: bool = True
    """Ask pods for the usage chunk in streams (stripped again if the client did not ask)."""

    # --- safety
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_header_bytes: int = Field(default=8190, ge=1024)
    """Longest request line / header field accepted."""
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """Bearer keys accepted, comma-separated in the environment (SURGESCALE_GATEWAY_API_KEYS,
    from a Secret); empty: no authentication, refused at start unless
    `allow_unauthenticated`."""

    # --- hardening (client connections, request bounds, open access)
    allow_unauthenticated: bool = False
    """Serve with no `api_keys` (anyone may use the pods). Without it a gateway with no keys
    refuses to start."""
    keepalive_timeout_s: float = Field(default=75.0, gt=0)
    """A client connection must send a complete request head within this long of opening or
    of its previous response, else it is closed (idle and slow-header connections are shed).
    Keep it above the idle timeout of a load balancer in front (60 s on AWS ALB)."""
    body_timeout_s: float = Field(default=30.0, gt=0)
    """Longest time to receive a request body once its head arrived (then 408)."""
    max_connections: int = Field(default=8192, ge=1)
    """Open client connections per worker; beyond it new ones get a 503 and are closed."""
    max_n: int = Field(default=16, ge=1)
    """Largest `n` (choices per request) a request may ask for (per model: `request_limits`)."""
    max_output_tokens: int = Field(default=32768, ge=1)
    """Largest `max_tokens` / `max_completion_tokens` a request may ask for (per model:
    `request_limits`)."""
    request_limits: dict[str, RequestLimits] = Field(default_factory=dict)
    """Per-model overrides of `max_n` and `max_output_tokens`, keyed by model name."""

    # --- events
    redis_url: str | None = "redis://127.0.0.1:6379/0"
    """Where events go (None: events off)."""
    events_prefix: str = "surgescale"
    """Key prefix of the event streams."""
    snapshot_interval_ms: int = Field(default=100, ge=10)
    """Period of the `snapshot` event per model."""
    event_linger_ms: float = Field(default=5.0, ge=0, le=1000, allow_inf_nan=False)
    """How long events are held to go to Redis together (0: each at once): one write carries
    the events of all requests of that window, and it is put off while a request waits for its
    first byte (up to 4x this). An `enqueue` that has to wait for a slot, and a `reject`, go at
    once; other events reach the controller up to this much later (their timestamps are taken
    when they happen). `gateway.reporting`."""
    event_buffer_limit: int = Field(default=100_000, ge=100)
    """Events buffered while Redis is away; the oldest beyond it are dropped and counted."""
    otel: bool = False
    """OpenTelemetry traces and GenAI metrics (also on with SURGESCALE_OTEL=1; exporters from the
    standard OTEL_* variables; needs the `otel` extra): gateway.telemetry, docs/observability.md."""

    # --- shared pod capacity (several workers and replicas; `gateway.shares`)
    capacity_sharing: bool = True
    """Share each pod's `pod_concurrency` slots among all gateway instances (workers and
    replicas) through grants in Redis (`redis_url`), so together they never send a pod more
    than its cap. Off: each instance uses the whole cap (right for one single-worker gateway)."""
    capacity_sync_interval_ms: int = Field(default=50, ge=5, le=10_000)
    """How often an instance renews its lease and re-balances its grants (off the request path)."""
    capacity_lease_s: float = Field(default=2.0, gt=0, le=300, allow_inf_nan=False)
    """An instance that has not synced for this long counts as gone: its grants are reclaimed.
    An instance that cannot reach Redis for half of it falls back to the safe share."""
    capacity_fallback_instances: int | None = Field(default=None, ge=1)
    """Instances assumed for the safe share `max(1, cap // n)` while Redis has never been reached
    (None: this replica's `workers`). Set it to workers x replicas."""
    capacity_fallback_hold_s: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    """On losing Redis, the safe share is not above the last grant for this long (requests
    sent under the old grants finish first)."""

    # --- SLO and dispatch
    slo: ModelSlo = Field(default_factory=ModelSlo)
    """Every model's TTFT objective and dispatch order, unless `model_slos` names the model."""
    model_slos: dict[str, ModelSlo] = Field(default_factory=dict)
    """Per-model objective and dispatch order (model name -> settings; replaces `slo` whole)."""
    keepalive_interval_s: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    """A streaming request waiting in the queue gets an SSE comment (`: keep-alive`) this often,
    so proxies and clients do not time out while capacity boots (0: off). The response head
    (200, text/event-stream) goes out with the first one; a later failure is an SSE error event."""

    # --- ops
    drain_timeout_s: float = Field(default=30.0, ge=0)
    """On SIGTERM: how long in-flight and queued requests get to finish."""

    @field_validator("static_pods", mode="before")
    @classmethod
    def _parse_static(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [StaticPod.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        schemes = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        if value is not None and not value.startswith(schemes):
            raise ValueError(
                "must be a redis://, rediss://, unix:// or (Redis Cluster) redis+cluster:// "
                f"URL, got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> GatewaySettings:
        if self.workers > 1 and self.port == 0:
            raise ValueError("port: a fixed port is needed with more than one worker")
        for route in self.models:
            if route.selector() is None:
                raise ValueError(f"models: {route.name!r} needs a service or a label_selector")
        names = [m.name for m in self.models]
        if len(names) != len(set(names)):
            raise ValueError("models: each model name may appear once")
        for where, slo in [("slo", self.slo)] + [
            (f"model_slos.{name}", v) for name, v in self.model_slos.items()
        ]:
            try:
                slo.objective()
                slo.policy()
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        return self

    def open_access_refusal(self) -> str | None:
        """Why this configuration must not start (no keys and no explicit opt-in), or None."""
        if self.api_keys or self.allow_unauthenticated:
            return None
        return (
            "api_keys: no API keys are configured; set SURGESCALE_GATEWAY_API_KEYS (e.g. from "
            "a Secret) or, to serve without authentication on purpose, pass "
            "--allow-unauthenticated (SURGESCALE_GATEWAY_ALLOW_UNAUTHENTICATED=true)"
        )

    def limits_for(self, model: str) -> tuple[int, int]:
        """(max n, max output tokens) for requests to `model`."""
        own = self.request_limits.get(model)
        max_n = own.max_n if own is not None and own.max_n is not None else self.max_n
        if own is not None and own.max_output_tokens is not None:
            return max_n, own.max_output_tokens
        return max_n, self.max_output_tokens

    def instance_id(self, worker: int | None = None) -> str:
        """The id this gateway puts in its events."""
        base = self.gateway_id or f"{socket.gethostname()}-{os.getpid()}"
        return base if worker is None else f"{base}-w{worker}"

    def model_names(self) -> list[str]:
        """Every model this gateway routes to, in configuration order."""
        out: list[str] = []
        for name in [m.name for m in self.models] + [p.model for p in self.static_pods]:
            if name not in out:
                out.append(name)
        return out

    def route(self, model: str) -> ModelRoute | None:
        for route in self.models:
            if route.name == model:
                return route
        return None

    def slo_for(self, model: str) -> ModelSlo:
        """The objective and dispatch settings of `model`."""
        return self.model_slos.get(model, self.slo)

    def cap_for(self, model: str) -> int:
        route = self.route(model)
        if route is not None and route.pod_concurrency is not None:
            return route.pod_concurrency
        return self.pod_concurrency


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> GatewaySettings:
    """Settings from `overrides` > env > the YAML `config_file` > defaults.

    `config_file` defaults to `$SURGESCALE_GATEWAY_CONFIG`. Raises pydantic's ValidationError
    (which names the field) or FileNotFoundError.
    """
    return load(
        GatewaySettings, config_file, env_var=f"{ENV_PREFIX}CONFIG", what="gateway", **overrides
    )
