"""Operations surface: Prometheus metrics, `/metrics`, `/healthz`, `/readyz`, decision log lines.

`Metrics` holds the controller's own `CollectorRegistry` (so several controllers can live in one
process, as in the tests and the benchmark). `build_app(metrics, health)` is the aiohttp app;
`Health` is what the probes read: `/healthz` says the event loop is turning and the consumer has
not died, `/readyz` that the informers have synced and events are being read.
`log_decision` writes one structured (JSON) line per decision, cheaply skipped when off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from controller.policy import Decision, Observation

decision_log = logging.getLogger("controller.decisions")

LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


@dataclass(slots=True)
class _ModelSeries:
    decisions: dict[str, Counter]
    desired_replicas: Gauge
    desired_nodes: Gauge
    ready_replicas: Gauge
    queue_depth: Gauge
    in_flight: Gauge
    arrival_rate: Gauge
    ttft_p95: Gauge


class Metrics:
    """The controller's Prometheus series (one registry per controller)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decision_latency = Histogram(
            "surgescale_controller_decision_latency_seconds",
            "From the arrival of the triggering event to the scale PATCH being sent "
            "(direction up: the urgent path; down: rate-limited evaluations).",
            ["model", "direction"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "surgescale_controller_decisions",
            "Policy evaluations by outcome (up, down, hold, invalid).",
            ["model", "outcome"],
            registry=r,
        )
        self.desired_replicas = Gauge(
            "surgescale_controller_desired_replicas", "Replicas decided.", ["model"], registry=r
        )
        self.desired_nodes = Gauge(
            "surgescale_controller_desired_nodes", "GPU nodes decided.", ["model"], registry=r
        )
        self.ready_replicas = Gauge(
            "surgescale_controller_ready_replicas", "Ready replicas.", ["model"], registry=r
        )
        self.queue_depth = Gauge(
            "surgescale_controller_queue_depth",
            "Requests queued at the gateways.",
            ["model"],
            registry=r,
        )
        self.in_flight = Gauge(
            "surgescale_controller_in_flight", "Requests at pods.", ["model"], registry=r
        )
        self.ttft_p95 = Gauge(
            "surgescale_controller_ttft_p95_seconds",
            "Time to first token, p95 over the latency window.",
            ["model"],
            registry=r,
        )
        self.arrival_rate = Gauge(
            "surgescale_controller_arrival_rate",
            "Requests per second over the short window.",
            ["model"],
            registry=r,
        )
        self.events = Counter("surgescale_controller_events", "Events consumed.", registry=r)
        self.patches = Counter(
            "surgescale_controller_scale_patches",
            "Scale PATCHes sent, by target kind.",
            ["kind"],
            registry=r,
        )
        self.leader = Gauge(
            "surgescale_controller_leader", "1 while this instance holds the Lease.", registry=r
        )
        self.stream_notifications = Gauge(
            "surgescale_controller_stream_notifications",
            "1 while Redis keyspace notifications name the streams each read names; 0 while "
            "every read names every model stream (off, refused by Redis, or reconnecting).",
            registry=r,
        )
        self._by_model: dict[str, _ModelSeries] = {}

    def _series(self, model: str) -> _ModelSeries:
        """The model's labelled series, looked up once (a lookup per evaluation and series
        costs more than the evaluation's arithmetic when there are many models)."""
        series = self._by_model.get(model)
        if series is None:
            series = self._by_model[model] = _ModelSeries(
                decisions={},
                desired_replicas=self.desired_replicas.labels(model),
                desired_nodes=self.desired_nodes.labels(model),
                ready_replicas=self.ready_replicas.labels(model),
                queue_depth=self.queue_depth.labels(model),
                in_flight=self.in_flight.labels(model),
                arrival_rate=self.arrival_rate.labels(model),
                ttft_p95=self.ttft_p95.labels(model),
            )
        return series

    def observe_decision(
        self, model: str, obs: Observation, decision: Decision, outcome: str
    ) -> None:
        series = self._series(model)
        counter = series.decisions.get(outcome)
        if counter is None:
            counter = series.decisions[outcome] = self.decisions.labels(model, outcome)
        counter.inc()
        if decision.valid:
            series.desired_replicas.set(decision.replicas)
            series.desired_nodes.set(decision.nodes)
        series.ready_replicas.set(obs.ready_replicas)
        series.queue_depth.set(obs.queue_depth)
        series.in_flight.set(obs.in_flight)
        series.arrival_rate.set(obs.arrival_rate_short)
        if obs.ttft_p95_s is not None:
            series.ttft_p95.set(obs.ttft_p95_s)

    def render(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data


@dataclass(slots=True)
class Health:
    """What the probes report; the controller sets the callables."""

    live: Callable[[], tuple[bool, str]] = field(default=lambda: (True, "ok"))
    ready: Callable[[], tuple[bool, str]] = field(default=lambda: (False, "starting"))


METRICS_KEY: Final = web.AppKey("metrics", Metrics)
HEALTH_KEY: Final = web.AppKey("health", Health)


async def _metrics(request: web.Request) -> web.Response:
    # In a worker thread: at 1,000 models the exposition is 60-100 ms of Python, which on the
    # event loop held every event, evaluation and PATCH for that long at each scrape; in a
    # thread the interpreter switches back to the loop every few ms (`sys.getswitchinterval`).
    body = await asyncio.to_thread(request.app[METRICS_KEY].render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _probe(which: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        health = request.app[HEALTH_KEY]
        ok, why = (health.live if which == "live" else health.ready)()
        return web.json_response({"ok": ok, "detail": why}, status=200 if ok else 503)

    return handler


def build_app(metrics: Metrics, health: Health) -> web.Application:
    """The ops HTTP app: `/metrics`, `/healthz`, `/readyz`."""
    app = web.Application()
    app[METRICS_KEY] = metrics
    app[HEALTH_KEY] = health
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _probe("live"))
    app.router.add_get("/readyz", _probe("ready"))
    return app


def log_decision(
    *,
    scaler: str,
    model: str,
    now: float,
    obs: Observation,
    decision: Decision,
    leader: bool,
    level: int = logging.INFO,
) -> None:
    """One JSON line with the decision and every input it was made from."""
    if not decision_log.isEnabledFor(level):
        return
    line = {
        "msg": "decision",
        "scaler": scaler,
        "model": model,
        "t": round(now, 4),
        "leader": leader,
        "valid": decision.valid,
        "replicas": decision.replicas,
        "nodes": decision.nodes,
        "recommended": decision.recommended,
        "reason": decision.reason.value,
        "detail": decision.detail,
        "concurrency": decision.concurrency,
        "drain_horizon_s": decision.drain_horizon_s,
        "keep_node_s": decision.keep_node_s,
        "step_rate": decision.step_rate,
        "queue": obs.queue_depth,
        "in_flight": obs.in_flight,
        "ready": obs.ready_replicas,
        "starting": obs.starting_replicas,
        "arrival_short": round(obs.arrival_rate_short, 3),
        "arrival_long": round(obs.arrival_rate_long, 3),
        "mu": round(decision.service_rate, 3),
        "ttft_p95_s": obs.ttft_p95_s,
        "tpot_p95_s": obs.tpot_p95_s,
        "data_age_s": round(now - obs.now_data, 3),
        "ready_nodes": obs.ready_nodes,
        "starting_nodes": obs.starting_nodes,
    }
    decision_log.log(level, "%s", orjson.dumps(line).decode())
