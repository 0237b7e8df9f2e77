"""The KEDA + Prometheus + HPA baseline as a live loop: the thin I/O shell around `sim.baselines.hpa`.

It stands in for three components of a real cluster and keeps each one's cadence:

- Prometheus: every `scrape_interval_s` it lists the model Service's EndpointSlices (as a
  ServiceMonitor does), GETs each Ready endpoint's `/metrics` and stores the TTFT histogram,
  stamped with the scrape time (`sim.baselines.promql.HistogramStore`);
- KEDA: every `polling_interval_s` it evaluates the trigger's query and caches the value; at zero
  replicas it activates the Deployment (0 -> 1) itself;
- the HPA: every `hpa_sync_s` it reads the Deployment's `scale` and ready pods and runs the
  Kubernetes algorithm; a changed count is merge-PATCHed to `deployments/{name}/scale`, the only
  write this loop makes.

Everything talks to the (simulated) API server through kubernetes_asyncio over HTTP and to the pods
over HTTP, like the real components. Time comes from the event loop's clock (`now` is injected).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s

from sim.baselines.hpa import HpaState, KedaSpec, KedaState, hpa_sync, keda_poll
from sim.baselines.promql import HistogramStore, parse_histogram, to_sample

log = logging.getLogger(__name__)

TTFT_HISTOGRAM = "vllm:time_to_first_token_seconds"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineTarget:
    """What the ScaledObject points at."""

    namespace: str
    deployment: str
    service: str
    """The Service whose EndpointSlices list the pods to scrape."""
    model: str
    """`model_name` label of the vLLM metrics."""


@dataclass(slots=True)
class BaselineStatus:
    """What the loop last did, for the live view and the report (read it; the loop writes it)."""

    scrapes: int = 0
    scrape_errors: int = 0
    targets: int = 0
    metric_s: float | None = None
    """The value of the trigger's query at KEDA's last poll (NaN shown as None)."""
    desired: int | None = None
    last_reason: str = "waiting for the first sync"
    last_scale_at: float | None = None
    decisions: list[tuple[float, int, int, str]] = field(default_factory=list)
    """(time, old, new, reason) of every scale this loop made."""


class KedaBaseline:
    """Runs scrape, poll and sync on their own periods until cancelled."""

    def __init__(
        self,
        *,
        api: k8s.ApiClient,
        http: aiohttp.ClientSession,
        target: BaselineTarget,
        spec: KedaSpec,
        now: Callable[[], float] | None = None,
        phase_s: float = 0.0,
    ) -> None:
        self._apps = k8s.AppsV1Api(api)
        self._discovery = k8s.DiscoveryV1Api(api)
        self._http = http
        self.target = target
        self.spec = spec
        self._now = now or asyncio.get_running_loop().time
        self._phase = phase_s % spec.scrape_interval_s if spec.scrape_interval_s > 0 else 0.0
        self.store = HistogramStore(retention_s=max(4 * spec.query_window_s, 60.0))
        self.hpa_state = HpaState()
        self.keda_state = KedaState()
        self.status = BaselineStatus()

    async def run(self) -> None:
        start = self._now()
        next_scrape = start + self._phase
        next_poll = start + self.spec.polling_interval_s
        next_sync = start + self.spec.hpa_sync_s
        while True:
            now = self._now()
            if now >= next_scrape:
                next_scrape += self.spec.scrape_interval_s
                await self._guarded(self.scrape(now))
            now = self._now()
            if now >= next_poll:
                next_poll += self.spec.polling_interval_s
                await self._guarded(self.poll(now))
            now = self._now()
            if now >= next_sync:
                next_sync += self.spec.hpa_sync_s
                await self._guarded(self.sync(now))
            wake = min(next_scrape, next_poll, next_sync)
            await asyncio.sleep(max(0.0, wake - self._now()))

    async def _guarded(self, step: Any) -> None:
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failing dependency degrades the loop, never ends it
            log.warning("baseline step failed: %s", exc)

    async def _endpoints(self) -> list[str]:
        slices = await self._discovery.list_namespaced_endpoint_slice(
            self.target.namespace,
            label_selector=f"kubernetes.io/service-name={self.target.service}",
        )
        urls: list[str] = []
        for item in slices.items:
            port = item.ports[0].port if item.ports else 8000
            for endpoint in item.endpoints or []:
                ready = endpoint.conditions is None or endpoint.conditions.ready is not False
                if ready and endpoint.addresses:
                    urls.append(f"http://{endpoint.addresses[0]}:{port}/metrics")
        return urls

    async def scrape(self, now: float) -> None:
        """One Prometheus scrape of every Ready endpoint, all stamped `now`."""
        urls = await self._endpoints()
        self.status.targets = len(urls)
        timeout = aiohttp.ClientTimeout(total=max(0.5, min(10.0, self.spec.scrape_interval_s)))

        async def one(url: str) -> None:
            try:
                async with self._http.get(url, timeout=timeout) as resp:
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError):
                self.status.scrape_errors += 1
                return
            buckets = parse_histogram(text, TTFT_HISTOGRAM, {"model_name": self.target.model})
            sample = to_sample(now, buckets)
            if sample is not None:
                self.store.add(url, sample)

        await asyncio.gather(*(one(u) for u in urls))
        self.status.scrapes += 1

    def query(self, now: float) -> float:
        return self.store.quantile_over_rate(
            self.spec.quantile, at=now, window_s=self.spec.query_window_s
        )

    async def _scale(self) -> tuple[int, int]:
        dep = await self._apps.read_namespaced_deployment(
            self.target.deployment, self.target.namespace
        )
        current = int(dep.spec.replicas or 0)
        ready = int((dep.status.ready_replicas if dep.status else 0) or 0)
        return current, ready

    async def _patch(self, *, now: float, old: int, new: int, reason: str) -> None:
        await self._apps.patch_namespaced_deployment_scale(
            self.target.deployment,
            self.target.namespace,
            {"spec": {"replicas": new}},
            _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # accepted, missing from the stubs
        )
        self.status.last_scale_at = now
        self.status.decisions.append((now, old, new, reason))
        log.info("baseline scale %s -> %s: %s", old, new, reason)

    async def poll(self, now: float) -> None:
        """One KEDA polling cycle."""
        metric = self.query(now)
        self.status.metric_s = None if math.isnan(metric) else metric
        current, _ = await self._scale()
        outcome, self.keda_state = keda_poll(
            metric=metric, current=current, state=self.keda_state, spec=self.spec, now=now
        )
        if outcome.scale_to is not None and outcome.scale_to != current:
            reason = f"KEDA {outcome.reason} (metric {self.status.metric_s})"
            await self._patch(now=now, old=current, new=outcome.scale_to, reason=reason)

    async def sync(self, now: float) -> None:
        """One HPA sync."""
        if self.spec.use_cached_metrics:
            metric: float | None = self.keda_state.cached_metric
        else:
            fresh = self.query(now)
            metric = 0.0 if math.isnan(fresh) else fresh
        current, ready = await self._scale()
        decision, self.hpa_state = hpa_sync(
            metric=metric,
            current=current,
            ready=ready,
            state=self.hpa_state,
            spec=self.spec,
            now=now,
        )
        self.status.desired = decision.replicas
        self.status.last_reason = f"HPA: {decision.reason}"
        if decision.valid and decision.replicas != current:
            await self._patch(now=now, old=current, new=decision.replicas, reason=decision.reason)


@contextlib.asynccontextmanager
async def running(baseline: KedaBaseline) -> Any:
    """Run the baseline in a task for the duration of the block; cancel it on exit."""
    task = asyncio.create_task(baseline.run(), name="keda-baseline")
    try:
        yield baseline
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
