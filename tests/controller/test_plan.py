"""The pure rules between a decision and the scale requests (`controller.plan`)."""

from __future__ import annotations

import pytest

from controller.plan import node_value, nodes_may_follow, outcome, plan
from controller.policy_types import Decision, Reason


def decision(replicas: int, nodes: int = 0, *, valid: bool = True) -> Decision:
    return Decision(valid=valid, replicas=replicas, nodes=nodes, reason=Reason.SCALE_UP)


def test_a_node_pool_gets_the_decided_nodes() -> None:
    assert node_value(3, 5, counts_nodes=True, gpus_per_node=8, gpus_per_replica=4) == 3


@pytest.mark.parametrize(
    ("nodes", "replicas", "gpus_per_replica", "placeholders"),
    [
        (2, 3, 1, 13),  # 16 one-GPU slots, 3 taken
        (2, 3, 4, 1),  # 4 four-GPU slots, 3 taken
        (1, 4, 4, 0),  # more replicas than slots: none (never negative)
        (0, 0, 4, 0),
        (1, 0, 16, 1),  # a replica larger than a node still counts one slot per node
    ],
)
def test_headroom_fills_the_decided_nodes_spare_slots(
    nodes: int, replicas: int, gpus_per_replica: int, placeholders: int
) -> None:
    got = node_value(
        nodes, replicas, counts_nodes=False, gpus_per_node=8, gpus_per_replica=gpus_per_replica
    )
    assert got == placeholders


def test_nodes_go_first_only_on_the_way_up() -> None:
    up = plan(decision(5, 2), 3, 2)
    assert (up.replicas, up.nodes, up.nodes_first) == (5, 2, True)
    assert not plan(decision(3, 1), 5, 1).nodes_first
    assert not plan(decision(3, 1), 3, 1).nodes_first
    assert plan(decision(3), 1, None).nodes is None


def test_fewer_nodes_wait_until_the_pods_are_down() -> None:
    # the Deployment still has a value pending, or more replicas than asked for
    assert not nodes_may_follow(1, 2, pods_pending=3, pods_applied=5, replicas=3)
    assert not nodes_may_follow(1, 2, pods_pending=None, pods_applied=5, replicas=3)
    # pods down: the nodes may follow
    assert nodes_may_follow(1, 2, pods_pending=None, pods_applied=3, replicas=3)
    assert nodes_may_follow(1, 2, pods_pending=None, pods_applied=None, replicas=3)


def test_as_many_or_more_nodes_never_wait() -> None:
    assert nodes_may_follow(2, 2, pods_pending=3, pods_applied=5, replicas=3)
    assert nodes_may_follow(3, 2, pods_pending=3, pods_applied=5, replicas=3)
    assert nodes_may_follow(0, None, pods_pending=3, pods_applied=5, replicas=3)  # unknown


def test_outcome_labels() -> None:
    assert outcome(decision(4), 3) == "up"
    assert outcome(decision(2), 3) == "down"
    assert outcome(decision(3), 3) == "hold"
    assert outcome(decision(9, valid=False), 3) == "invalid"
