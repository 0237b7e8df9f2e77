"""The pure admission core: FIFO, caps, least outstanding, leaving pods, retries, fairness."""

from __future__ import annotations

import pytest

from gateway.admission import ModelQueue, Ticket, TicketState, Verdict


def _ticket(n: int, tenant: str = "", at: float | None = None) -> Ticket:
    return Ticket(request_id=f"r{n}", tenant=tenant, arrived=float(n if at is None else at))


def _queue(
    pods: dict[str, int] | None = None,
    *,
    max_length: int = 100,
    fairness: bool = False,
    tenant_limit: int | None = None,
) -> ModelQueue:
    q = ModelQueue("m", max_length=max_length, fairness=fairness, tenant_limit=tenant_limit)
    for url, cap in (pods or {}).items():
        q.upsert_pod(url, ready=True, capacity=cap)
    return q


def test_fifo_and_cap() -> None:
    q = _queue({"a": 2})
    tickets = [_ticket(i) for i in range(5)]
    for t in tickets:
        assert q.offer(t).verdict is Verdict.ADMITTED
    assigned = q.assign(now=100.0)
    assert [t.request_id for t in assigned] == ["r0", "r1"]
    assert (q.queued, q.in_flight) == (3, 2)
    q.finish(tickets[1])
    assert [t.request_id for t in q.assign(now=100.0)] == ["r2"]
    assert (q.queued, q.in_flight) == (2, 2)


def test_least_outstanding_spreads_load() -> None:
    q = _queue({"a": 4, "b": 4, "c": 4})
    for i in range(6):
        q.offer(_ticket(i))
    q.assign(now=100.0)
    assert sorted(p.outstanding for p in q.pods.values()) == [2, 2, 2]


def test_least_outstanding_prefers_idle_pod() -> None:
    q = _queue({"a": 4, "b": 4})
    first = [_ticket(i) for i in range(4)]
    for t in first:
        q.offer(t)
    q.assign(now=100.0)
    for t in first:
        if t.pod is not None and t.pod.url == "a":
            q.finish(t)
    late = _ticket(9)
    q.offer(late)
    q.assign(now=100.0)
    assert late.pod is not None
    assert late.pod.url == "a"


@pytest.mark.parametrize(
    ("max_length", "offered", "admitted"),
    [
        pytest.param(0, 3, 0, id="zero-length-queue-refuses-all"),
        pytest.param(2, 5, 2, id="bounded"),
        pytest.param(10, 5, 5, id="room"),
    ],
)
def test_queue_bound(max_length: int, offered: int, admitted: int) -> None:
    q = _queue(max_length=max_length)  # no pods: nothing leaves the queue
    verdicts = [q.offer(_ticket(i)).verdict for i in range(offered)]
    assert verdicts.count(Verdict.ADMITTED) == admitted
    assert verdicts.count(Verdict.QUEUE_FULL) == offered - admitted
    assert q.queued == admitted


def test_zero_pods_hold_then_release_on_ready() -> None:
    q = _queue()
    held = [_ticket(i) for i in range(3)]
    for t in held:
        q.offer(t)
    assert q.assign(now=100.0) == []
    q.upsert_pod("a", ready=False, capacity=8)
    assert q.assign(now=100.0) == []
    q.upsert_pod("a", ready=True, capacity=8)
    assert [t.request_id for t in q.assign(now=100.0)] == ["r0", "r1", "r2"]


def test_leaving_pod_gets_no_new_work_and_is_forgotten_when_idle() -> None:
    q = _queue({"a": 4, "b": 4})
    t0, t1 = _ticket(0), _ticket(1)
    q.offer(t0)
    q.offer(t1)
    q.assign(now=100.0)
    q.sync_pods({"b": True}, capacity=4)  # "a" left discovery
    on_a = t0 if t0.pod is not None and t0.pod.url == "a" else t1
    assert "a" in q.pods  # still finishing its request
    late = [_ticket(i) for i in range(2, 6)]
    for t in late:
        q.offer(t)
    q.assign(now=100.0)
    assert all(t.pod is not None and t.pod.url == "b" for t in late if t.pod is not None)
    q.finish(on_a)
    assert "a" not in q.pods


def test_withdraw_queued_and_finish_assigned_keep_counts() -> None:
    q = _queue({"a": 1})
    a, b, c = _ticket(0), _ticket(1), _ticket(2)
    for t in (a, b, c):
        q.offer(t)
    q.assign(now=100.0)
    q.withdraw(b)  # cancelled while queued
    assert (q.queued, q.in_flight) == (1, 1)
    q.finish(a)
    assert [t.request_id for t in q.assign(now=100.0)] == ["r2"]  # b is skipped
    assert b.state is TicketState.DONE
    q.finish(c)
    assert (q.queued, q.in_flight) == (0, 0)


def test_retry_goes_to_another_pod_first_and_stays_in_flight() -> None:
    q = _queue({"a": 4, "b": 4})
    t = _ticket(0)
    q.offer(t)
    q.assign(now=100.0)
    assert t.pod is not None
    failed = t.pod.url
    q.requeue(t, failed_pod=failed)
    assert (q.queued, q.in_flight) == (0, 1)
    q.assign(now=100.0)
    assert t.pod is not None
    assert t.pod.url != failed
    assert t.attempts == 2
    q.finish(t)
    assert (q.queued, q.in_flight) == (0, 0)


def test_retry_with_single_pod_uses_it_again() -> None:
    q = _queue({"a": 4})
    t = _ticket(0)
    q.offer(t)
    q.assign(now=100.0)
    q.requeue(t, failed_pod="a")
    q.assign(now=100.0)
    assert t.pod is not None
    assert t.pod.url == "a"


def test_tenant_limit_skips_a_busy_key_without_breaking_fifo() -> None:
    q = _queue({"a": 10}, tenant_limit=1)
    tickets = [_ticket(0, "x"), _ticket(1, "x"), _ticket(2, "y"), _ticket(3, "y")]
    for t in tickets:
        q.offer(t)
    assert [t.request_id for t in q.assign(now=100.0)] == ["r0", "r2"]
    q.finish(tickets[0])
    assert [t.request_id for t in q.assign(now=100.0)] == ["r1"]


def test_fairness_round_robin_across_keys() -> None:
    q = _queue({"a": 1}, fairness=True)
    heavy = [_ticket(i, "heavy") for i in range(4)]
    light = [_ticket(10 + i, "light") for i in range(2)]
    for t in heavy + light:
        q.offer(t)
    order = []
    for _ in range(6):
        (got,) = q.assign(now=100.0)
        order.append(got.tenant)
        q.finish(got)
    assert order[:4] == ["heavy", "light", "heavy", "light"]


def test_fair_share_evicts_the_hog_when_full() -> None:
    q = _queue(max_length=4, fairness=True)
    hog = [_ticket(i, "hog") for i in range(4)]
    for t in hog:
        assert q.offer(t).verdict is Verdict.ADMITTED
    offer = q.offer(_ticket(9, "small"))
    assert offer.verdict is Verdict.ADMITTED
    assert offer.evicted == (hog[-1],)
    assert q.queued == 4
    # The hog itself cannot push anyone out.
    assert q.offer(_ticket(10, "hog")).verdict is Verdict.QUEUE_FULL


def test_not_ready_pod_gets_nothing() -> None:
    q = _queue()
    q.upsert_pod("a", ready=False, capacity=4)
    q.offer(_ticket(0))
    assert q.assign(now=100.0) == []
    assert q.free_slots == 0
