"""Knative's Pod Autoscaler decider with its documented defaults (pure: time is an argument).

Knative Serving (`pkg/autoscaler/scaling/autoscaler.go`, config-autoscaler defaults):

- the metric is concurrency: requests in the revision's pods plus those the activator holds,
  averaged over each second (the queue-proxy's 1 s buckets), scraped every second;
- target per pod = `containerConcurrency` x 70% (`container-concurrency-target-percentage`);
- desired = ceil(average / target) over the 60 s stable window, and over the 6 s panic window
  (10%); panic mode starts when the panic desire reaches 200% of the ready pods and lasts until a
  stable window has passed without that; in panic the count never goes down;
- every 2 s (the tick); scale-up at most x1000 and scale-down at most /2 per decision
  (`max-scale-up-rate`, `max-scale-down-rate`) of the ready pods;
- scale to zero (minScale 0) once the stable window saw no concurrency, after the
  `scale-to-zero-grace-period` of 30 s (the caller applies the grace period and the bounds).

`KpaDecider` holds the per-second concurrency buckets and the panic state; the evaluator's
`kpa` policy (`sim.evaluate.kpa_arm`) feeds it and applies its answer.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


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


class KpaDecider:
    """One revision's autoscaler: concurrency buckets in, desired pods out."""

    def __init__(self, config: KpaConfig, *, container_concurrency: int) -> None:
        self.config = config
        self.target = container_concurrency * config.target_percentage / 100.0
        stable_buckets = round(config.stable_window_s / config.bucket_s)
        self.buckets: deque[float] = deque(maxlen=stable_buckets)
        self.panic_buckets = max(round(stable_buckets * config.panic_window_percentage / 100.0), 1)
        self.panic_time: float | None = None
        self.max_panic_pods = 0
        self.panicking_ticks = 0

    def record(self, concurrency: float) -> None:
        """One bucket: the average concurrency over the last `bucket_s`."""
        self.buckets.append(concurrency)

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
