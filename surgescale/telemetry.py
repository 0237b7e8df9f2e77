"""The OpenTelemetry switch and provider setup shared by the gateway and the controller.

Off by default. On with `SURGESCALE_OTEL=1` (or a part's own setting: the gateway's `otel`,
the controller's `--otel`). This module imports nothing from OpenTelemetry until `setup` runs,
so with telemetry off the packages are never loaded (they are the optional `otel` extra).

`setup(service)` builds a tracer and a meter provider from the standard `OTEL_*` environment
variables: `OTEL_SERVICE_NAME` (else `service`), `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` (`otlp`, `console` or `none`; default `otlp`),
`OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or `http/protobuf`, the default), and everything the OTLP
exporters read themselves (`OTEL_EXPORTER_OTLP_ENDPOINT`, `..._HEADERS`, `..._TIMEOUT`, the
per-signal variants, `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_BSP_*`). It never raises: packages
missing, or on with no exporter configured (no OTLP endpoint and no `OTEL_*_EXPORTER` named), is
one log line and `None`, and the part runs without telemetry.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

SWITCH = "SURGESCALE_OTEL"
_TRUE = {"1", "true", "yes", "on"}
_ENDPOINTS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


def requested(flag: bool = False) -> bool:
    """Whether telemetry is asked for: the part's own flag or `SURGESCALE_OTEL`."""
    return flag or os.environ.get(SWITCH, "").strip().lower() in _TRUE


@dataclass(frozen=True, slots=True)
class Providers:
    """The SDK providers a part records into; `shutdown()` flushes and stops their exporters."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider):
            try:
                provider.shutdown()
            except Exception as exc:  # an exporter that cannot flush must not fail a shutdown
                log.warning("OpenTelemetry shutdown: %r", exc)


def _exporters(signal: str) -> list[str]:
    names = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp")
    return [n.strip().lower() for n in names.split(",") if n.strip()]


def configured() -> bool:
    """An exporter is configured: an OTLP endpoint, or an exporter named explicitly."""
    return any(os.environ.get(v) for v in _ENDPOINTS) or any(
        os.environ.get(f"OTEL_{s}_EXPORTER") for s in ("TRACES", "METRICS")
    )


def setup(service: str) -> Providers | None:
    """Providers exporting as the `OTEL_*` variables say; None (logged once) if that cannot be."""
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            MetricExporter,
            MetricReader,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError as exc:
        log.warning(
            "OpenTelemetry was asked for but is not installed (%s): pip install 'surgescale[otel]'."
            " Continuing without telemetry.",
            exc,
        )
        return None
    if not configured():
        log.warning(
            "OpenTelemetry is on but no exporter is configured (set OTEL_EXPORTER_OTLP_ENDPOINT,"
            " or OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER=console). Continuing without"
            " telemetry."
        )
        return None
    grpc = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").strip() == "grpc"
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or service})
    try:
        tracer_provider = TracerProvider(resource=resource)
        for name in _exporters("traces"):
            span_exporter: SpanExporter
            if name == "console":
                span_exporter = ConsoleSpanExporter()
            elif name == "otlp" and grpc:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcSpanExporter,
                )

                span_exporter = GrpcSpanExporter()
            elif name == "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter as HttpSpanExporter,
                )

                span_exporter = HttpSpanExporter()
            else:
                if name != "none":
                    log.warning("OTEL_TRACES_EXPORTER=%s is not supported here; ignored", name)
                continue
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        readers: list[MetricReader] = []
        for name in _exporters("metrics"):
            metric_exporter: MetricExporter
            if name == "console":
                metric_exporter = ConsoleMetricExporter()
            elif name == "otlp" and grpc:
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                    OTLPMetricExporter as GrpcMetricExporter,
                )

                metric_exporter = GrpcMetricExporter()
            elif name == "otlp":
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                    OTLPMetricExporter as HttpMetricExporter,
                )

                metric_exporter = HttpMetricExporter()
            else:
                if name != "none":
                    log.warning("OTEL_METRICS_EXPORTER=%s is not supported here; ignored", name)
                continue
            readers.append(PeriodicExportingMetricReader(metric_exporter))
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    except Exception as exc:  # e.g. an exporter package of the other protocol missing
        log.warning("OpenTelemetry setup failed (%r); continuing without telemetry", exc)
        return None
    log.info("OpenTelemetry on: service %s", resource.attributes.get("service.name"))
    return Providers(tracer_provider, meter_provider)
