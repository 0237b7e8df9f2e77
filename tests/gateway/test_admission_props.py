"""Property tests of the admission core: counts match tickets whatever happens, and the
deadline-aware order keeps its promises (urgent first, FIFO per class, bounded late wait)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admission import (
    DispatchOrder,
    DispatchPolicy,
    ModelQueue,
    Ticket,
    TicketState,
    Verdict,
)


def _ops(names: list[str], *more: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """10-80 operations: (one of `names`, an index 0-30, an API key "", "a" or "b", *more)."""
    one = st.tuples(
        st.sampled_from(names),
        st.integers(min_value=0, max_value=30),
        st.sampled_from(["", "a", "b"]),
        *more,
    )
    return st.lists(one, min_size=10, max_size=80)


_OPS = _ops(["offer", "assign", "finish", "withdraw", "requeue", "pod_up", "pod_down"])


@settings(max_examples=80, deadline=None)
@given(ops=_OPS, fairness=st.booleans(), limit=st.sampled_from([None, 1, 2]))
def test_counts_match_tickets(
    ops: list[tuple[str, int, str]], fairness: bool, limit: int | None
) -> None:
    q = ModelQueue("m", max_length=8, fairness=fairness, tenant_limit=limit)
    tickets: list[Ticket] = []
    clock = 0.0
    for op, n, tenant in ops:
        clock += 1.0
        if op == "offer":
            t = Ticket(request_id=str(len(tickets)), tenant=tenant, arrived=clock)
            tickets.append(t)
            q.offer(t)
        elif op in ("finish", "requeue"):
            running = [t for t in tickets if t.state is TicketState.ASSIGNED]
            if running:
                t = running[n % len(running)]
                if op == "finish":
                    q.finish(t)
                else:
                    assert t.pod is not None
                    q.requeue(t, failed_pod=t.pod.url)
        elif op == "withdraw":
            waiting = [t for t in tickets if t.state is TicketState.QUEUED]
            if waiting:
                q.withdraw(waiting[n % len(waiting)])
        elif op == "pod_up":
            q.upsert_pod(f"p{n % 3}", ready=True, capacity=1 + n % 3)
        elif op == "pod_down":
            q.remove_pod(f"p{n % 3}")
        if op != "assign" or n % 2:  # the shell pumps after every change; sometimes it lags
            for t in q.assign(now=clock):
                assert t.pod is not None
                assert t.state is TicketState.ASSIGNED
        queued = [t for t in tickets if t.state is TicketState.QUEUED]
        assigned = [t for t in tickets if t.state is TicketState.ASSIGNED]
        assert q.queued == sum(1 for t in queued if not t.attempts)
        assert q.requeued == sum(1 for t in queued if t.attempts)
        assert q.in_flight == len(assigned) + q.requeued
        assert q.queued <= q.max_length
        for pod in q.pods.values():
            assert pod.outstanding == sum(1 for t in assigned if t.pod is pod)
        for t in assigned:
            assert t.pod is not None
            assert q.pods.get(t.pod.url) is t.pod  # a busy pod is never forgotten
        if limit is not None:
            for name in ("", "a", "b"):
                assert sum(1 for t in assigned if t.tenant == name) <= limit


_TIMED_OPS = _ops(
    ["offer", "offer", "assign", "finish", "withdraw", "requeue", "pod_up"],
    st.floats(min_value=0.0, max_value=3.0),
    st.floats(min_value=0.2, max_value=6.0),
)


@settings(max_examples=120, deadline=None)
@given(
    ops=_TIMED_OPS,
    fairness=st.booleans(),
    order=st.sampled_from(list(DispatchOrder)),
    first_token_s=st.sampled_from([0.0, 0.3]),
    bound=st.sampled_from([1.0, 4.0, 10.0]),
)
def test_deadline_order_properties(
    ops: list[tuple[str, int, str, float, float]],
    fairness: bool,
    order: DispatchOrder,
    first_token_s: float,
    bound: float,
) -> None:
    """Whatever arrives, finishes and fails, at every dispatch round:

    - no request has waited past the late bound while a slot is free (no starvation);
    - the round dispatches the most urgent class first (overdue, fresh, late) and each class
      oldest first (per API key with fairness: keys take turns);
    - every request offered is in exactly one place (queued, on a pod, or done), counts agree.
    """
    policy = DispatchPolicy(order=order, first_token_s=first_token_s, late_max_wait_s=bound)
    q = ModelQueue("m", max_length=12, fairness=fairness, policy=policy)
    tickets: list[Ticket] = []
    now = 0.0
    for op, n, tenant, dt, budget in ops:
        now += dt
        if op == "offer":
            t = Ticket(request_id=str(len(tickets)), tenant=tenant, arrived=now)
            t.deadline = now + budget
            if q.offer(t).verdict is Verdict.ADMITTED:
                tickets.append(t)
            else:
                assert t.state is TicketState.NEW  # refused: never entered the queue
        elif op in ("finish", "requeue"):
            running = [t for t in tickets if t.state is TicketState.ASSIGNED]
            if running:
                t = running[n % len(running)]
                if op == "finish":
                    q.finish(t)
                else:
                    q.requeue(t, failed_pod=None)
        elif op == "withdraw":
            waiting = [t for t in tickets if t.state is TicketState.QUEUED]
            if waiting:
                q.withdraw(waiting[n % len(waiting)])
        elif op == "pod_up":
            q.upsert_pod(f"p{n % 3}", ready=True, capacity=1 + n % 2)
        classes = {t: policy.urgency(t, now) for t in tickets if t.state is TicketState.QUEUED}
        got = q.assign(now=now)
        ranks = [classes[t] for t in got]
        assert ranks == sorted(ranks), "a less urgent request went before a more urgent one"
        for rank in set(ranks):
            same = [t for t in got if classes[t] == rank]
            for key in {t.tenant for t in same} if fairness else {None}:
                mine = [t.seq for t in same if key is None or t.tenant == key]
                assert mine == sorted(mine), "not oldest first within a class"
        waiting = [t for t in tickets if t.state is TicketState.QUEUED]
        if q.free_slots:
            assert not waiting, "a slot is free while requests wait"
        for t in waiting:
            assert not (now - t.arrived >= bound and q.free_slots), "late request starved"
        states = [t.state for t in tickets]
        assert all(s is not TicketState.NEW for s in states)
        assert q.queued + q.requeued == len(waiting)
        assert q.in_flight == sum(1 for s in states if s is TicketState.ASSIGNED) + q.requeued


_TWIN_OPS = _ops(
    ["admit", "admit", "finish", "first_token", "requeue", "pod_up", "down"], st.booleans()
)


@settings(max_examples=120, deadline=None)
@given(
    ops=_TWIN_OPS,
    fairness=st.booleans(),
    limit=st.sampled_from([None, 1, 2]),
    gated=st.booleans(),
    max_length=st.sampled_from([0, 3, 8]),
)
def test_dispatch_at_once_is_what_offer_then_assign_would_do(
    ops: list[tuple[str, int, str, bool]],
    fairness: bool,
    limit: int | None,
    gated: bool,
    max_length: int,
) -> None:
    """The scheduler's shortcut (`dispatch_at_once`, else `offer`; then `assign`) and the long
    way (`offer`, then `assign`) driven alike: every request ends on the same pod, in the same
    state, with the same counts, whatever arrives, streams, fails and finishes."""
    policy = DispatchPolicy(prefill_limit=1) if gated else DispatchPolicy()

    def queue() -> ModelQueue:
        return ModelQueue(
            "m", max_length=max_length, fairness=fairness, tenant_limit=limit, policy=policy
        )

    short, long = queue(), queue()
    tickets: dict[str, tuple[Ticket, Ticket]] = {}
    now = 0.0
    took_shortcut = 0
    for op, n, tenant, stream in ops:
        now += 1.0
        at_once: list[str] = []
        if op == "admit":
            name = str(len(tickets))
            pair = tuple(
                Ticket(request_id=name, tenant=tenant, arrived=now, stream=stream) for _ in range(2)
            )
            tickets[name] = pair  # type: ignore[assignment]
            a, b = pair
            if short.dispatch_at_once(a):
                took_shortcut += 1
                at_once.append(name)
            else:
                short.offer(a)
            long.offer(b)
        elif op in ("finish", "first_token", "requeue"):
            running = sorted(k for k, (a, _) in tickets.items() if a.state is TicketState.ASSIGNED)
            if running:
                a, b = tickets[running[n % len(running)]]
                for q, t in ((short, a), (long, b)):
                    if op == "finish":
                        q.finish(t)
                    elif op == "first_token":
                        q.first_token(t)
                    else:
                        assert t.pod is not None
                        q.requeue(t, failed_pod=t.pod.url)
        else:
            for q in (short, long):
                if op == "pod_up":
                    q.upsert_pod(f"p{n % 3}", ready=True, capacity=1 + n % 3)
                else:
                    q.remove_pod(f"p{n % 3}")
        got_short = [t.request_id for t in short.assign(now=now)]
        got_long = [t.request_id for t in long.assign(now=now)]
        assert sorted(at_once + got_short) == sorted(got_long)  # the same ones went
        for a, b in tickets.values():
            assert a.state is b.state
            assert (a.pod.url if a.pod else None) == (b.pod.url if b.pod else None)
        assert (short.queued, short.requeued, short.in_flight) == (
            long.queued,
            long.requeued,
            long.in_flight,
        )
    if any(op == "admit" for op, *_ in ops) and max_length == 0:
        assert took_shortcut == 0  # a queue that takes none refuses even with a slot free


def test_dispatch_at_once_only_when_nobody_waits() -> None:
    q = ModelQueue("m", max_length=4)
    q.upsert_pod("p0", ready=True, capacity=1)
    q.upsert_pod("p1", ready=True, capacity=2)
    first, second, third, fourth = (
        Ticket(request_id=str(i), tenant="", arrived=float(i)) for i in range(4)
    )
    assert q.dispatch_at_once(first)
    assert first.state is TicketState.ASSIGNED
    assert first.pod is q.pods["p0"]  # the tie goes to the first pod
    assert q.dispatch_at_once(second)
    assert second.pod is q.pods["p1"]  # the least loaded
    assert q.dispatch_at_once(third)
    assert not q.dispatch_at_once(fourth)  # every slot is taken: it has to be offered
    assert fourth.state is TicketState.NEW
    q.offer(fourth)
    q.finish(first)
    fifth = Ticket(request_id="4", tenant="", arrived=4.0)
    assert not q.dispatch_at_once(fifth)  # a slot is free, but `fourth` waits: it goes first
    assert [t.request_id for t in q.assign(now=5.0)] == ["3"]
    assert (q.queued, q.in_flight) == (0, 3)
