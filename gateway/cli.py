"""`surgescale gateway`: run the admission gateway from flags, env and a YAML file.

Flags override `SURGESCALE_GATEWAY_*` environment variables, which override the YAML file given
by `--config` (or `SURGESCALE_GATEWAY_CONFIG`); every setting is documented in
`gateway.settings` and in docs/gateway.md. A bad value exits with status 2 and names the field.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import ValidationError

from gateway.settings import GatewaySettings, ModelRoute, StaticPod, load_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="surgescale gateway",
        description="OpenAI-compatible admission gateway: queues requests per model, routes to "
        "ready vLLM pods, streams answers back and reports every milestone to Redis.",
    )
    p.add_argument("--config", help="YAML file with settings (env: SURGESCALE_GATEWAY_CONFIG)")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8080; 0 = any)")
    p.add_argument("--workers", type=int, help="worker processes sharing the port (SO_REUSEPORT)")
    p.add_argument("--gateway-id", help="instance id in events (default hostname-pid)")
    p.add_argument(
        "--static-pod",
        action="append",
        metavar="MODEL=URL",
        help="a pod serving MODEL at URL (repeatable)",
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="MODEL=SERVICE",
        help="route MODEL to the EndpointSlices of Service SERVICE (repeatable)",
    )
    p.add_argument("--kubeconfig", help="kubeconfig for EndpointSlice discovery (else in-cluster)")
    p.add_argument("--namespace", help="default namespace of the models' Services")
    p.add_argument(
        "--pod-concurrency",
        type=int,
        help="concurrency cap per pod: the engine's max_num_seqs (default 256)",
    )
    p.add_argument("--max-queue-length", type=int, help="queued requests per model before 429")
    p.add_argument(
        "--max-queue-wait", type=float, dest="max_queue_wait_s", help="seconds before 503"
    )
    p.add_argument("--retries", type=int, help="retries on another pod before the first byte")
    p.add_argument("--health-interval", type=float, dest="health_interval_s")
    p.add_argument("--redis-url", help="where events go; 'none' turns events off")
    p.add_argument("--events-prefix", help="key prefix of the event streams")
    p.add_argument("--snapshot-interval-ms", type=int, help="snapshot period (default 100)")
    p.add_argument("--api-key", action="append", dest="api_keys", help="accepted bearer key")
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        default=None,
        help="serve with no API keys (env: SURGESCALE_GATEWAY_ALLOW_UNAUTHENTICATED=true); "
        "without keys and without this flag the gateway refuses to start",
    )
    p.add_argument("--fairness", action="store_true", default=None, help="fair share across keys")
    p.add_argument("--per-key-concurrency", type=int, help="in-flight limit per API key")
    p.add_argument("--drain-timeout", type=float, dest="drain_timeout_s")
    slo = p.add_argument_group("SLO and dispatch (every model; per model: model_slos in YAML)")
    slo.add_argument("--ttft-slo", type=float, dest="slo.ttft_base_s", help="TTFT base, s")
    slo.add_argument(
        "--ttft-per-input-token",
        type=float,
        dest="slo.ttft_per_input_token_s",
        help="extra TTFT per prompt token, s",
    )
    slo.add_argument("--dispatch", choices=["deadline", "fifo"], dest="slo.dispatch")
    slo.add_argument(
        "--first-token-estimate",
        type=float,
        dest="slo.first_token_s",
        help="expected dispatch-to-first-token time, s",
    )
    slo.add_argument(
        "--late-max-wait", type=float, dest="slo.late_max_wait_s", help="late requests' wait bound"
    )
    slo.add_argument(
        "--prefill-limit",
        type=int,
        dest="slo.prefill_limit",
        help="requests per pod awaiting their first token before it takes no more (0 = no gate)",
    )
    p.add_argument(
        "--keepalive-interval",
        type=float,
        dest="keepalive_interval_s",
        help="SSE keep-alive period for queued streams (0 = off)",
    )
    p.add_argument("--log-level")
    return p


def settings_from_args(argv: list[str]) -> Any:
    args = _parser().parse_args(argv)
    values = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    if "static_pod" in values:
        values["static_pods"] = [StaticPod.parse(v) for v in values.pop("static_pod")]
    if "model" in values:
        routes = []
        for text in values.pop("model"):
            name, sep, service = text.partition("=")
            if not sep:
                raise ValueError(f"--model {text!r} must look like MODEL=SERVICE")
            routes.append(ModelRoute(name=name, service=service))
        values["models"] = routes
    slo = {k.removeprefix("slo."): values.pop(k) for k in list(values) if k.startswith("slo.")}
    if str(values.get("redis_url", "")).lower() == "none":
        values["redis_url"] = None
    settings = load_settings(args.config, **values)
    if not slo:
        return settings
    # The SLO flags change the fields they name; the rest of `slo` comes from env / YAML.
    data = settings.model_dump()
    data["slo"] = {**data["slo"], **slo}
    return GatewaySettings.model_validate(data)


def main(argv: list[str]) -> int:
    try:
        settings = settings_from_args(argv)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        print(f"surgescale gateway: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    from gateway.server import run

    return run(settings)
