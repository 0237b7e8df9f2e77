"""`ours`: the controller's own state and policy, fed with the gateway's events as they happen.

Nothing is re-implemented: each gateway milestone becomes the same `surgescale.events.Event` the
live gateway emits (enqueue, dispatch, first_token with `ttft_ms`, complete with `queue_ms`,
`e2e_ms`, `tpot_ms`, and a `snapshot` of queue depth and in-flight every `snapshot_s`), folded
into `controller.state.ModelState` at once (events at once: the Redis hop is a millisecond and is
left out), and `controller.policy.decide` runs unchanged on `ModelState.observe(...)`.

When the policy runs is the live controller's own scheduler, `controller.scheduler.EvalScheduler`,
given the virtual clock and its timers instead of the event loop's: every event asks for an
evaluation, rate-limited to one per `min_interval_s` with one trailing evaluation, a queue that
grew since the last evaluation goes at once (the urgent path), and the periodic `tick_s` round
asks too (scale-down, scale-to-zero) and then takes the state's sample
(`controller.state.ModelState.sample`: capacity, silent gateways), as the live tick does.
Decisions act at once on the cluster model: replicas on the Deployment and nodes on the static
NodePool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from controller.policy import Billing, PolicySpec, PolicyState, decide, nodes_for, replicas_on
from controller.schedule import EvalGate
from controller.scheduler import EvalScheduler
from controller.state import ClusterCounts, ModelState, StateSettings
from gateway.admission import DispatchOrder
from gateway.podcap import applied_cap
from sim.engine import get_profile
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
    max_evals_per_s: float = 250.0
    """The evaluation budget (`controller.fleet`); with one model it leaves `min_interval_s`."""
    tick_s: float = 1.0
    snapshot_s: float = 1.0
    scale_down_delay_s: float = 300.0
    scale_down_period_s: float = 30.0
    scale_to_zero_idle_s: float | None = 600.0
    billing: Billing = Billing.NODE
    """What the cloud bills (the InferenceScaler's `capacity.billing`)."""
    pod_cap_floor: int | None = None
    """None: the gateway caps each pod at the scenario's `pod_concurrency` (the engine's
    `max_num_seqs`); N: at the learned concurrency the controller would publish, refreshed on
    each sample, never below N (`gateway.podcap.applied_cap`)."""
    prefill_limit: int | None = None
    """The gateway's prefill gate (`DispatchPolicy.prefill_limit`): None keeps the scenario's
    (the live gateway's default); K sets it (0: no gate)."""
    prefill_token_budget: int | None = None
    """Experiment (`DispatchPolicy.prefill_token_budget`): None keeps the scenario's."""
    prefill_min_decoding: int | None = None
    """Experiment (`DispatchPolicy.prefill_min_decoding`): None keeps the scenario's."""
    state: StateSettings = field(default_factory=StateSettings)
    """The controller's measurement settings (its command line's, e.g. `--long-window-s`)."""


def policy_spec(scenario: Scenario, config: OursConfig) -> PolicySpec:
    """The InferenceScaler spec the scenario implies."""
    return PolicySpec(
        min_replicas=scenario.min_replicas,
        max_replicas=scenario.max_replicas,
        ttft_slo_s=scenario.slo_ttft_s,
        tpot_slo_s=scenario.slo.tpot_s,
        concurrency_per_replica=scenario.pod_concurrency if scenario.fixed_concurrency else None,
        max_num_seqs=get_profile(scenario.profile).max_num_seqs,
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


def ours_variant(name: str, **config: Any) -> Callable[[], Ours]:
    """A named `ours` with some `OursConfig` fields changed (evaluator experiments)."""
    return lambda: Ours(OursConfig(**config), name=name)


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
        self.prefill_gate = True
        """It runs the gateway's prefill gate as configured (`world._dispatch`)."""
        self.config = config or OursConfig()
        self.decisions = 0
        self.reasons: dict[str, int] = {}

    def initial(self, scenario: Scenario) -> tuple[int, int | None]:
        """The steady state ours keeps for the scenario's initial replicas: under node billing
        the node(s) they need, filled (a replica on a node that is billed anyway is free)."""
        spec = policy_spec(scenario, self.config)
        if spec.billing is not Billing.NODE or scenario.initial_replicas <= 0:
            return scenario.initial_replicas, None
        nodes = max(nodes_for(scenario.initial_replicas, spec), scenario.initial_nodes)
        filled = min(max(replicas_on(nodes, spec), scenario.initial_replicas), spec.max_replicas)
        return filled, nodes

    def attach(self, world: World) -> None:
        self.world = world
        self.clock = world.clock
        self.spec = policy_spec(world.scenario, self.config)
        self.model = world.scenario.model
        self.state = ModelState(self.model, self.config.state)
        replicas = world.cluster.desired_replicas
        self.policy_state = PolicyState.initial(replicas, world.cluster.desired_nodes)
        self.gate = EvalGate()
        self.scheduler: EvalScheduler[Ours] = EvalScheduler(
            clock=lambda: self.clock.now,
            call_at=self._call_at,
            evaluate=lambda _, now: self._evaluate(now),
            min_interval_s=self.config.min_interval_s,
            max_evals_per_s=self.config.max_evals_per_s,
            tick_s=self.config.tick_s,
        )
        self.scheduler.resize(1)  # one InferenceScaler, as the live controller's watches count
        self._seq = 0
        world.gateway.listeners.append(self)
        gate = {
            name: value
            for name in ("prefill_limit", "prefill_token_budget", "prefill_min_decoding")
            if (value := getattr(self.config, name)) is not None
        }
        if gate:
            world.gateway.set_dispatch(replace(world.gateway.admission.policy, **gate))
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
            pod_cap=gw.pod_concurrency,
        )
        self.state.apply(ev, self.clock.now)
        self._material()

    # ---- the loop (`controller.scheduler`, as `controller.loop` drives it) ---------------------

    def _call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(callback)
        self.clock.at(when, timer.fire)
        return timer

    def _material(self) -> None:
        """Every event the controller consumes asks for an evaluation (`Controller._changed`)."""
        self.scheduler.consumed(self, self.state.queue_depth, self.clock.now)

    def _tick(self, _: object) -> None:
        """The live tick's round (`EvalScheduler.run_ticks`), on the virtual clock."""
        for _pause in self.scheduler.tick_round([self], after=self._sample):
            pass

    def _sample(self, now: float) -> tuple[()]:
        """The state's sampling step, with the live controller's inputs (`Controller._sample`;
        one model: no pause)."""
        spec = self.spec
        conc = self.state.concurrency(
            fixed=spec.concurrency_per_replica,
            max_num_seqs=spec.max_num_seqs,
            tpot_slo_s=spec.tpot_slo_s,
        )
        ready, _ = self.world.cluster.counts()
        self.state.sample(now, ready_replicas=ready, concurrency_per_replica=conc)
        floor = self.config.pod_cap_floor
        if floor is not None:
            self.world.gateway.set_pod_cap(
                applied_cap(
                    published=conc, configured=self.world.scenario.pod_concurrency, floor=floor
                )
            )
        return ()

    def _evaluate(self, now: float) -> None:
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
