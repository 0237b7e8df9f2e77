"""The HPA family of baselines in virtual time: `hpa-memory`, `hpa-cpu` and `keda-prometheus`.

All three run the Kubernetes HPA algorithm of the demo's slow-path baseline
(`sim.baselines.hpa.hpa_sync`: 15 s sync, 10% tolerance, the HPA's default behavior as a user who
writes none gets it — scale-up `max(+4 pods, +100%)` per 15 s, scale-down stabilization 300 s
then -100% per 15 s) on what their metric pipeline would show at the time, with the phases of
the periodic loops drawn from the run's seed. Named variants: `keda-prometheus-1pod60s` (the
scale-down of `manifests/keda/scaledobject.yaml`, 1 pod per 60 s) and `keda-prometheus-service`
(behind a plain Service, below):

- `keda-prometheus`: Prometheus scrapes every Ready pod's cumulative
  `vllm:time_to_first_token_seconds` histogram (vLLM's own buckets; measured by vLLM from the
  moment the request reached the pod) every 15 s; KEDA polls
  `histogram_quantile(0.95, sum by (le) (rate(..._bucket[1m])))` every 30 s (`sim.baselines.promql`);
  the HPA reads the value of the last poll (threshold = the TTFT SLO, `metricType: Value`).
- `hpa-memory`: GPU memory utilization of Ready pods (DCGM scraped every 15 s) against an 80%
  target. vLLM allocates `gpu_memory_utilization` (0.9) of the GPU at start, so every Ready pod
  reads 90% whatever its load: 0.9 / 0.8 = 1.125 is above the tolerance, and the HPA adds
  replicas at every sync until `maxReplicas`.
- `hpa-cpu`: CPU utilization from metrics-server (15 s resolution) against an 80% target; vLLM's
  engine loop keeps a core busy while it has any request (`idle_cpu` when it has none).

Requests reach these pods as in the demo's baseline arm: through the gateway's admission core
with its per-pod cap lifted (least outstanding requests, queueing inside vLLM, where vLLM's TTFT
histogram sees it); `keda-prometheus-service` uses a plain Kubernetes Service instead (a random
Ready endpoint). minReplicas is the scenario's, at least 1 (the manifest's `minReplicaCount`).
Nodes come from Karpenter's dynamic provisioning.
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sim.baselines.hpa import HpaState, KedaSpec, KedaState, MetricType, hpa_sync, keda_poll
from sim.baselines.promql import INF, HistogramSample, HistogramStore
from sim.evaluate.cluster import NodeMode
from sim.evaluate.ingress import Request
from sim.pod.metrics import TTFT_BUCKETS

if TYPE_CHECKING:
    from sim.evaluate.world import Ingress, Scenario, World


class HpaMetric(enum.StrEnum):
    TTFT_P95 = "ttft-p95"
    GPU_MEMORY = "gpu-memory"
    CPU = "cpu"


@dataclass(frozen=True, slots=True, kw_only=True)
class HpaConfig:
    """Metric pipeline settings beyond the KEDA/HPA spec."""

    metric: HpaMetric
    target_utilization: float = 0.8
    """For the resource metrics (memory, CPU): the HPA's `averageUtilization` target."""
    gpu_memory_utilization: float = 0.9
    idle_cpu: float = 0.05
    metrics_interval_s: float = 15.0
    """Scrape period of DCGM (memory) and resolution of metrics-server (CPU)."""


class HpaBaseline:
    """One HPA-driven baseline in virtual time."""

    node_mode = NodeMode.KARPENTER

    def __init__(
        self,
        *,
        name: str,
        config: HpaConfig,
        spec: KedaSpec | None = None,
        ingress: Ingress | None = None,
    ) -> None:
        from sim.evaluate.world import Ingress

        self.name = name
        self.ingress = Ingress.UNCAPPED if ingress is None else ingress
        self.config = config
        self.base_spec = spec or KedaSpec()
        self.syncs = 0

    def initial(self, scenario: Scenario) -> tuple[int, int | None]:
        return max(scenario.initial_replicas, 1), None

    def attach(self, world: World) -> None:
        sc = world.scenario
        self.world = world
        self.clock = world.clock
        spec = replace(
            self.base_spec, min_replicas=max(1, sc.min_replicas), max_replicas=sc.max_replicas
        )
        if self.config.metric is HpaMetric.TTFT_P95:
            spec = replace(spec, threshold_s=sc.slo_ttft_s)
        else:
            spec = replace(
                spec,
                threshold_s=self.config.target_utilization,
                metric_type=MetricType.VALUE,
            )
        self.spec = spec
        self.hpa_state = HpaState()
        self.keda_state = KedaState()
        self.resource_metric: float | None = None
        rng = world.rng
        self.sync_phase = rng.uniform(0, spec.hpa_sync_s)
        """Time of the first HPA sync; the others follow every `hpa_sync_s`."""
        self.clock.every(spec.hpa_sync_s, self._sync, first=self.sync_phase)
        if self.config.metric is HpaMetric.TTFT_P95:
            self.store = HistogramStore(retention_s=max(spec.query_window_s * 2, 120.0))
            self.counts: dict[str, list[int]] = {}
            world.gateway.listeners.append(self)
            self.scrape_phase = rng.uniform(0, spec.scrape_interval_s)
            self.poll_phase = rng.uniform(0, spec.polling_interval_s)
            self.clock.every(spec.scrape_interval_s, self._scrape, first=self.scrape_phase)
            self.clock.every(spec.polling_interval_s, self._poll, first=self.poll_phase)
        else:
            self._busy: dict[str, float] = {}
            period = self.config.metrics_interval_s
            self.clock.every(period, self._resource_scrape, first=rng.uniform(0, period))

    # ---- vLLM's TTFT histogram, per pod ------------------------------------------------------

    def on_enqueue(self, req: Request, now: float) -> None:
        pass

    def on_dispatch(self, req: Request, now: float) -> None:
        pass

    def on_first_token(self, req: Request, now: float) -> None:
        if req.pod is None or req.dispatch is None:
            return
        counts = self.counts.get(req.pod)
        if counts is None:
            counts = [0] * (len(TTFT_BUCKETS) + 1)
            self.counts[req.pod] = counts
        counts[bisect_left(TTFT_BUCKETS, now - req.dispatch)] += 1

    def on_complete(self, req: Request, now: float) -> None:
        pass

    def _scrape(self, _: object) -> None:
        now = self.clock.now
        for pod in self.world.cluster.ready_pods():
            counts = self.counts.get(pod.name, [])
            cumulative: list[tuple[float, float]] = []
            running = 0
            for i, le in enumerate((*TTFT_BUCKETS, INF)):
                running += counts[i] if i < len(counts) else 0
                cumulative.append((le, float(running)))
            self.store.add(pod.name, HistogramSample(ts=now, buckets=tuple(cumulative)))
        for name in list(self.store.series):
            gone = not any(p.name == name for p in self.world.cluster.active)
            if gone and self.store.series[name][-1].ts < now - self.store.retention_s:
                del self.store.series[name]

    def _poll(self, _: object) -> None:
        now = self.clock.now
        metric = self.store.quantile_over_rate(
            self.spec.quantile, at=now, window_s=self.spec.query_window_s
        )
        cluster = self.world.cluster
        poll, self.keda_state = keda_poll(
            metric=metric,
            current=cluster.desired_replicas,
            state=self.keda_state,
            spec=self.spec,
            now=now,
        )
        if poll.scale_to is not None and poll.scale_to != cluster.desired_replicas:
            cluster.scale(poll.scale_to)

    # ---- resource metrics --------------------------------------------------------------------

    def _resource_scrape(self, _: object) -> None:
        now = self.clock.now
        ready = self.world.cluster.ready_pods()
        if not ready:
            self.resource_metric = None
            return
        if self.config.metric is HpaMetric.GPU_MEMORY:
            self.resource_metric = self.config.gpu_memory_utilization
            return
        period = self.config.metrics_interval_s
        total = 0.0
        for pod in ready:
            busy = pod.busy_seconds(now)
            before = self._busy.get(pod.name)
            self._busy[pod.name] = busy
            if before is None:
                span = min(period, now - (pod.ready_at or now)) or period
                frac = min(busy / span, 1.0) if span > 0 else 0.0
            else:
                frac = min((busy - before) / period, 1.0)
            total += self.config.idle_cpu + (1.0 - self.config.idle_cpu) * frac
        self.resource_metric = total / len(ready)

    # ---- the HPA -----------------------------------------------------------------------------

    def _metric(self) -> float | None:
        if self.config.metric is HpaMetric.TTFT_P95:
            return self.keda_state.cached_metric
        return self.resource_metric

    def _sync(self, _: object) -> None:
        now = self.clock.now
        cluster = self.world.cluster
        ready, _starting = cluster.counts()
        decision, self.hpa_state = hpa_sync(
            metric=self._metric(),
            current=cluster.desired_replicas,
            ready=ready,
            state=self.hpa_state,
            spec=self.spec,
            now=now,
        )
        self.syncs += 1
        if decision.valid and decision.replicas != cluster.desired_replicas:
            cluster.scale(decision.replicas)


HPA_DEFAULT_SCALE_DOWN = KedaSpec(
    scale_down_pods=None, scale_down_percent=100.0, scale_down_period_s=15.0
)
"""The HPA's default `behavior.scaleDown` (300 s stabilization, -100% per 15 s): what a user who
writes no `behavior` gets."""
MANIFEST_SCALE_DOWN = KedaSpec(scale_down_pods=1, scale_down_period_s=60.0)
"""`manifests/keda/scaledobject.yaml`'s `behavior.scaleDown`: 1 pod per 60 s."""


def keda_prometheus() -> HpaBaseline:
    """KEDA on Prometheus TTFT p95, HPA default scale-down, the demo's routing."""
    return HpaBaseline(
        name="keda-prometheus",
        config=HpaConfig(metric=HpaMetric.TTFT_P95),
        spec=HPA_DEFAULT_SCALE_DOWN,
    )


def keda_prometheus_1pod60s() -> HpaBaseline:
    """The same with the manifest's scale-down (1 pod per 60 s)."""
    return HpaBaseline(
        name="keda-prometheus-1pod60s",
        config=HpaConfig(metric=HpaMetric.TTFT_P95),
        spec=MANIFEST_SCALE_DOWN,
    )


def keda_prometheus_service() -> HpaBaseline:
    """The same behind a plain Kubernetes Service (random endpoint, queueing inside vLLM)."""
    from sim.evaluate.world import Ingress

    return HpaBaseline(
        name="keda-prometheus-service",
        config=HpaConfig(metric=HpaMetric.TTFT_P95),
        spec=HPA_DEFAULT_SCALE_DOWN,
        ingress=Ingress.SERVICE,
    )


def hpa_memory() -> HpaBaseline:
    return HpaBaseline(
        name="hpa-memory",
        config=HpaConfig(metric=HpaMetric.GPU_MEMORY),
        spec=HPA_DEFAULT_SCALE_DOWN,
    )


def hpa_cpu() -> HpaBaseline:
    return HpaBaseline(
        name="hpa-cpu", config=HpaConfig(metric=HpaMetric.CPU), spec=HPA_DEFAULT_SCALE_DOWN
    )
