"""Prometheus metrics of one gateway process, served on `/metrics`.

Counters and histograms are updated on the request path through per-model children cached in
`ModelMetrics` (no label lookup per request). Gauges that mirror live state (queue depth, in
flight, ready pods, event producer counters) are read at scrape time by a custom collector, so
they are exact and cost nothing between scrapes. Each application has its own registry, so
several gateways can live in one process (tests, benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.scheduler import Scheduler
from gateway.shares import Shares
from surgescale.events import EventProducer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.1)


@dataclass(slots=True)
class ModelMetrics:
    """The request-path children of one model."""

    admitted: Counter
    ttft: Histogram
    queue_wait: Histogram
    added: Histogram
    chunks: Counter
    retries: Counter
    cancelled: Counter


class GatewayMetrics:
    """Every metric of one gateway, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        p = "surgescale_gateway_"
        self._admitted = Counter(
            p + "requests_admitted", "Requests admitted", ["model"], registry=r
        )
        self._rejected = Counter(
            p + "requests_rejected", "Requests refused, by reason", ["model", "reason"], registry=r
        )
        self._completed = Counter(
            p + "requests_completed",
            "Requests finished, by status",
            ["model", "status"],
            registry=r,
        )
        self._completed_by: dict[tuple[str, int], Counter] = {}
        self._cancelled = Counter(
            p + "requests_cancelled", "Requests the client abandoned", ["model"], registry=r
        )
        self._retries = Counter(
            p + "upstream_retries",
            "Retries on another pod before the first byte",
            ["model"],
            registry=r,
        )
        self._chunks = Counter(
            p + "stream_chunks", "SSE events forwarded to clients", ["model"], registry=r
        )
        self._ttft = Histogram(
            p + "ttft_seconds",
            "Time to first token from arrival at the gateway",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._queue_wait = Histogram(
            p + "queue_wait_seconds",
            "Time spent queued before dispatch",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._added = Histogram(
            p + "added_latency_seconds",
            "Gateway time before the first byte: handling before the send to the pod (queueing "
            "excluded) plus, for streams, forwarding the first chunk",
            ["model"],
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self._models: dict[str, ModelMetrics] = {}

    def model(self, name: str) -> ModelMetrics:
        m = self._models.get(name)
        if m is None:
            m = self._models[name] = ModelMetrics(
                admitted=self._admitted.labels(name),
                ttft=self._ttft.labels(name),
                queue_wait=self._queue_wait.labels(name),
                added=self._added.labels(name),
                chunks=self._chunks.labels(name),
                retries=self._retries.labels(name),
                cancelled=self._cancelled.labels(name),
            )
        return m

    def rejected(self, model: str, reason: str) -> None:
        self._rejected.labels(model, reason).inc()

    def completed(self, model: str, status: int) -> None:
        child = self._completed_by.get((model, status))
        if child is None:  # one label lookup per (model, status), not one per request
            child = self._completed_by[model, status] = self._completed.labels(model, str(status))
        child.inc()

    def watch(
        self,
        scheduler: Scheduler,
        producer: EventProducer | None,
        ready: Callable[[], bool],
    ) -> None:
        """Register the scrape-time collector of live state."""
        self.registry.register(_LiveCollector(scheduler, producer, ready))

    def watch_shares(self, shares: Shares) -> None:
        """Register the scrape-time collector of the shared pod capacity (`gateway.shares`)."""
        self.registry.register(_SharesCollector(shares))

    def watch_connections(self, *, open_now: Callable[[], int], refused: Callable[[], int]) -> None:
        """Register the scrape-time collector of client connections (open, refused at the cap)."""
        self.registry.register(_ConnectionCollector(open_now, refused))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    def __init__(
        self, scheduler: Scheduler, producer: EventProducer | None, ready: Callable[[], bool]
    ) -> None:
        self._scheduler = scheduler
        self._producer = producer
        self._ready = ready

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        p = "surgescale_gateway_"
        depth = GaugeMetricFamily(p + "queue_depth", "Requests queued", labels=["model"])
        flight = GaugeMetricFamily(p + "in_flight", "Requests at a pod", labels=["model"])
        pods = GaugeMetricFamily(p + "ready_pods", "Pods receiving work", labels=["model"])
        slots = GaugeMetricFamily(p + "free_slots", "Free pod slots", labels=["model"])
        for model, q in self._scheduler.queues.items():
            depth.add_metric([model], q.queued)
            flight.add_metric([model], q.in_flight)
            pods.add_metric([model], q.ready_pods)
            slots.add_metric([model], q.free_slots)
        yield from (depth, flight, pods, slots)
        yield GaugeMetricFamily(p + "ready", "1 when admitting", value=1 if self._ready() else 0)
        stats = self._producer.stats if self._producer is not None else None
        yield CounterMetricFamily(
            p + "events_emitted",
            "Events handed to the producer",
            value=stats.emitted if stats else 0,
        )
        yield CounterMetricFamily(
            p + "event_flushes",
            "Writes of buffered events to Redis (one pipeline each); emitted / flushes is the "
            "batching the event linger buys",
            value=stats.flushes if stats else 0,
        )
        yield CounterMetricFamily(
            p + "events_dropped",
            "Events lost while Redis was away (buffer overflow)",
            value=stats.dropped if stats else 0,
        )
        yield GaugeMetricFamily(
            p + "events_buffered",
            "Events waiting to reach Redis",
            value=stats.buffered if stats else 0,
        )
        connected = self._producer.connected if self._producer is not None else False
        yield GaugeMetricFamily(
            p + "events_connected", "1 when Redis takes events", value=int(connected)
        )


class _ConnectionCollector(Collector):
    def __init__(self, open_now: Callable[[], int], refused: Callable[[], int]) -> None:
        self._open = open_now
        self._refused = refused

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        p = "surgescale_gateway_"
        yield GaugeMetricFamily(p + "connections_open", "Open client connections", self._open())
        yield CounterMetricFamily(
            p + "connections_refused",
            "Client connections refused at max_connections",
            value=self._refused(),
        )


class _SharesCollector(Collector):
    def __init__(self, shares: Shares) -> None:
        self._shares = shares

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        p = "surgescale_gateway_capacity_"
        fallback = GaugeMetricFamily(
            p + "fallback",
            "1 while this instance cannot learn its share from Redis and uses the safe share "
            "max(1, cap // instances)",
            labels=["model"],
        )
        instances = GaugeMetricFamily(
            p + "instances",
            "Gateway instances sharing the model's pods (last sync)",
            labels=["model"],
        )
        share = GaugeMetricFamily(
            p + "share_slots", "Pod slots this instance may use, over all pods", labels=["model"]
        )
        for model, on in self._shares.fallback_models().items():
            fallback.add_metric([model], int(on))
        for model, n in self._shares.instances().items():
            instances.add_metric([model], n)
        for model, limits in self._shares.limits.items():
            share.add_metric([model], sum(limits.values()))
        yield from (fallback, instances, share)
