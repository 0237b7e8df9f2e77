"""The pod's `/metrics`: vLLM's metric names, `model_name` label and default histogram buckets.

The names are the current (v1 engine) ones: `vllm:kv_cache_usage_perc` for the KV-cache gauge and
`vllm:inter_token_latency_seconds` for the inter-token histogram; names vLLM renamed or removed
are not served, not even as aliases (`tests/sim_pod/test_metric_names.py` keeps it so, for the
whole repository).

One `CollectorRegistry` per pod (many pods share a process). Gauges are read from the engine at
scrape time; histograms and counters are fed by the driver's callbacks (`sim.pod.driver`).
Buckets are vLLM's defaults (v1 `PrometheusStatLogger`). The histograms are `CountingHistogram`s,
a custom collector that can record one value many times at once: a decode step gives every
stream the same inter-token gap, so the ITL histogram costs one update per step, not per token.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from sim.engine import Engine

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST


class CountingHistogram(Collector):
    """A Prometheus histogram with one label value whose `observe` takes a count."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...], model: str) -> None:
        self.name = name
        self.doc = doc
        self.buckets = buckets
        self.model = model
        self.counts = [0] * (len(buckets) + 1)  # last: +Inf
        self.sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect_left(self.buckets, value)] += count
        self.sum += value * count

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=["model_name"])
        cumulative = 0
        points = []
        for le, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            cumulative += n
            points.append(("+Inf" if le == float("inf") else repr(float(le)), float(cumulative)))
        family.add_metric([self.model], points, sum_value=self.sum)
        yield family


class PodMetrics:
    """The metric families of one pod, already bound to its `model_name`."""

    def __init__(self, model: str, engine: Engine) -> None:
        self.engine = engine
        self.registry = CollectorRegistry(auto_describe=False)
        labels = ["model_name"]
        r = self.registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=r)

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> CountingHistogram:
            h = CountingHistogram(name, doc, buckets, model)
            r.register(h)
            return h

        self.running = gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches."
        ).labels(model)
        self.waiting = gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed."
        ).labels(model)
        self.kv_usage = gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."
        ).labels(model)
        self.prompt_tokens = counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed."
        ).labels(model)
        self.generation_tokens = counter(
            "vllm:generation_tokens", "Number of generation tokens processed."
        ).labels(model)
        self.preemptions = counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine."
        ).labels(model)
        self.success = counter(
            "vllm:request_success", "Count of successfully processed requests."
        ).labels(model)
        self.ttft = hist(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TTFT_BUCKETS,
        )
        self.itl = hist(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            ITL_BUCKETS,
        )
        self.e2e = hist(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.queue = hist("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", REQUEST_LATENCY_BUCKETS)  # fmt: skip
        self._preemptions_seen = 0
        self._generated_seen = 0

    def render(self) -> bytes:
        """Refresh the gauges from the engine and render the text exposition format."""
        e = self.engine
        self.running.set(e.running)
        self.waiting.set(e.waiting)
        self.kv_usage.set(e.kv_usage)
        if e.preemptions > self._preemptions_seen:
            self.preemptions.inc(e.preemptions - self._preemptions_seen)
            self._preemptions_seen = e.preemptions
        if e.generation_tokens > self._generated_seen:
            self.generation_tokens.inc(e.generation_tokens - self._generated_seen)
            self._generated_seen = e.generation_tokens
        return generate_latest(self.registry)
