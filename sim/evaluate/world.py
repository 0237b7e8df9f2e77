"""One simulated run: a scenario, the cluster, the gateway, the pods and one autoscaler.

`Scenario` is the shared description of a run (trace, SLO, cold start, node boot, shapes): the
evaluator runs it in virtual time here, and the live demo can run the same object in real time for
the cross-check. `World` wires the clock, the cluster model, the admission model and the recorder;
an `Autoscaler` attaches its own observation feed and ticks to the world and acts only through
`world.cluster.scale(...)`, exactly one writer as in the live controller.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from gateway.admission import DispatchOrder, DispatchPolicy
from gateway.settings import ModelSlo
from sim.evaluate.clock import Clock
from sim.evaluate.cluster import Cluster, ClusterConfig, NodeMode
from sim.evaluate.ingress import Gateway, Request
from sim.evaluate.pods import EngineFactory, Pod
from sim.evaluate.trace import TraceRequest
from surgescale.slo import Slo


class Ingress(enum.StrEnum):
    """How requests reach the pods."""

    GATEWAY = "gateway"
    """surgescale's gateway (`gateway.admission`; Knative's activator is modelled by the same
    queue): per-pod cap, least outstanding."""
    UNCAPPED = "uncapped-gateway"
    """The same admission core with no per-pod cap (the demo's baseline arm: requests go at once
    to the least-loaded pod and queue inside vLLM)."""
    SERVICE = "service"
    """A plain Kubernetes Service: a random ready pod at once, no cap (vLLM queues internally)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """Everything that defines a run except the autoscaler."""

    name: str
    requests: tuple[TraceRequest, ...]
    slo: Slo = field(default_factory=Slo)
    """The model's SLO: each request's TTFT deadline and the TPOT objective (`surgescale.slo`)."""
    dispatch: DispatchPolicy = field(default_factory=lambda: ModelSlo().policy())
    """How the gateway's queue hands out slots: the live gateway's default (deadline-aware)."""
    model_load_s: float = 60.0
    node_boot_s: float = 120.0
    gpus_per_node: int = 8
    gpus_per_replica: int = 1
    pod_concurrency: int = 32
    """The gateway's per-pod concurrency cap (and Knative's containerConcurrency); the live
    gateway's default is the engine's `max_num_seqs` (256)."""
    fixed_concurrency: bool = True
    """True: ours' InferenceScaler fixes `concurrencyPerReplica` at `pod_concurrency`; False:
    it leaves it unset, as the live default, so the policy learns the per-replica concurrency
    from the TPOT objective (`controller.concurrency`; `max_num_seqs` without one)."""
    profile: str = "llama3-8b-h200"
    model: str = "llama3-8b"
    min_replicas: int = 0
    """For the autoscalers that can scale to zero (ours, KPA); HPA-based ones keep >= 1."""
    max_replicas: int = 16
    initial_replicas: int = 1
    """Ready replicas of the reactive policies at t = 0 (the CLI's default: what the oracle
    needs for the first bucket, i.e. a system already in steady state when the trace starts)."""
    initial_nodes: int = 0
    """Ready nodes at t = 0 for a policy that sets a static NodePool (ours): at least this many
    (the oracle's own at t = 0 with the default start); 0 = the nodes its replicas need."""
    seed: int = 0
    tail_s: float = 60.0
    """Accounting continues this long after the last arrival (or until the last completion)."""
    max_drain_s: float = 1800.0
    """Give up on requests still unfinished this long after the last arrival."""
    sample_s: float = 5.0
    """Period of the recorded time series (plots, replica curves)."""

    @property
    def slo_ttft_s(self) -> float:
        """The TTFT objective's base (the policy's `ttft_slo_s`, the KEDA threshold)."""
        return self.slo.ttft_base_s

    @property
    def duration_s(self) -> float:
        return self.requests[-1].arrival_s if self.requests else 0.0

    def cluster_config(self) -> ClusterConfig:
        return ClusterConfig(
            model_load_s=self.model_load_s,
            node_boot_s=self.node_boot_s,
            gpus_per_node=self.gpus_per_node,
            gpus_per_replica=self.gpus_per_replica,
        )


@dataclass(slots=True)
class Sample:
    """The cluster and the queue at time `t` (one row of the recorded time series)."""

    t: float
    desired: int
    ready: int
    starting: int
    nodes_ready: int
    nodes_booting: int
    queue: int
    in_flight: int
    arrivals: int
    """Arrivals since the previous sample."""


@dataclass(slots=True)
class RunResult:
    """What one autoscaler did on one scenario."""

    policy: str
    scenario: Scenario
    requests: list[Request]
    samples: list[Sample]
    replica_changes: list[tuple[float, int]]
    ready_times: list[float]
    gpu_seconds: float
    node_seconds: float
    scale_events: int
    end_s: float
    wall_s: float
    events: int
    notes: dict[str, float] = field(default_factory=dict)


class Autoscaler(Protocol):
    """A policy under test, with its own observation feed and cadence."""

    name: str
    node_mode: NodeMode
    ingress: Ingress

    def initial(self, scenario: Scenario) -> tuple[int, int | None]:
        """(replicas, nodes or None) Ready at t = 0."""
        ...

    def attach(self, world: World) -> None:
        """Register listeners and ticks; act through `world.cluster.scale`."""
        ...


class _Recorder:
    """Keeps every request record and counts arrivals between samples."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.arrivals = 0

    def on_enqueue(self, req: Request, now: float) -> None:
        self.requests.append(req)
        self.arrivals += 1

    def on_dispatch(self, req: Request, now: float) -> None:
        pass

    def on_first_token(self, req: Request, now: float) -> None:
        pass

    def on_complete(self, req: Request, now: float) -> None:
        pass


def _dispatch(scenario: Scenario, autoscaler: Autoscaler) -> DispatchPolicy:
    """The scenario's dispatch policy, or plain FIFO for a policy variant that asks for it
    (`dispatch_order = DispatchOrder.FIFO`, e.g. `ours-fifo`). The prefill gate only for a
    policy that runs surgescale's gateway as it ships (`prefill_gate = True`: ours); the
    reference arms (oracle, static-peak, KPA's activator) and the uncapped/Service arms keep
    the admission core without it, as in the rounds before it was live, so the references and
    the oracle's t = 0 fleet every policy starts from stay comparable."""
    policy = scenario.dispatch
    order = getattr(autoscaler, "dispatch_order", None)
    if isinstance(order, DispatchOrder) and order is not policy.order:
        policy = replace(policy, order=order)
    gated = autoscaler.ingress is Ingress.GATEWAY and getattr(autoscaler, "prefill_gate", False)
    if not gated and policy.prefill_gated:
        policy = replace(policy, prefill_limit=None, prefill_token_budget=None)
    return policy


class World:
    """The simulated system for one run."""

    def __init__(
        self, scenario: Scenario, *, engine_factory: EngineFactory, autoscaler: Autoscaler
    ) -> None:
        self.scenario = scenario
        self.clock = Clock()
        self.rng = random.Random(scenario.seed)
        cap = scenario.pod_concurrency if autoscaler.ingress is Ingress.GATEWAY else 1 << 30
        self.gateway = Gateway(
            clock=self.clock,
            pod_concurrency=cap,
            slo=scenario.slo,
            dispatch=_dispatch(scenario, autoscaler),
            model=scenario.model,
            rng=self.rng if autoscaler.ingress is Ingress.SERVICE else None,
        )
        self.cluster = Cluster(
            clock=self.clock,
            config=scenario.cluster_config(),
            mode=autoscaler.node_mode,
            engine_factory=engine_factory,
            on_pod_ready=self._pod_ready,
        )
        self.cluster.on_pod_end = self.gateway.pod_gone
        self.gateway.drained_callback = self.cluster.pod_drained
        self.recorder = _Recorder()
        self.gateway.listeners.append(self.recorder)
        self.autoscaler = autoscaler
        self.samples: list[Sample] = []
        self.ready_times: list[float] = []
        self.pod_ready_hooks: list[Callable[[Pod], None]] = []
        self.stop_requested = False
        """Set by an observer that has seen enough (the oracle's trial runs); ends the run."""

    def _pod_ready(self, pod: Pod) -> None:
        self.ready_times.append(self.clock.now)
        self.gateway.pod_ready(pod)
        for hook in self.pod_ready_hooks:
            hook(pod)

    def _arrive(self, index: int) -> None:
        req = self.scenario.requests[index]
        now = self.clock.now
        deadline = self.scenario.slo.deadline(now, req.prompt_tokens)
        self.gateway.arrive(
            Request(f"r{index}", now, req.prompt_tokens, req.output_tokens, deadline)
        )
        nxt = index + 1
        if nxt < len(self.scenario.requests):
            self.clock.at(self.scenario.requests[nxt].arrival_s, self._arrive, nxt)

    def _sample(self, _: object) -> None:
        ready, starting = self.cluster.counts()
        nodes_ready, nodes_booting = self.cluster.node_counts()
        self.samples.append(
            Sample(
                t=self.clock.now,
                desired=self.cluster.desired_replicas,
                ready=ready,
                starting=starting,
                nodes_ready=nodes_ready,
                nodes_booting=nodes_booting,
                queue=self.gateway.queue_depth,
                in_flight=self.gateway.in_flight,
                arrivals=self.recorder.arrivals,
            )
        )
        self.recorder.arrivals = 0

    def _stopped(self) -> bool:
        return self.stop_requested

    def run(self) -> RunResult:
        """Replay the scenario to its end and return what happened."""
        started = time.perf_counter()
        sc = self.scenario
        replicas, nodes = self.autoscaler.initial(sc)
        self.cluster.warm_start(replicas, nodes)
        for pod in self.cluster.ready_pods():
            self._pod_ready(pod)
        self.ready_times.clear()
        self.autoscaler.attach(self)
        if sc.requests:
            self.clock.at(sc.requests[0].arrival_s, self._arrive, 0)
        self.clock.every(sc.sample_s, self._sample, first=0.0)
        horizon = sc.duration_s + sc.tail_s
        stop = self._stopped
        self.clock.run(horizon, stop)
        total = len(sc.requests)
        give_up = sc.duration_s + sc.max_drain_s
        while self.gateway.completed < total and self.clock.now < give_up and not stop():
            self.clock.run(min(self.clock.now + 30.0, give_up), stop)
        finishes = [r.finish for r in self.recorder.requests if r.finish is not None]
        end = max([horizon, *finishes]) if total == self.gateway.completed else self.clock.now
        return RunResult(
            policy=self.autoscaler.name,
            scenario=sc,
            requests=self.recorder.requests,
            samples=self.samples,
            replica_changes=list(self.cluster.replica_changes),
            ready_times=list(self.ready_times),
            gpu_seconds=self.cluster.gpu_seconds(end),
            node_seconds=self.cluster.node_seconds(end),
            scale_events=self.cluster.scale_events,
            end_s=end,
            wall_s=time.perf_counter() - started,
            events=self.clock.events,
        )
