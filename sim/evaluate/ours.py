"""`ours`: the controller's own state and policy, fed with the gateway's events as they happen.

Nothing is re-implemented: each gateway milestone becomes the same `surgescale.events.Event` the
live gateway emits (enqueue, dispatch, first_token with `ttft_ms`, complete with `queue_ms`,
`e2e_ms`, `tpot_ms`, and a `snapshot` of queue depth and in-flight every `snapshot_s`), folded
into `controller.state.ModelState` at once (events at once: the Redis hop is a millisecond and is
left out), and `controller.policy.decide` runs unchanged on `ModelState.observe(...)`.

When the policy runs is the live controller's own scheduling, `controller.schedule.EvalGate`,
driven by the virtual clock: every event asks for an evaluation, rate-limited to one per
`min_interval_s` with one trailing evaluation, a queue that grew since the last evaluation goes
at once (the urgent path), and a periodic `tick_s` asks too (scale-down, scale-to-zero).
Decisions act at once on the cluster model: replicas on the Deployment and nodes on the static
NodePool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from controller.policy import Billing, PolicySpec, PolicyState, decide, nodes_for, replicas_on
from controller.schedule import EvalGate
from controller.state import ClusterCounts, ModelState, StateSettings
from gateway.admission import DispatchOrder
from sim.evaluate.cluster import NodeMode
from sim.evaluate.ingress import Request
from surgescale.events import Event, EventType

if TYPE_CHECKING:
    from sim.evaluate.world import Scenario, World

_GW = "sim-gateway"


@dataclass(frozen=True, slots=True, kw_only=True)
class OursConfig:
    """Cadence of the controller loop in the evaluator."""

    min_interval_s: float = 0.05
    tick_s: float = 1.0
    snapshot_s: float = 1.0
    scale_down_delay_s: float = 300.0
    scale_down_period_s: float = 30.0
    scale_to_zero_idle_s: float | None = 600.0
    billing: Billing = Billing.NODE
    """What the cloud bills (the InferenceScaler's `capacity.billing`)."""


def policy_spec(scenario: Scenario, config: OursConfig) -> PolicySpec:
    """The InferenceScaler spec the scenario implies."""
    return PolicySpec(
        min_replicas=scenario.min_replicas,
        max_replicas=scenario.max_replicas,
        ttft_slo_s=scenario.slo_ttft_s,
        tpot_slo_s=scenario.slo.tpot_s,
        concurrency_per_replica=scenario.pod_concurrency,
        gpus_per_replica=scenario.gpus_per_replica,
        gpus_per_node=scenario.gpus_per_node,
        cold_start_s=scenario.model_load_s,
        node_boot_s=scenario.node_boot_s,
        scale_down_delay_s=config.scale_down_delay_s,
        scale_down_period_s=config.scale_down_period_s,
        scale_to_zero_idle_s=config.scale_to_zero_idle_s,
        billing=config.billing,
    )


class _Timer:
    """A cancellable callback on the virtual clock (the clock's queue never deletes)."""

    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self, _: object) -> None:
        if not self.cancelled:
            self.callback()


def ours_fifo() -> Ours:
    """`ours` with the gateway's queue in plain arrival order (no deadline-aware dispatch)."""
    return Ours(name="ours-fifo", dispatch_order=DispatchOrder.FIFO)


class Ours:
    """The surgescale controller in virtual time."""

    node_mode = NodeMode.STATIC

    def __init__(
        self,
        config: OursConfig | None = None,
        *,
        name: str = "ours",
        dispatch_order: DispatchOrder | None = None,
    ) -> None:
        from sim.evaluate.world import Ingress

        self.name = name
        self.dispatch_order = dispatch_order
        """None: the scenario's (deadline-aware); `ours-fifo` uses plain arrival order."""
        self.ingress = Ingress.GATEWAY
        self.config = config or OursConfig()
        self.decisions = 0
        self.reasons: dict[str, int] = {}

    def initial(self, scenario: Scenario) -> tuple[int, int | None]:
        """The steady state ours keeps for the scenario's initial replicas: under node billing
        the node(s) they need, filled (a replica on a node that is billed anyway is free)."""
        spec = policy_spec(scenario, self.config)
        if spec.billing is not Billing.NODE or scenario.initial_replicas <= 0:
            return scenario.initial_replicas, None
        nodes = nodes_for(scenario.initial_replicas, spec)
        filled = min(max(replicas_on(nodes, spec), scenario.initial_replicas), spec.max_replicas)
        return filled, nodes

    def attach(self, world: World) -> None:
        self.world = world
        self.clock = world.clock
        self.spec = policy_spec(world.scenario, self.config)
        self.model = world.scenario.model
        settings = StateSettings()
        self.state = ModelState(self.model, settings)
        replicas = world.cluster.desired_replicas
        self.policy_state = PolicyState.initial(replicas, world.cluster.desired_nodes)
        self.gate = EvalGate()
        self._seq = 0
        world.gateway.listeners.append(self)
        self.clock.every(self.config.snapshot_s, self._snapshot, first=0.0)
        self.clock.every(self.config.tick_s, self._tick)

    # ---- events (as the live gateway emits them) ----------------------------------------------

    def _event(self, kind: EventType, req: Request | None, now: float, **fields: Any) -> Event:
        return Event(
            type=kind,
            model=self.model,
            gateway=_GW,
            ts_ms=int(now * 1000),
            request_id="" if req is None else req.id,
            **fields,
        )

    def on_enqueue(self, req: Request, now: float) -> None:
        ev = self._event(EventType.ENQUEUE, req, now, prompt_tokens=req.prompt_tokens)
        self.state.apply(ev, now)
        self._material()

    def on_dispatch(self, req: Request, now: float) -> None:
        queue_ms = (now - req.arrival) * 1000.0
        ev = self._event(EventType.DISPATCH, req, now, pod=req.pod, queue_ms=queue_ms)
        self.state.apply(ev, now)
        self._material()

    def on_first_token(self, req: Request, now: float) -> None:
        ev = self._event(EventType.FIRST_TOKEN, req, now, ttft_ms=(now - req.arrival) * 1000.0)
        self.state.apply(ev, now)
        self._material()

    def on_complete(self, req: Request, now: float) -> None:
        tpot = req.tpot
        queue_s = (req.dispatch if req.dispatch is not None else req.arrival) - req.arrival
        ev = self._event(
            EventType.COMPLETE,
            req,
            now,
            status=200,
            output_tokens=req.output_tokens,
            queue_ms=queue_s * 1000.0,
            ttft_ms=None if req.ttft is None else req.ttft * 1000.0,
            tpot_ms=None if tpot is None else tpot * 1000.0,
            e2e_ms=(now - req.arrival) * 1000.0,
        )
        self.state.apply(ev, now)
        self._material()

    def _snapshot(self, _: object) -> None:
        self._seq += 1
        gw = self.world.gateway
        ev = self._event(
            EventType.SNAPSHOT,
            None,
            self.clock.now,
            queue_depth=gw.queue_depth,
            in_flight=gw.in_flight,
            seq=self._seq,
            interval_ms=int(self.config.snapshot_s * 1000),
        )
        self.state.apply(ev, self.clock.now)
        self._material()

    # ---- the loop (`controller.schedule`, as `controller.loop` drives it) ----------------------

    def _call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(callback)
        self.clock.at(when, timer.fire)
        return timer

    def _request(self, *, trigger: float | None, urgent: bool = False) -> None:
        if self.gate.request(
            now=self.clock.now,
            trigger=trigger,
            urgent=urgent,
            min_interval_s=self.config.min_interval_s,
            call_at=self._call_at,
            deferred=self._deferred,
        ):
            self._evaluate()

    def _material(self) -> None:
        """Every event the controller consumes asks for an evaluation (`Controller._consume`)."""
        self._request(trigger=self.clock.now, urgent=self.gate.is_urgent(self.state.queue_depth))

    def _deferred(self) -> None:
        self.gate.fired()
        self._evaluate()

    def _tick(self, _: object) -> None:
        self._request(trigger=None)
        self.state.forget_silent(self.clock.now)

    def _evaluate(self) -> None:
        now = self.clock.now
        self.gate.begin(now)
        cluster = self.world.cluster
        ready, starting = cluster.counts()
        nodes_ready, nodes_booting = cluster.node_counts()
        counts = ClusterCounts(
            ready_replicas=ready,
            starting_replicas=starting,
            ready_nodes=nodes_ready,
            starting_nodes=nodes_booting,
        )
        obs = self.state.observe(
            now,
            cluster=counts,
            concurrency_per_replica=self.spec.concurrency_per_replica,
            max_num_seqs=self.spec.max_num_seqs,
            tpot_slo_s=self.spec.tpot_slo_s,
        )
        decision, self.policy_state = decide(obs, self.policy_state, self.spec, now)
        self.gate.done(obs.queue_depth)
        self.decisions += 1
        if not decision.valid:
            key = decision.reason.value
            self.reasons[key] = self.reasons.get(key, 0) + 1
            return
        if decision.replicas != cluster.desired_replicas or decision.nodes != cluster.desired_nodes:
            cluster.scale(decision.replicas, decision.nodes)
