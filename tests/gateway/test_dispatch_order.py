"""The deadline-aware dispatch order of the admission core, as tables of (who waits, who goes)."""

from __future__ import annotations

import pytest

from gateway.admission import (
    DispatchOrder,
    DispatchPolicy,
    ModelQueue,
    Ticket,
    Urgency,
)

_DEADLINE = DispatchPolicy(order=DispatchOrder.DEADLINE, first_token_s=0.0, late_max_wait_s=30.0)


def _t(name: str, arrived: float, budget: float = 1.0, tenant: str = "") -> Ticket:
    return Ticket(request_id=name, tenant=tenant, arrived=arrived, deadline=arrived + budget)


def _drain(q: ModelQueue, *, now: float, slots: int = 100) -> list[str]:
    """Open `slots` slots one by one at `now` and list who got them, in order."""
    q.upsert_pod("p", ready=True, capacity=1)
    order: list[str] = []
    for _ in range(slots):
        got = q.assign(now=now)
        if not got:
            break
        order.extend(t.request_id for t in got)
        for t in got:
            q.finish(t)
    return order


# (arrived, budget) per ticket, the time the slots open, the policy, the expected order.
@pytest.mark.parametrize(
    ("tickets", "now", "policy", "order"),
    [
        pytest.param(
            [("old", 0.0, 1.0), ("new", 4.5, 1.0)],
            5.0,
            _DEADLINE,
            ["new", "old"],
            id="fresh-before-late",
        ),
        pytest.param(
            [("old", 0.0, 1.0), ("new", 4.5, 1.0)],
            5.0,
            DispatchPolicy(order=DispatchOrder.FIFO),
            ["old", "new"],
            id="fifo-policy-is-arrival-order",
        ),
        pytest.param(
            [("f1", 4.2, 1.0), ("l1", 0.0, 1.0), ("f2", 4.4, 1.0), ("l2", 1.0, 1.0)],
            5.0,
            _DEADLINE,
            ["f1", "f2", "l1", "l2"],
            id="fifo-within-each-class",
        ),
        pytest.param(
            [("a", 4.0, 1.2), ("b", 4.5, 1.0)],
            5.0,
            DispatchPolicy(first_token_s=0.3),
            ["b", "a"],
            id="late-when-the-first-token-cannot-come-in-time",
        ),
        pytest.param(
            [("long", 0.0, 10.0), ("short", 3.0, 1.0)],
            5.0,
            _DEADLINE,
            ["long", "short"],
            id="per-request-deadlines-a-long-prompt-is-still-fresh",
        ),
        pytest.param(
            [("starved", 0.0, 1.0), ("f", 29.9, 1.0)],
            30.0,
            _DEADLINE,
            ["starved", "f"],
            id="late-wait-is-bounded",
        ),
        pytest.param(
            [("starved", 0.0, 1.0), ("f", 29.0, 1.0)],
            29.5,
            _DEADLINE,
            ["f", "starved"],
            id="late-under-the-bound-waits",
        ),
        pytest.param(
            [("o2", 1.0, 1.0), ("o1", 0.0, 1.0), ("f", 49.5, 1.0)],
            50.0,
            _DEADLINE,
            ["o1", "o2", "f"],
            id="overdue-oldest-first",
        ),
        pytest.param(
            [("a", 0.0, float("inf")), ("b", 1.0, float("inf"))],
            100.0,
            DispatchPolicy(late_max_wait_s=1000.0),
            ["a", "b"],
            id="no-deadline-never-late",
        ),
    ],
)
def test_order(
    tickets: list[tuple[str, float, float]], now: float, policy: DispatchPolicy, order: list[str]
) -> None:
    q = ModelQueue("m", max_length=100, policy=policy)
    for name, arrived, budget in sorted(tickets, key=lambda t: t[1]):  # offered as they arrive
        q.offer(_t(name, arrived, budget))
    assert _drain(q, now=now) == order


def test_classes_follow_time() -> None:
    q = ModelQueue("m", max_length=10, policy=DispatchPolicy(first_token_s=0.5))
    t = _t("x", 0.0, 2.0)
    q.offer(t)
    assert q.urgency(t, now=1.5) is Urgency.FRESH
    assert q.urgency(t, now=1.6) is Urgency.LATE
    assert q.urgency(t, now=30.0) is Urgency.OVERDUE


def test_a_freshly_ready_pod_serves_fresh_requests_first() -> None:
    """The scenario the order exists for: a backlog built at zero pods, then capacity arrives."""
    q = ModelQueue("m", max_length=100)
    backlog = [_t(f"old{i}", float(i) * 0.1) for i in range(20)]  # all due by t = 3
    fresh = [_t(f"new{i}", 9.5 + i * 0.01) for i in range(3)]
    for t in backlog + fresh:
        q.offer(t)
    q.upsert_pod("p", ready=True, capacity=4)  # Ready at t = 10
    got = [t.request_id for t in q.assign(now=10.0)]
    assert got == ["new0", "new1", "new2", "old0"]


def test_retry_keeps_its_place() -> None:
    q = ModelQueue("m", max_length=10)
    first, second, third = _t("r0", 0.0, 5.0), _t("r1", 1.0, 5.0), _t("r2", 2.0, 5.0)
    q.offer(first)
    q.upsert_pod("p", ready=True, capacity=1)
    assert q.assign(now=2.5) == [first]
    q.offer(second)
    q.offer(third)
    q.requeue(first, failed_pod="p")  # back, ahead of the later arrivals
    assert [t.request_id for t in q.assign(now=2.6)] == ["r0"]
    q.finish(first)
    assert [t.request_id for t in q.assign(now=2.7)] == ["r1"]


def test_retry_of_a_late_request_stays_late() -> None:
    q = ModelQueue("m", max_length=10)
    old = _t("old", 0.0, 1.0)
    q.offer(old)
    q.upsert_pod("p", ready=True, capacity=1)
    assert q.assign(now=0.5) == [old]
    q.offer(_t("new", 4.8, 1.0))
    q.requeue(old, failed_pod="p")
    assert [t.request_id for t in q.assign(now=5.0)] == ["new"]


def test_fairness_rotates_keys_within_the_fresh_class() -> None:
    q = ModelQueue("m", max_length=100, fairness=True)
    for i in range(4):
        q.offer(_t(f"late-b{i}", float(i) * 0.01, 1.0, tenant="b"))
    for i in range(4):
        q.offer(_t(f"a{i}", 9.0 + i * 0.01, 5.0, tenant="a"))
    for i in range(2):
        q.offer(_t(f"b{i}", 9.5 + i * 0.01, 5.0, tenant="b"))
    order = _drain(q, now=10.0)
    assert order[:4] == ["b0", "a0", "b1", "a1"]  # keys alternate among the fresh
    assert order[4:6] == ["a2", "a3"]  # b has no fresh one left: a uses the slots
    assert order[6:] == ["late-b0", "late-b1", "late-b2", "late-b3"]


def test_key_limit_still_applies() -> None:
    q = ModelQueue("m", max_length=100, tenant_limit=1)
    q.offer(_t("x0", 9.0, 5.0, tenant="x"))
    q.offer(_t("x1", 9.1, 5.0, tenant="x"))
    q.offer(_t("y0", 0.0, 1.0, tenant="y"))  # late, but x is at its limit
    q.upsert_pod("p", ready=True, capacity=10)
    assert [t.request_id for t in q.assign(now=10.0)] == ["x0", "y0"]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        pytest.param({"order": "lifo"}, "order", id="unknown-order"),
        pytest.param({"first_token_s": -0.1}, "first_token_s", id="negative-first-token"),
        pytest.param({"late_max_wait_s": -1.0}, "late_max_wait_s", id="negative-bound"),
        pytest.param({"late_max_wait_s": float("nan")}, "late_max_wait_s", id="nan-bound"),
    ],
)
def test_bad_policy_names_the_field(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        DispatchPolicy.checked(**fields)  # type: ignore[arg-type]


def test_checked_policy() -> None:
    policy = DispatchPolicy.checked(order="fifo", first_token_s=0.1, late_max_wait_s=5.0)
    assert policy.order is DispatchOrder.FIFO
    assert policy.late_max_wait_s == 5.0
