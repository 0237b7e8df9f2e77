"""The capacity-strategy variants on a synthetic step (2-GPU nodes, one node's worth of headroom):
warm room lets the first new replicas start loading at the step, without it they wait for a node
boot; placeholder pods delay them by the preemption; the buffer's room is refilled."""

from __future__ import annotations

import pytest

from controller.policy import Billing
from sim.evaluate.capacity import OursCapacity
from sim.evaluate.ours import OursConfig
from sim.evaluate.pods import engine_factory
from sim.evaluate.trace import step
from sim.evaluate.world import RunResult, Scenario, World

STEP_AT = 60.0
LOAD_S = 60.0
BOOT_S = 120.0


def _scenario() -> Scenario:
    trace = step(
        low_rate=0.5,
        high_rate=40.0,
        step_at_s=STEP_AT,
        end_high_s=240.0,
        duration_s=400.0,
        prompt_tokens=4096,
        output_tokens=16,
        seed=1,
    )
    return Scenario(
        name="step",
        requests=trace.requests,
        max_replicas=8,
        gpus_per_node=2,
        model_load_s=LOAD_S,
        node_boot_s=BOOT_S,
        seed=0,
    )


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[OursCapacity, RunResult]]:
    sc = _scenario()
    factory = engine_factory(sc.profile)
    out = {}
    for strategy in ("none", "placeholder", "buffer"):
        # GPU billing: replicas follow the step (under node billing they fill the kept nodes).
        ours = OursCapacity(strategy, preempt_s=5.0, config=OursConfig(billing=Billing.GPU))
        out[strategy] = (ours, World(sc, engine_factory=factory, autoscaler=ours).run())
    return out


def _ready_after_first_scale_up(result: RunResult) -> list[float]:
    """Seconds from the first scale-up after the step to each new replica's Ready."""
    up = min(t for t, _ in result.replica_changes if t >= STEP_AT)
    return sorted(t - up for t in result.ready_times if t > up)


def test_warm_room_starts_a_nodes_worth_of_replicas_a_node_boot_earlier(
    runs: dict[str, tuple[OursCapacity, RunResult]],
) -> None:
    buffer = _ready_after_first_scale_up(runs["buffer"][1])
    none = _ready_after_first_scale_up(runs["none"][1])
    quick = LOAD_S + 10  # a model load, no node boot
    # Both had one free GPU beside the first replica; the buffer also kept a 2-GPU node warm.
    assert sum(1 for t in none if t < quick) == 1, none
    assert sum(1 for t in buffer if t < quick) == 3, buffer
    assert min(t for t in none[1:]) >= LOAD_S + BOOT_S, "the rest waited for a node boot"


def test_placeholders_cost_the_preemption(runs: dict[str, tuple[OursCapacity, RunResult]]) -> None:
    buffer = _ready_after_first_scale_up(runs["buffer"][1])
    placeholder = _ready_after_first_scale_up(runs["placeholder"][1])
    # Placeholders hold every spare slot of the decided nodes (3: one beside the first replica,
    # a whole node): each of the three replicas that land there waits for a preemption, 5 s.
    assert placeholder[:3] == pytest.approx([t + 5.0 for t in buffer[:3]], abs=0.01)
    assert placeholder[3:] == pytest.approx(buffer[3:], abs=0.01)


def test_warm_room_costs_nodes_and_the_buffer_keeps_it(
    runs: dict[str, tuple[OursCapacity, RunResult]],
) -> None:
    assert runs["buffer"][1].node_seconds > runs["none"][1].node_seconds
    ours = runs["buffer"][0]
    assert ours.world.cluster.warm >= 2, "one 2-GPU node's worth of room is asked for"
    # At the end the room is there again: free slots on live nodes cover the warm count.
    cluster = ours.world.cluster
    assert cluster._room() >= cluster.warm
