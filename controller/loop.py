"""The controller runtime: events and watches in, `decide` on every material change, scale out.

`Controller(config)` wires the parts: an `EventConsumer` read by `controller.ingest` (its own
consumer group per instance, so leader and standbys all see every event and keep their state
warm), the informers (InferenceScalers, Deployments, Nodes, NodePools) handled by
`controller.watches`, the evaluation schedule (`controller.scheduler`, on the event loop's clock),
the `LeaseElector`, the `Actuator` (the only writer of scale), the status/Event writer and the ops
HTTP server. Per InferenceScaler it keeps the parsed spec (or the error that made it invalid), the
policy state and the last decision. Its settings are `controller.config.ControllerConfig`.

Evaluation: every consumed batch marks the models it touched; each of their scalers is evaluated
at once unless it was evaluated less than `min_eval_interval_s` ago, in which case one trailing
evaluation is scheduled (so bursts cost one evaluation per interval, and the first event of a
burst never waits). A periodic tick evaluates everything (scale-down, idle, staleness). Only the
leader actuates; a standby runs the same decisions and follows the Deployment's replicas, so a
takeover decides at once, from what it observes (its policy state is reset to the replicas the
cluster has, never to a scale-up it only imagined as a standby). Every write is fenced by the
Lease's renew deadline at the moment of the write (`controller.lease`, `controller.actuator`);
before a Deployment is scaled down its pods are ranked by in-flight requests
(`controller.pods`).

Sharded by model (`shards` > 1, `controller.shards`): the replicas split S shard Leases; each
applies, evaluates and writes only for the models of the shards it holds (every write fenced by
the model's shard Lease), and rebuilds a model's state from its stream when it takes a shard over
(`controller.takeover`). With one shard (the default) the above holds unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client

from controller import crd, fencing, plan
from controller.actuator import Actuator, ScaleTarget, TargetKind
from controller.buffer import BufferScaleAPI
from controller.config import ControllerConfig
from controller.counts import CountsCache
from controller.fleet import TICK_CHUNK, Rotation
from controller.ingest import Ingest
from controller.kube import (
    Informer,
    KubeWriter,
    connect_api,
    controller_informers,
)
from controller.lease import LeaseElector
from controller.ops import Health, Metrics, build_app, log_decision
from controller.pods import DeletionCoster, KubePodAPI, selector_string
from controller.policy import Decision, Observation, PolicyState, decide
from controller.report import Reporter
from controller.scaler import (
    Key,
    Scaler,
    concurrency_condition,
    opt_in_refusal,
)
from controller.scheduler import EvalScheduler
from controller.shards import ShardSet
from controller.state import ClusterCounts, StateStore
from controller.takeover import ModelGate
from controller.telemetry import DecisionTelemetry
from controller.watches import Watches
from surgescale.cancel import wait_for
from surgescale.events import (
    Event,
    EventConsumer,
    RedisClient,
    StreamKeys,
    close,
    connect,
)
from surgescale.events.replay import read_since

log = logging.getLogger(__name__)

__all__ = ["Controller", "ControllerConfig"]


class Controller:
    """One controller instance (leader or standby)."""

    def __init__(
        self,
        config: ControllerConfig,
        *,
        api: client.ApiClient | None = None,
        redis: RedisClient | None = None,
    ) -> None:
        self.config = config
        self._api = api
        self._own_api = api is None
        self._redis = redis
        self._own_redis = redis is None
        self.metrics = Metrics()
        self.health = Health(live=self._live, ready=self._ready)
        self.store = StateStore(config.state)
        self.counts = CountsCache()
        """Cluster counts per scaler, kept while its objects stay (`controller.counts`)."""
        self.watches = Watches(
            request=lambda scaler: self.request_eval(scaler, trigger=None),
            observed=self._observed,
            reindexed=lambda n: self.scheduler.resize(n),
        )
        self.scheduler: EvalScheduler[Scaler] = EvalScheduler(
            clock=_loop_time,
            call_at=_loop_call_at,
            evaluate=self.evaluate,
            evaluates=self.evaluates,
            current=lambda scaler: self.scalers.get(scaler.key) is scaler,
            min_interval_s=config.min_eval_interval_s,
            max_evals_per_s=config.max_evals_per_s,
            tick_s=config.tick_s,
        )
        self.actuator: Actuator | None = None
        self.elector: LeaseElector | None = None
        """The Lease of shard 0 (with one shard: the leader's Lease)."""
        self.shards: ShardSet | None = None
        self.gate = ModelGate(
            shards=config.shards,
            store=self.store,
            replay=self._replay,
            window_s=config.state.long_window_s,
        )
        self._read_shards: set[int] = set()
        """The shards whose models' streams this replica reads (sharded)."""
        self.deletion_coster: DeletionCoster | None = None
        self.consumer: EventConsumer | None = None
        self.ingest: Ingest | None = None
        self.reporter: Reporter | None = None
        self.informers: dict[str, Informer[Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._short: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None
        self.on_decision: Callable[[Scaler, Observation, Decision], None] | None = None
        self.telemetry: DecisionTelemetry | None = None
        """Decision spans (controller.telemetry), when OpenTelemetry is on."""

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        if self._api is None:
            self._api = await connect_api(cfg.kubeconfig)
        if self._redis is None:
            self._redis = connect(cfg.redis_url)
        api = self._api
        self.shards = ShardSet(
            api,
            shards=cfg.shards,
            namespace=cfg.lease_namespace,
            lease_name=cfg.lease_name,
            identity=cfg.identity,
            lease_duration_s=cfg.lease_duration_s,
            retry_period_s=cfg.lease_retry_s,
            on_change=self._on_shard,
        )
        self.elector = self.shards.electors[0]
        if self._own_api:  # (an API client handed in may be the caller's for its own writes)
            fencing.install(api, self._fence_write)
        self.deletion_coster = DeletionCoster(
            KubePodAPI(api),
            selector=self._pod_selector,
            in_flight=self._pod_in_flight,
            target_fence=self._fence,
        )
        self.actuator = Actuator(
            BufferScaleAPI(api),
            on_send=self._on_send,
            on_applied=self._on_applied,
            target_fence=self._fence,
            prepare=self.deletion_coster,
        )
        self.reporter = Reporter(
            KubeWriter(api, group=crd.GROUP, version=crd.VERSION, plural=crd.PLURAL, kind=crd.KIND),
            actuator=self.actuator,
            owns=self.leads,
        )
        self.informers = controller_informers(
            api,
            namespace=cfg.namespace,
            on_scaler=self.watches.on_scaler,
            on_deployment=self.watches.on_deployment,
            on_nodes=self.watches.on_nodes,
        )
        self.consumer = EventConsumer(
            self._redis,
            group=f"{cfg.group_prefix}-{cfg.identity}",
            consumer=cfg.identity,
            keys=StreamKeys(cfg.stream_prefix),
            start_id="$",
            block_ms=cfg.consumer_block_ms,
            count=cfg.consumer_count,
            poll_interval_ms=cfg.consumer_poll_ms,
            notify=cfg.consumer_notify,
            full_read_s=cfg.consumer_full_read_s,
            discover_interval_s=0.5,
            stale_group_prefix=f"{cfg.group_prefix}-",
            stale_group_idle_s=cfg.stale_group_idle_s,
            # Sharded: read only the streams of the models whose shard we hold.
            model_filter=self._reads if cfg.shards > 1 else None,
        )
        consumer = self.consumer
        self.metrics.stream_notifications.set_function(lambda: 1.0 if consumer.notified else 0.0)
        self.ingest = Ingest(
            self.consumer,
            admit=self.gate.admit,
            store=self.store,
            changed=self._changed,
            metrics=self.metrics,
            telemetry=lambda: self.telemetry,
            chunk=cfg.ingest_chunk,
            ack_interval_s=cfg.ack_interval_s,
            urgent=self._urgent,
        )
        for informer in self.informers.values():
            self._spawn(informer.run(), f"informer {informer.name}")
        self._spawn(self.ingest.run(), "consume")
        self._spawn(self.shards.run(), "lease")
        self._spawn(
            self.scheduler.run_ticks(
                lambda: self.scalers.values(), after=self._sample, sleep=asyncio.sleep
            ),
            "tick",
        )
        self._spawn(
            self.reporter.run(
                Rotation(
                    self.scalers.values,
                    lambda: int(cfg.max_status_writes_per_s * cfg.status_interval_s),
                ),
                leading=lambda: self.is_leader,
                interval_s=cfg.status_interval_s,
                owns=self.leads,
            ),
            "status",
        )
        if cfg.http_port is not None:
            self._runner = web.AppRunner(build_app(self.metrics, self.health), shutdown_timeout=2.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, cfg.http_host, cfg.http_port)
            await site.start()
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            self.http_port = sockets[0].getsockname()[1] if sockets else cfg.http_port

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def stop(self, timeout: float = 3.0) -> None:
        """Flush pending writes while still leading (bounded), release the Lease, stop."""
        if self.consumer is not None:
            self.consumer.stop()
        if self.actuator is not None:
            # Before the release: once the Lease is given up, writes are fenced off.
            await self.actuator.close(timeout / 3)
        if self.shards is not None:
            with contextlib.suppress(Exception):
                await wait_for(self.shards.release(), timeout / 3)
        for scaler in self.scalers.values():
            scaler.gate.cancel()
        if self.reporter is not None:
            await self.reporter.close(timeout / 3)
        tasks = [*self._tasks, *self._short]
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=timeout) if tasks else None
        if self.consumer is not None:
            # Our group is ours alone: leave none behind to grow its lag forever.
            try:
                await wait_for(self.consumer.remove_group(), timeout / 3)
            except Exception as exc:
                log.warning("could not remove consumer group: %r", exc)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._own_redis and self._redis is not None:
            await close(self._redis)
        if self._own_api and self._api is not None:
            await self._api.close()

    @property
    def is_leader(self) -> bool:
        """True while we hold at least one shard (with one shard: we are the leader)."""
        return self.shards is not None and self.shards.any_held

    def leads(self, scaler: Scaler) -> bool:
        """True while we hold the Lease of `scaler`'s model's shard (now)."""
        if self.shards is None:
            return False
        if self.config.shards == 1:
            return self.shards.electors[0].is_leader
        return self.shards.leads(scaler.model)

    def evaluates(self, scaler: Scaler) -> bool:
        """Whether this replica decides for `scaler`: always with one shard (a standby keeps
        its decisions warm), else only for the shards it holds and has rebuilt."""
        if self.config.shards == 1:
            return True
        model = scaler.model
        return model is not None and self.gate.ready(self.gate.shard(model)) and self.leads(scaler)

    def _fence(self, target: ScaleTarget) -> float:
        """Seconds a write to `target` may still go out for (the Lease of its model's shard)."""
        if self.shards is None:
            return 0.0
        if self.config.shards == 1:
            return self.shards.electors[0].remaining()
        scaler = self.by_target.get(target)
        return self.shards.remaining_for(None if scaler is None else scaler.model)

    def _fence_write(self, method: str, path: str) -> float:
        """The transport's last check of a write (`controller.fencing`)."""
        what = fencing.written(path)
        if what is None:
            return math.inf
        if what.scale is not None:
            return self._fence(what.scale)
        if what.scaler is not None:
            scaler = self.scalers.get(what.scaler)
            if scaler is None:
                return math.inf  # not one we run (nothing of ours writes it)
            return math.inf if self.leads(scaler) else 0.0
        if what.pod is not None:
            namespace, pod = what.pod
            owners = [  # a Deployment's pods are named <deployment>-<hash>-<suffix>
                t
                for t in self.by_target
                if t.kind is TargetKind.DEPLOYMENT
                and t.namespace == namespace
                and pod.startswith(t.name + "-")
            ]
            if owners:
                return self._fence(max(owners, key=lambda t: len(t.name)))
        return math.inf

    def _live(self) -> tuple[bool, str]:
        dead = [t.get_name() for t in self._tasks if t.done()]
        return (not dead, f"stopped: {', '.join(dead)}" if dead else "ok")

    def _ready(self) -> tuple[bool, str]:
        waiting = (
            [
                n
                for n in ("inferencescalers", "deployments")
                if not self.informers[n].synced.is_set()
            ]
            if self.informers
            else ["startup"]
        )
        if waiting:
            return False, f"waiting for {', '.join(waiting)}"
        if self.ingest is None or not self.ingest.alive:
            return False, "event consumer not reading"
        return True, "leader" if self.is_leader else "standby"

    # --- inputs (controller.ingest, controller.watches) -----------------------------------------

    @property
    def scalers(self) -> dict[Key, Scaler]:
        """The InferenceScalers this controller runs (`controller.watches`)."""
        return self.watches.scalers

    @property
    def by_model(self) -> dict[str, list[Scaler]]:
        return self.watches.by_model

    @property
    def by_target(self) -> dict[ScaleTarget, Scaler]:
        return self.watches.by_target

    def _changed(self, model: str, now: float) -> None:
        """Events at `now` changed `model`'s state: ask for its scalers' evaluations."""
        scalers = self.by_model.get(model)
        if not scalers:
            return
        queue = self.store.models[model].queue_depth
        for scaler in scalers:
            self.scheduler.consumed(scaler, queue, now)

    def _urgent(self, model: str) -> bool:
        """Whether `model`'s queue grew since one of its scalers was last evaluated."""
        queue = self.store.models[model].queue_depth
        return any(s.gate.is_urgent(queue) for s in self.by_model.get(model, ()))

    def _observed(self, target: ScaleTarget, replicas: int) -> None:
        if self.actuator is not None:
            self.actuator.observed(target, replicas)

    def _sample(self, now: float) -> Iterator[None]:
        """The tick's sampling step for every model (`ModelState.sample`: capacity, silent
        gateways, the Ready replicas events are folded against), with the counts and the
        concurrency of its first scaler that has a target; other models only forget silent
        gateways. Pauses (yields) every `TICK_CHUNK` models, as the tick does."""
        for i, (name, model) in enumerate(list(self.store.models.items())):
            if i and i % TICK_CHUNK == 0:
                yield
            for scaler in self.by_model.get(name, ()):
                pspec = scaler.policy_spec
                counts = None if pspec is None else self.cluster_counts(scaler)
                if pspec is None or counts is None:
                    continue
                conc = model.concurrency(
                    fixed=pspec.concurrency_per_replica,
                    max_num_seqs=pspec.max_num_seqs,
                    tpot_slo_s=pspec.tpot_slo_s,
                )
                model.sample(
                    now, ready_replicas=counts.ready_replicas, concurrency_per_replica=conc
                )
                break
            else:
                model.forget_silent(now)

    def cluster_counts(self, scaler: Scaler) -> ClusterCounts | None:
        """Ready / starting replicas and nodes of a scaler's targets; None if the target is unknown."""
        deployments = self.informers.get("deployments")
        if deployments is None or not deployments.synced.is_set():
            return None
        return self.counts.counts(
            scaler,
            deployments=deployments.objects,
            nodes=self.informers["nodes"].objects.values(),
            pools=self.informers["nodepools"].objects,
        )

    # --- decide --------------------------------------------------------------------------------

    def request_eval(self, scaler: Scaler, *, trigger: float | None, urgent: bool = False) -> None:
        """Evaluate now or at the end of the rate-limit interval (`controller.scheduler`)."""
        self.scheduler.request(scaler, trigger=trigger, urgent=urgent)

    def evaluate(self, scaler: Scaler, now: float) -> Decision | None:
        """Run the policy for one scaler at `now`; actuate if leader and the decision is valid."""
        trigger = scaler.gate.begin(now)
        if scaler.spec is None or scaler.policy_spec is None:
            return None
        counts = self.cluster_counts(scaler)
        if counts is None:
            scaler.set_condition(
                "TargetFound",
                False,
                "DeploymentNotFound",
                f"deployment {scaler.spec.scale_target_ref.name} not found",
            )
            return None
        scaler.set_condition("TargetFound", True, "Found", "scale target found")
        dep_target = scaler.deployment()
        assert dep_target is not None
        assert self.actuator is not None
        current = self._current_replicas(dep_target)
        if scaler.state is None:
            scaler.state = PolicyState.initial(current)
        elif not self.leads(scaler) and current != scaler.state.replicas:
            scaler.state = scaler.state.with_replicas(current)
        model_state = self.store.model(scaler.spec.model)
        pspec = scaler.policy_spec
        obs = model_state.observe(
            now,
            cluster=counts,
            concurrency_per_replica=pspec.concurrency_per_replica,
            max_num_seqs=pspec.max_num_seqs,
            tpot_slo_s=pspec.tpot_slo_s,
        )
        decision, scaler.state = decide(obs, scaler.state, scaler.policy_spec, now)
        scaler.gate.done(obs.queue_depth)
        previous = scaler.decision
        scaler.decision, scaler.observation = decision, obs
        self.metrics.observe_decision(
            scaler.spec.model, obs, decision, plan.outcome(decision, current)
        )
        changed = previous is None or (previous.valid, previous.replicas, previous.nodes) != (
            decision.valid,
            decision.replicas,
            decision.nodes,
        )
        log_decision(
            scaler=scaler.name,
            model=scaler.spec.model,
            now=now,
            obs=obs,
            decision=decision,
            leader=self.leads(scaler),
            level=logging.INFO if changed else logging.DEBUG,
        )
        concurrency_condition(scaler, obs)
        scaler.set_condition(
            "DataAvailable",
            decision.valid,
            "Observed" if decision.valid else "CannotDecide",
            decision.describe() if not decision.valid else "events are current",
        )
        refusal = opt_in_refusal(
            scaler,
            deployments=self.informers["deployments"].objects,
            pools=self.informers["nodepools"].objects,
        )
        if refusal is None:
            scaler.set_condition("TargetAllowed", True, "OptedIn", "every scale target opted in")
        else:
            scaler.set_condition("TargetAllowed", False, "TargetNotOptedIn", refusal)
        if self.leads(scaler) and decision.valid and refusal is None:
            self._actuate(scaler, decision, current, trigger)
            if self.telemetry is not None:
                self.telemetry.decided(scaler, obs, decision, current)
        if self.on_decision is not None:
            self.on_decision(scaler, obs, decision)
        return decision

    def _current_replicas(self, target: ScaleTarget) -> int:
        assert self.actuator is not None
        pending = self.actuator.pending(target)
        if pending is not None:
            return pending
        applied = self.actuator.applied(target)
        if applied is not None:
            return applied
        dep = self.informers["deployments"].objects.get((target.namespace, target.name)) or {}
        return int((dep.get("spec") or {}).get("replicas") or 0)

    def _actuate(
        self, scaler: Scaler, decision: Decision, current: int, trigger: float | None
    ) -> None:
        assert self.actuator is not None
        assert scaler.spec is not None
        dep = scaler.deployment()
        assert dep is not None
        node_target = scaler.node_target()
        nodes: int | None = None
        if node_target is not None:
            cap = scaler.spec.capacity
            assert cap is not None
            nodes = plan.node_value(
                decision.nodes,
                decision.replicas,
                counts_nodes=node_target.kind is TargetKind.NODEPOOL,
                gpus_per_node=cap.gpus_per_node,
                gpus_per_replica=cap.gpus_per_replica,
            )
        steps = plan.plan(decision, current, nodes)
        reason = decision.describe()
        if self.ingest is not None:
            self.ingest.kicked = decision.replicas != current or self.ingest.kicked
        if steps.nodes_first:
            if node_target is not None and steps.nodes is not None:
                self.actuator.submit(node_target, steps.nodes, trigger_at=trigger, reason=reason)
            self.actuator.submit(dep, steps.replicas, trigger_at=trigger, reason=reason)
            return
        self.actuator.submit(dep, steps.replicas, trigger_at=trigger, reason=reason)
        if node_target is None or steps.nodes is None:
            return
        nodes_now = self.actuator.pending(node_target)
        if nodes_now is None:
            nodes_now = self.actuator.applied(node_target)
        if plan.nodes_may_follow(
            steps.nodes,
            nodes_now,
            pods_pending=self.actuator.pending(dep),
            pods_applied=self.actuator.applied(dep),
            replicas=steps.replicas,
        ):
            self.actuator.submit(
                node_target, steps.nodes, trigger_at=trigger, reason=decision.reason
            )

    def _shard_scalers(self, shard: int) -> list[Scaler]:
        if self.config.shards == 1:
            return list(self.scalers.values())
        return [
            s
            for s in self.scalers.values()
            if s.model is not None and self.gate.shard(s.model) == shard
        ]

    def _on_shard(self, shard: int, leader: bool) -> None:
        self.metrics.leader.set(1 if self.is_leader else 0)
        scalers = self._shard_scalers(shard)
        if not leader:
            if self.actuator is not None:
                self.actuator.forget_pending(
                    t for s in scalers for t in (s.deployment(), s.node_target()) if t is not None
                )
            self.gate.lost(shard)
            self._read_shards.discard(shard)
            if self.config.shards > 1 and self.consumer is not None:
                self.consumer.model_filter = self._reads  # its streams are no longer read
            return
        if self.config.shards == 1:
            self._background(self._took_over(scalers), "take over")  # warm state: decide now
            return
        models = {s.model for s in scalers if s.model is not None}
        self._read_shards.add(shard)
        if self.consumer is not None:
            self.consumer.model_filter = self._reads  # its streams are read from now on
            models |= set(self.consumer.all_models)
        self._background(self._rebuild(shard, models), f"rebuild shard {shard}")

    def _reads(self, model: str) -> bool:
        """Whether this (sharded) replica reads `model`'s stream: from gaining its shard to
        losing it (as `_on_shard` is told)."""
        return self.gate.shard(model) in self._read_shards

    def _background(self, coro: Any, name: str) -> None:
        """A short-lived task (kept referenced until done; not one of the long-lived tasks
        whose end makes the controller not live)."""
        task = asyncio.create_task(coro, name=name)
        self._short.add(task)
        task.add_done_callback(self._short.discard)

    async def _rebuild(self, shard: int, models: set[str]) -> None:
        if await self.gate.rebuild(shard, models):
            await self._took_over(self._shard_scalers(shard))

    async def _took_over(self, scalers: list[Scaler]) -> None:
        """Decide at once for the scalers just taken over, a chunk at a time (with many
        models, one pass over all of them would hold events and urgent evaluations back)."""
        for i, scaler in enumerate(scalers):
            if i and i % TICK_CHUNK == 0:
                await asyncio.sleep(0)
            if self.scalers.get(scaler.key) is not scaler:
                continue  # deleted meanwhile
            target = scaler.deployment()
            if scaler.state is not None and target is not None:
                # Act on what the cluster has, not on what this standby decided but never wrote.
                scaler.state = scaler.state.with_replicas(self._current_replicas(target))
            scaler.gate.reset()
            self.request_eval(scaler, trigger=None)

    async def _replay(self, model: str, since_ms: int) -> list[Event]:
        assert self._redis is not None
        return await read_since(self._redis, StreamKeys(self.config.stream_prefix), model, since_ms)

    def _pod_selector(self, target: ScaleTarget) -> str | None:
        """The label selector of a model Deployment's pods (None for other targets)."""
        scaler = self.by_target.get(target)
        if scaler is None or scaler.deployment() != target:
            return None
        dep = self.informers["deployments"].objects.get((target.namespace, target.name)) or {}
        return selector_string((dep.get("spec") or {}).get("selector"))

    def _pod_in_flight(self, target: ScaleTarget) -> dict[str, int] | None:
        """Requests in flight per pod of a model Deployment's model (None for other targets)."""
        scaler = self.by_target.get(target)
        if scaler is None or scaler.model is None or scaler.deployment() != target:
            return None
        model = self.store.models.get(scaler.model)
        return {} if model is None else model.pod_in_flight()

    # --- outputs -------------------------------------------------------------------------------

    def _on_send(self, target: ScaleTarget, replicas: int, trigger_at: float | None) -> None:
        self.metrics.patches.labels(target.kind.value).inc()
        scaler = self.by_target.get(target)
        if trigger_at is None or scaler is None or scaler.model is None or self.actuator is None:
            return
        if target == scaler.deployment():
            before = self.actuator.applied(target)
            direction = "up" if before is None or replicas > before else "down"
            latency = asyncio.get_running_loop().time() - trigger_at
            self.metrics.decision_latency.labels(scaler.model, direction).observe(latency)

    def _on_applied(
        self, target: ScaleTarget, previous: int | None, value: int, reason: str
    ) -> None:
        scaler = self.by_target.get(target)
        if scaler is not None and self.reporter is not None:
            self.reporter.scaled(scaler, target, previous, value, reason)

    async def write_status(self, scaler: Scaler) -> bool:
        """PATCH one scaler's status now if it changed (tests; the loop throttles it)."""
        return False if self.reporter is None else await self.reporter.write_status(scaler)


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _loop_call_at(when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_at(when, callback)
