"""`kpa`: Knative's Pod Autoscaler with its documented defaults, in virtual time.

Knative Serving (`pkg/autoscaler/scaling/autoscaler.go`, config-autoscaler defaults):

- the metric is concurrency: requests in the revision's pods plus those the activator holds,
  averaged over each second (the queue-proxy's 1 s buckets), scraped every second;
- target per pod = `containerConcurrency` x 70% (`container-concurrency-target-percentage`);
  containerConcurrency is the pod cap of the scenario, enforced by the queue-proxy and the
  activator, which this model represents with the FIFO admission queue;
- desired = ceil(average / target) over the 60 s stable window, and over the 6 s panic window
  (10%); panic mode starts when the panic desire reaches 200% of the ready pods and lasts until a
  stable window has passed without that; in panic the count never goes down;
- every 2 s (the tick); scale-up at most x1000 and scale-down at most /2 per decision
  (`max-scale-up-rate`, `max-scale-down-rate`) of the ready pods;
- scale to zero (minScale 0) once the stable window saw no concurrency, after the
  `scale-to-zero-grace-period` of 30 s; the activator holds requests meanwhile.

Nodes come from Karpenter's dynamic provisioning.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sim.evaluate.cluster import NodeMode
from sim.evaluate.ingress import Request

if TYPE_CHECKING:
    from sim.evaluate.world import Scenario, World


@dataclass(frozen=True, slots=True, kw_only=True)
class KpaConfig:
    """config-autoscaler defaults."""

    stable_window_s: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold: float = 2.0
    target_percentage: float = 70.0
    tick_s: float = 2.0
    bucket_s: float = 1.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_s: float = 30.0


class Kpa:
    """Knative's KPA on the concurrency the activator and queue-proxies see."""

    node_mode = NodeMode.KARPENTER

    def __init__(self, config: KpaConfig | None = None, *, name: str = "kpa") -> None:
        from sim.evaluate.world import Ingress

        self.name = name
        self.ingress = Ingress.GATEWAY
        self.config = config or KpaConfig()
        self.panicking_ticks = 0

    def initial(self, scenario: Scenario) -> tuple[int, int | None]:
        return max(scenario.initial_replicas, 1), None

    def attach(self, world: World) -> None:
        cfg = self.config
        self.world = world
        self.clock = world.clock
        sc = world.scenario
        self.target = sc.pod_concurrency * cfg.target_percentage / 100.0
        self.min_scale = sc.min_replicas
        self.max_scale = sc.max_replicas
        self.level = 0
        self.area = 0.0
        self.last_t = 0.0
        self.area_at_bucket = 0.0
        stable_buckets = round(cfg.stable_window_s / cfg.bucket_s)
        self.buckets: deque[float] = deque(maxlen=stable_buckets)
        self.panic_buckets = max(round(stable_buckets * cfg.panic_window_percentage / 100.0), 1)
        self.panic_time: float | None = None
        self.max_panic_pods = 0
        self.zero_since: float | None = None
        world.gateway.listeners.append(self)
        phase = world.rng.uniform(0, cfg.bucket_s)
        self.clock.every(cfg.bucket_s, self._collect, first=phase)
        self.tick_phase = phase + world.rng.uniform(0, cfg.tick_s)
        """Time of the first decision tick; the others follow every `tick_s`."""
        self.clock.every(cfg.tick_s, self._tick, first=self.tick_phase)

    # ---- concurrency, time-weighted ----------------------------------------------------------

    def _move(self, now: float, delta: int) -> None:
        self.area += self.level * (now - self.last_t)
        self.last_t = now
        self.level += delta

    def on_enqueue(self, req: Request, now: float) -> None:
        self._move(now, +1)
        if self.world.cluster.desired_replicas == 0:
            self.world.cluster.scale(1)  # the activator's poke: scale from zero at once

    def on_dispatch(self, req: Request, now: float) -> None:
        pass

    def on_first_token(self, req: Request, now: float) -> None:
        pass

    def on_complete(self, req: Request, now: float) -> None:
        self._move(now, -1)

    def _collect(self, _: object) -> None:
        self._move(self.clock.now, 0)
        self.buckets.append((self.area - self.area_at_bucket) / self.config.bucket_s)
        self.area_at_bucket = self.area

    # ---- the decider -------------------------------------------------------------------------

    def desired(self, now: float, ready: int) -> int | None:
        """One `Scale()` of Knative's autoscaler; None without data."""
        cfg = self.config
        if not self.buckets:
            return None
        ready_count = max(1, ready)
        max_up = math.ceil(cfg.max_scale_up_rate * ready_count)
        max_down = math.floor(ready_count / cfg.max_scale_down_rate)
        values = list(self.buckets)
        stable = sum(values) / len(values)
        recent = values[-self.panic_buckets :]
        panic = sum(recent) / len(recent)
        dspc = math.ceil(stable / self.target)
        dppc = math.ceil(panic / self.target)
        dspc = min(max(dspc, max_down), max_up)
        dppc = min(max(dppc, max_down), max_up)
        over = dppc / ready_count >= cfg.panic_threshold
        if over:
            self.panic_time = now
        elif self.panic_time is not None and now > self.panic_time + cfg.stable_window_s:
            self.panic_time = None
            self.max_panic_pods = 0
        desired = dspc
        if self.panic_time is not None:
            self.panicking_ticks += 1
            self.max_panic_pods = max(self.max_panic_pods, dppc)
            desired = self.max_panic_pods
        return desired

    def _tick(self, _: object) -> None:
        now = self.clock.now
        cluster = self.world.cluster
        ready, _starting = cluster.counts()
        desired = self.desired(now, ready)
        if desired is None:
            return
        # The activator pokes the autoscaler when a request arrives at zero (scale from zero).
        if cluster.desired_replicas == 0 and self.level > 0:
            desired = max(desired, 1)
        desired = min(max(desired, self.min_scale), self.max_scale)
        if desired == 0:
            if self.zero_since is None:
                self.zero_since = now
            if now - self.zero_since < self.config.scale_to_zero_grace_s:
                desired = min(cluster.desired_replicas, 1)
        else:
            self.zero_since = None
        if desired != cluster.desired_replicas:
            cluster.scale(desired)
