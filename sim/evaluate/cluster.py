"""The cluster model: GPU nodes, pods bound to them, cold starts, node boots, Karpenter.

A Deployment's desired replica count becomes pods: `Pending` until a Ready node has a free GPU,
then `Loading` for the model-load time (the GPU is held — and billed — from binding), then
`Ready` (the gateway routes to it), and on scale-down `Terminating`: no new requests, in-flight
ones finish, then the GPU is released. Victims are chosen as the ReplicaSet controller does in
spirit: pending pods first, then loading ones (newest first), then ready pods with the fewest
requests outstanding.

Nodes come two ways:

- `static`: the policy sets the NodePool's node count (our controller scales a static NodePool);
  shrinking removes booting nodes first, then empty ready ones, and waits for nodes to empty;
- `karpenter`: dynamic provisioning for Pending pods, as Karpenter does it: a batch opens at the
  first pending pod and closes after `batch_idle_s` without a new one (at most `batch_max_s`),
  then launches enough nodes for the pods no Ready or booting node will take; empty nodes are
  consolidated after `consolidate_after_s` (Karpenter's default is 0 s). `warm` replicas' worth
  of room is kept besides (a CapacityBuffer's chunks, or placeholder pods): counted as pending
  when nodes are launched, kept from consolidation, refilled when pods take it; with placeholder
  pods (`warm_preempt_s` set) a pod that takes their room starts loading only after they are
  preempted (`sim.evaluate.capacity`).

Nodes boot in `node_boot_s`; the simulated pods themselves live in `sim.evaluate.pods`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.pods import node_first_costs
from sim.evaluate.clock import Clock
from sim.evaluate.pods import EngineFactory, Pod, PodState


class NodeMode(enum.StrEnum):
    """Who decides the number of GPU nodes."""

    STATIC = "static"
    KARPENTER = "karpenter"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """Timings and shapes of the simulated cluster."""

    model_load_s: float = 60.0
    node_boot_s: float = 120.0
    gpus_per_node: int = 8
    gpus_per_replica: int = 1
    batch_idle_s: float = 1.0
    batch_max_s: float = 10.0
    consolidate_after_s: float = 0.0
    max_nodes: int = 64


class Node:
    """One GPU node: booting until `ready_at`, then schedulable until it is terminated."""

    __slots__ = ("end_at", "gpus", "launched_at", "name", "pods", "ready", "ready_at")

    def __init__(self, name: str, gpus: int, launched_at: float, ready_at: float) -> None:
        self.name = name
        self.gpus = gpus
        self.launched_at = launched_at
        self.ready_at = ready_at
        self.ready = False
        self.end_at: float | None = None
        self.pods: set[Pod] = set()

    def free(self, per_pod: int) -> int:
        return self.gpus - per_pod * len(self.pods)


class Cluster:
    """Pods and nodes of one model's Deployment and NodePool, in virtual time."""

    def __init__(
        self,
        *,
        clock: Clock,
        config: ClusterConfig,
        mode: NodeMode,
        engine_factory: EngineFactory,
        on_pod_ready: Callable[[Pod], None],
    ) -> None:
        self.clock = clock
        self.config = config
        self.mode = mode
        self._engine_factory = engine_factory
        self._on_pod_ready = on_pod_ready
        self.pods: list[Pod] = []
        """Every pod ever created, in creation order (ended ones included, for accounting)."""
        self.active: list[Pod] = []
        """Pods not ended yet."""
        self.nodes: list[Node] = []
        self.desired_replicas = 0
        self.desired_nodes = 0
        self.scale_events = 0
        self.replica_changes: list[tuple[float, int]] = []
        self._seq = 0
        self._batch_open_at: float | None = None
        self._batch_last_add: float = 0.0
        self._batch_gen = 0
        self.on_pod_end: Callable[[Pod], None] | None = None
        self.warm = 0
        """Replicas' worth of room Karpenter keeps free (buffer chunks or placeholder pods)."""
        self.warm_preempt_s: float | None = None
        """Placeholder pods: a pod taking their room waits this long (None: a buffer, no wait)."""
        self._held = 0
        """Placeholder pods bound on Ready nodes (room a model pod must preempt to use)."""

    # ---- views -------------------------------------------------------------------------------

    def live_pods(self) -> list[Pod]:
        """Pods that count toward the Deployment (not terminating, not ended)."""
        return [p for p in self.active if p.state in _COUNTED]

    def ready_pods(self) -> list[Pod]:
        return [p for p in self.active if p.state is PodState.READY]

    def counts(self) -> tuple[int, int]:
        """(ready, starting) replicas; starting = created but not Ready (pending or loading)."""
        ready = starting = 0
        for p in self.active:
            if p.state is PodState.READY:
                ready += 1
            elif p.state is PodState.PENDING or p.state is PodState.LOADING:
                starting += 1
        return ready, starting

    def node_counts(self) -> tuple[int, int]:
        """(ready, booting) nodes."""
        ready = booting = 0
        for n in self.nodes:
            if n.end_at is None:
                if n.ready:
                    ready += 1
                else:
                    booting += 1
        return ready, booting

    # ---- setup -------------------------------------------------------------------------------

    def warm_start(self, replicas: int, nodes: int | None = None) -> None:
        """Begin with `replicas` Ready pods on enough Ready nodes (`nodes` at least)."""
        per_node = self.config.gpus_per_node // max(self.config.gpus_per_replica, 1)
        need = math.ceil(replicas / max(per_node, 1)) if replicas > 0 else 0
        for _ in range(max(need, nodes or 0)):
            node = self._launch_node(booted=True)
            node.ready = True
        self.desired_nodes = max(need, nodes or 0)
        self.desired_replicas = replicas
        for _ in range(replicas):
            pod = self._new_pod()
            self._bind(pod, self._node_with_room())
            pod.state = PodState.READY
            pod.ready_at = self.clock.now
        self.replica_changes.append((self.clock.now, replicas))

    # ---- actuation ---------------------------------------------------------------------------

    def scale(self, replicas: int, nodes: int | None = None) -> None:
        """Set the Deployment's replicas (and, in static mode, the NodePool's nodes)."""
        replicas = max(replicas, 0)
        if self.mode is NodeMode.STATIC and nodes is not None:
            self._set_nodes(max(nodes, 0))
        if replicas != self.desired_replicas:
            self.scale_events += 1
            self.replica_changes.append((self.clock.now, replicas))
        self.desired_replicas = replicas
        live = self.live_pods()
        if replicas > len(live):
            for _ in range(replicas - len(live)):
                self._new_pod()
            self._schedule_pending()
            if self.mode is NodeMode.KARPENTER and any(
                p.state is PodState.PENDING for p in self.active
            ):
                self._karpenter_note_pending()
        elif replicas < len(live):
            for pod in self._victims(live, len(live) - replicas):
                self._remove(pod)

    def _victims(self, live: list[Pod], count: int) -> list[Pod]:
        """Pending first, then loading (newest first), then Ready pods: under a static NodePool
        in the live controller's deletion-cost order (`controller.pods.node_first_costs`: the
        least busy node's pods first, so a release empties whole nodes, which is the only way a
        node leaves), under Karpenter the idlest pods (the ReplicaSet's own order)."""
        costs: dict[str, int] = {}
        if self.mode is NodeMode.STATIC:
            ready = [p for p in live if p.state is PodState.READY]
            costs = node_first_costs((p.name, p.node, p.outstanding) for p in ready)

        def rank(p: Pod) -> tuple[int, int, float]:
            state_rank = {PodState.PENDING: 0, PodState.LOADING: 1, PodState.READY: 2}[p.state]
            return (state_rank, costs.get(p.name, p.outstanding), -p.created_at)

        return sorted(live, key=rank)[:count]

    # ---- pods --------------------------------------------------------------------------------

    def _new_pod(self) -> Pod:
        self._seq += 1
        pod = Pod(
            name=f"pod-{self._seq}",
            created_at=self.clock.now,
            engine=self._engine_factory(self._seq),
            clock=self.clock,
        )
        self.pods.append(pod)
        self.active.append(pod)
        return pod

    def _node_with_room(self) -> Node | None:
        per = self.config.gpus_per_replica
        best: Node | None = None
        for node in self.nodes:
            # Bin-pack: the fullest node with room first (MostAllocated scoring for GPUs).
            if (
                node.end_at is None
                and node.ready
                and node.free(per) >= per
                and (best is None or node.free(per) < best.free(per))
            ):
                best = node
        return best

    def _bind(self, pod: Pod, node: Node | None) -> None:
        assert node is not None
        pod.node = node.name
        pod.bound_at = self.clock.now
        node.pods.add(pod)
        pod.node_ref = node

    def _schedule_pending(self) -> None:
        pending = [p for p in self.active if p.state is PodState.PENDING]
        free = self._room(ready_only=True) if pending and self.warm else 0
        for pod in pending:
            node = self._node_with_room()
            if node is None:
                break
            self._bind(pod, node)
            pod.state = PodState.LOADING
            wait = 0.0
            if self.warm_preempt_s is not None and free <= self._held:
                wait = self.warm_preempt_s  # the room is a placeholder's: preempt it first
                self._held -= 1
            free -= 1
            self.clock.after(self.config.model_load_s + wait, self._loaded, pod)
        # Placeholders (lower priority) take what free Ready room the model pods left.
        self._held = min(self.warm, self._room(ready_only=True)) if self.warm else 0
        if pending and self.warm and self.mode is NodeMode.KARPENTER:
            self._karpenter_note_pending()  # warm room was used: launch its replacement

    def set_warm(self, replicas: int) -> None:
        """Keep `replicas` replicas' worth of room free (Karpenter mode)."""
        lower = replicas < self.warm
        self.warm = max(replicas, 0)
        self._held = min(self.warm, self._room(ready_only=True))
        if self.mode is not NodeMode.KARPENTER:
            return
        if self._room() < self.warm:
            self._karpenter_note_pending()
        elif lower:  # nodes kept for warm room may go now
            for node in self._alive_nodes():
                if node.ready and not node.pods:
                    self.clock.after(self.config.consolidate_after_s, self._consolidate, node)

    def _room(self, *, ready_only: bool = False, exclude: Node | None = None) -> int:
        """Free replica slots on live nodes (Ready ones only with `ready_only`)."""
        per = self.config.gpus_per_replica
        return sum(
            n.free(per) // per
            for n in self._alive_nodes()
            if n is not exclude and (n.ready or not ready_only)
        )

    def _loaded(self, pod: Pod) -> None:
        if pod.state is not PodState.LOADING:
            return
        pod.state = PodState.READY
        pod.ready_at = self.clock.now
        self._on_pod_ready(pod)

    def _remove(self, pod: Pod) -> None:
        if pod.state is PodState.READY and pod.outstanding > 0:
            pod.state = PodState.TERMINATING  # drains: in-flight requests finish first
            return
        self._end(pod)

    def pod_drained(self, pod: Pod) -> None:
        """Called by the gateway when a terminating pod's last request finished."""
        if pod.state is PodState.TERMINATING and pod.outstanding == 0:
            self._end(pod)

    def _end(self, pod: Pod) -> None:
        pod.state = PodState.ENDED
        pod.end_at = self.clock.now
        self.active.remove(pod)
        node = pod.node_ref
        if node is not None:
            node.pods.discard(pod)
            if not node.pods:
                self._node_emptied(node)
        if self.on_pod_end is not None:
            self.on_pod_end(pod)
        self._schedule_pending()

    # ---- nodes -------------------------------------------------------------------------------

    def _launch_node(self, *, booted: bool = False) -> Node:
        self._seq += 1
        boot = 0.0 if booted else self.config.node_boot_s
        node = Node(
            f"node-{self._seq}", self.config.gpus_per_node, self.clock.now, self.clock.now + boot
        )
        self.nodes.append(node)
        if not booted:
            self.clock.after(boot, self._node_ready, node)
        return node

    def _node_ready(self, node: Node) -> None:
        if node.end_at is not None:
            return
        node.ready = True
        self._schedule_pending()
        if not node.pods:
            self._node_emptied(node)

    def _terminate_node(self, node: Node) -> None:
        if node.end_at is None and not node.pods:
            node.end_at = self.clock.now

    def _alive_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.end_at is None]

    def _set_nodes(self, nodes: int) -> None:
        nodes = min(nodes, self.config.max_nodes)
        self.desired_nodes = nodes
        alive = self._alive_nodes()
        if nodes > len(alive):
            for _ in range(nodes - len(alive)):
                self._launch_node()
        elif nodes < len(alive):
            self._shrink_static()

    def _shrink_static(self) -> None:
        alive = self._alive_nodes()
        excess = len(alive) - self.desired_nodes
        if excess <= 0:
            return
        empty = [n for n in alive if not n.pods]
        empty.sort(key=lambda n: (n.ready, -n.launched_at))  # booting first, newest first
        for node in empty[:excess]:
            self._terminate_node(node)

    def _node_emptied(self, node: Node) -> None:
        if self.mode is NodeMode.STATIC:
            self._shrink_static()
        elif node.ready:
            self.clock.after(self.config.consolidate_after_s, self._consolidate, node)

    def _consolidate(self, node: Node) -> None:
        if node.end_at is None and node.ready and not node.pods:
            # Keep the node if pending pods could use it right away.
            if any(p.state is PodState.PENDING for p in self.active):
                return
            if self.warm and self._room(exclude=node) < self.warm:
                return  # the warm room needs it
            self._terminate_node(node)

    # ---- Karpenter batching ------------------------------------------------------------------

    def _karpenter_note_pending(self) -> None:
        now = self.clock.now
        if self._batch_open_at is None:
            self._batch_open_at = now
        self._batch_last_add = now
        self._batch_gen += 1
        close_at = min(
            now + self.config.batch_idle_s, self._batch_open_at + self.config.batch_max_s
        )
        self.clock.at(close_at, self._karpenter_close, self._batch_gen)

    def _karpenter_close(self, gen: Any) -> None:
        if gen != self._batch_gen:
            return
        self._batch_open_at = None
        per = self.config.gpus_per_replica
        pending = sum(1 for p in self.active if p.state is PodState.PENDING)
        room = sum(n.free(per) // per for n in self._alive_nodes())
        short = pending + self.warm - room
        if short <= 0:
            return
        per_node = max(self.config.gpus_per_node // max(per, 1), 1)
        launch = math.ceil(short / per_node)
        launch = min(launch, self.config.max_nodes - len(self._alive_nodes()))
        for _ in range(max(launch, 0)):
            self._launch_node()

    # ---- accounting --------------------------------------------------------------------------

    def gpu_seconds(self, end: float) -> float:
        """GPU time held by pods (bound to a node, loading included) up to `end`."""
        per = self.config.gpus_per_replica
        total = 0.0
        for p in self.pods:
            if p.bound_at is not None:
                stop = end if p.end_at is None else min(p.end_at, end)
                total += max(stop - p.bound_at, 0.0) * per
        return total

    def node_seconds(self, end: float) -> float:
        """Node time from launch (boot included) to termination, up to `end`."""
        total = 0.0
        for n in self.nodes:
            stop = end if n.end_at is None else min(n.end_at, end)
            total += max(stop - n.launched_at, 0.0)
        return total


_COUNTED = (PodState.PENDING, PodState.LOADING, PodState.READY)
