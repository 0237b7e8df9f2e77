"""OpenTelemetry test fixtures: the SDK's in-memory span exporter and metric reader.

The `otel` packages are in the `test` extra; without them these tests fail saying what to install.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

try:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
except ImportError as exc:  # pragma: no cover - a broken install
    raise ImportError(f"{exc}: pip install -e '.[test]' (it brings the otel extra)") from exc


@dataclass
class Otel:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(spans, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


from tests.controller.conftest import gateway_factory, sim  # noqa: E402, F401  (cluster + events)
from tests.gateway.conftest import harness  # noqa: E402, F401  (the gateway tests' harness)
