"""See the package docstring."""

from __future__ import annotations

import argparse
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controller.policy import Decision, Observation
from controller.policy_types import Reason
from controller.scaler import Scaler
from controller.telemetry import DecisionTelemetry
from gateway import telemetry as gt
from surgescale.events import Event, EventType


def _provider(export: bool) -> TracerProvider:
    provider = TracerProvider()
    if export:
        provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    return provider


def gateway_us(n: int, *, export: bool) -> float:
    tel = gt.GatewayTelemetry(_provider(export), MeterProvider())
    start = time.process_time()
    for i in range(n):
        root = tel._tracer.start_span("chat", context=tel.extract({}), kind=tel.kinds.SERVER)
        token = gt._CURRENT.set(gt._Request(tel, root, "chat"))
        rid = f"r{i}"
        tel.on_event(EventType.ENQUEUE, "m", rid, {"prompt_tokens": 10})
        tel.on_event(EventType.DISPATCH, "m", rid, {"pod": "http://10.0.0.1:8000", "queue_ms": 1.0})
        gt.inject({})
        tel.on_event(EventType.FIRST_TOKEN, "m", rid, {"ttft_ms": 20.0, "deadline_met": True})
        done = {"status": 200, "ttft_ms": 20.0, "tpot_ms": 5.0, "e2e_ms": 60.0, "output_tokens": 9}
        tel.on_event(EventType.COMPLETE, "m", rid, done)
        gt._CURRENT.reset(token)
        root.end()
    return (time.process_time() - start) / n * 1e6


def decision_us(n: int, *, export: bool) -> float:
    tel = DecisionTelemetry(_provider(export))
    scaler = Scaler(key=("ns", "m"))
    scaler.spec = type("Spec", (), {"model": "m", "capacity": None})()
    obs = Observation(
        now_data=0,
        queue_depth=40,
        in_flight=0,
        ready_replicas=1,
        starting_replicas=0,
        arrival_rate_short=1,
        arrival_rate_long=1,
        service_rate_per_replica=8,
        ttft_p95_s=None,
        tpot_p95_s=None,
        last_enqueue_at=None,
    )
    spent = 0.0
    for i in range(n):
        events = [
            Event(
                type=EventType.ENQUEUE,
                model="m",
                gateway="g",
                ts_ms=1,
                request_id=f"r{j}",
                origin="o",
                eseq=i * 40 + j + 1,
            )
            for j in range(40)
        ]
        decision = Decision(valid=True, replicas=2 + i % 2, nodes=1, reason=Reason.SCALE_UP)
        start = time.process_time()
        tel.ingested(events)
        tel.decided(scaler, obs, decision, current=1 + (i + 1) % 2 * 2)
        spent += time.process_time() - start
    return spent / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.otel_overhead")
    parser.add_argument("-n", type=int, default=5000, help="requests / decisions (default 5000)")
    n = parser.parse_args().n
    for export in (False, True):
        label = "batch exporter to memory" if export else "no exporter"
        print(f"gateway, per traced request ({label}): {gateway_us(n, export=export):.0f} us CPU")
        print(
            f"controller, per decision span + 40 ingested events ({label}): {decision_us(max(n // 10, 1), export=export):.0f} us CPU"
        )


if __name__ == "__main__":
    main()
