"""`kpa`: Knative's Pod Autoscaler (`sim.baselines.kpa`) in virtual time.

This is the evaluator's side of the baseline: the concurrency the activator and queue-proxies
see (requests enqueued and not yet complete, time-weighted into 1 s buckets), the decision tick
every 2 s with its phase drawn from the run's seed, the activator's poke at zero replicas, the
scale-to-zero grace period and the [minScale, maxScale] bounds. containerConcurrency is the
scenario's pod cap, enforced by the queue-proxy and the activator, which this model represents
with the FIFO admission queue. Nodes come from Karpenter's dynamic provisioning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.baselines.kpa import KpaConfig, KpaDecider
from sim.evaluate.cluster import NodeMode
from sim.evaluate.ingress import Request

if TYPE_CHECKING:
    from sim.evaluate.world import Scenario, World


class Kpa:
    """Knative's KPA on the concurrency the activator and queue-proxies see."""

    node_mode = NodeMode.KARPENTER

    def __init__(self, config: KpaConfig | None = None, *, name: str = "kpa") -> None:
        from sim.evaluate.world import Ingress

        self.name = name
        self.ingress = Ingress.GATEWAY
        self.config = config or KpaConfig()

    def initial(self, scenario: Scenario) -> tuple[int, int | None]:
        return max(scenario.initial_replicas, 1), None

    def attach(self, world: World) -> None:
        cfg = self.config
        self.world = world
        self.clock = world.clock
        sc = world.scenario
        self.decider = KpaDecider(cfg, container_concurrency=sc.pod_concurrency)
        self.min_scale = sc.min_replicas
        self.max_scale = sc.max_replicas
        self.level = 0
        self.area = 0.0
        self.last_t = 0.0
        self.area_at_bucket = 0.0
        self.zero_since: float | None = None
        world.gateway.listeners.append(self)
        phase = world.rng.uniform(0, cfg.bucket_s)
        self.clock.every(cfg.bucket_s, self._collect, first=phase)
        self.tick_phase = phase + world.rng.uniform(0, cfg.tick_s)
        """Time of the first decision tick; the others follow every `tick_s`."""
        self.clock.every(cfg.tick_s, self._tick, first=self.tick_phase)

    @property
    def panicking_ticks(self) -> int:
        """Decision ticks spent in panic mode."""
        return self.decider.panicking_ticks

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
        self.decider.record((self.area - self.area_at_bucket) / self.config.bucket_s)
        self.area_at_bucket = self.area

    # ---- the decision ------------------------------------------------------------------------

    def _tick(self, _: object) -> None:
        now = self.clock.now
        cluster = self.world.cluster
        ready, _starting = cluster.counts()
        desired = self.decider.desired(now, ready)
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
