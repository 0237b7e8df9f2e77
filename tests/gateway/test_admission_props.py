"""Property test: whatever happens, the admission core's counts match its tickets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admission import ModelQueue, Ticket, TicketState

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["offer", "assign", "finish", "withdraw", "requeue", "pod_up", "pod_down"]),
        st.integers(min_value=0, max_value=30),
        st.sampled_from(["", "a", "b"]),
    ),
    min_size=10,
    max_size=80,
)


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
