"""The prefill gate of the admission core (`DispatchPolicy.prefill_limit`): a pod takes a new
request only while fewer than the limit of its requests await their first token; the first
token, a finish, a retry end a request's prefill; a pod with nothing in prefill is as eligible
as without a gate (its slot cap still applies)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admission import DispatchPolicy, ModelQueue, Pod, Ticket, TicketState
from gateway.cli import settings_from_args
from gateway.settings import load_settings


def _ticket(n: int, *, tokens: int = 0, stream: bool = True) -> Ticket:
    return Ticket(
        request_id=f"r{n}", tenant="", arrived=float(n), prompt_tokens=tokens, stream=stream
    )


def _queue(pods: dict[str, int], policy: DispatchPolicy) -> ModelQueue:
    q = ModelQueue("m", max_length=100, policy=policy)
    for url, cap in pods.items():
        q.upsert_pod(url, ready=True, capacity=cap)
    return q


def _offered(q: ModelQueue, count: int, **kw: int | bool) -> list[Ticket]:
    tickets = [_ticket(i, **kw) for i in range(count)]  # type: ignore[arg-type]
    for t in tickets:
        q.offer(t)
    return tickets


def _ids(tickets: list[Ticket]) -> list[str]:
    return [t.request_id for t in tickets]


ONE = DispatchPolicy(prefill_limit=1)


def test_a_pod_with_a_request_in_prefill_takes_no_second_one() -> None:
    q = _queue({"a": 8}, ONE)
    _offered(q, 3)
    assert _ids(q.assign(now=10.0)) == ["r0"]
    assert (q.pods["a"].outstanding, q.pods["a"].prefilling, q.queued) == (1, 1, 2)
    assert q.assign(now=10.0) == []  # still in prefill: the rest wait in the gateway


@pytest.mark.parametrize("limit", [None, 0])
def test_no_limit_or_zero_is_no_gate(limit: int | None) -> None:
    q = _queue({"a": 8}, DispatchPolicy(prefill_limit=limit))
    _offered(q, 3)
    assert _ids(q.assign(now=10.0)) == ["r0", "r1", "r2"]
    assert q.pods["a"].prefilling == 3  # counted anyway, gating nothing


def test_the_first_token_reopens_the_pod() -> None:
    q = _queue({"a": 8}, ONE)
    t0, t1, _ = _offered(q, 3)
    q.assign(now=10.0)
    assert q.first_token(t0) is True  # a gate may have opened: the caller assigns
    assert _ids(q.assign(now=10.0)) == ["r1"]
    assert (q.pods["a"].outstanding, q.pods["a"].prefilling) == (2, 1)
    assert q.first_token(t0) is False  # once only
    q.first_token(t1)
    assert _ids(q.assign(now=10.0)) == ["r2"]


def test_the_slot_cap_still_applies_to_a_pod_with_nothing_in_prefill() -> None:
    q = _queue({"a": 1}, ONE)
    t0, _ = _offered(q, 2)
    q.assign(now=10.0)
    q.first_token(t0)
    assert q.assign(now=10.0) == []  # nothing in prefill, but its one slot is taken
    q.finish(t0)
    assert _ids(q.assign(now=10.0)) == ["r1"]


def test_a_second_pod_takes_the_next_request() -> None:
    q = _queue({"a": 8, "b": 8}, ONE)
    _offered(q, 3)
    got = q.assign(now=10.0)
    assert _ids(got) == ["r0", "r1"]
    assert {t.pod.url for t in got if t.pod is not None} == {"a", "b"}


def test_a_finish_before_the_first_token_ends_the_prefill() -> None:
    q = _queue({"a": 8}, ONE)
    t0, _ = _offered(q, 2)
    q.assign(now=10.0)
    q.finish(t0)  # failed or cancelled before its first token
    assert (q.pods["a"].prefilling, t0.prefilling) == (0, False)
    assert _ids(q.assign(now=10.0)) == ["r1"]


def test_a_retry_ends_the_prefill_on_the_failed_pod_and_a_withdrawal_leaves_none() -> None:
    q = _queue({"a": 8, "b": 8}, ONE)
    t0, t1, _ = _offered(q, 3)
    q.assign(now=10.0)
    failed = t0.pod
    assert isinstance(failed, Pod)
    q.requeue(t0, failed_pod=failed.url)
    assert failed.prefilling == 0
    q.withdraw(t0)  # the client gave up while it waited for its retry
    assert t0.state is TicketState.DONE
    assert _ids(q.assign(now=10.0)) == ["r2"]  # the failed pod's gate is open again
    assert sum(p.prefilling for p in q.pods.values()) == 2
    assert q.first_token(t1) is True


def test_a_non_streaming_request_does_not_hold_the_gate() -> None:
    q = _queue({"a": 8}, ONE)
    _offered(q, 3, stream=False)
    assert _ids(q.assign(now=10.0)) == ["r0", "r1", "r2"]  # its first token is never seen
    assert q.pods["a"].prefilling == 0


def test_a_token_budget_gates_on_the_prompts_in_prefill() -> None:
    q = _queue({"a": 8}, DispatchPolicy(prefill_token_budget=5000))
    t0, *_ = _offered(q, 3, tokens=3000)
    assert _ids(q.assign(now=10.0)) == ["r0", "r1"]  # 0, then 3,000 < 5,000 before each
    assert q.pods["a"].prefill_tokens == 6000
    q.first_token(t0)
    assert _ids(q.assign(now=10.0)) == ["r2"]


def test_with_a_decoding_threshold_an_idle_pod_takes_requests_freely() -> None:
    policy = DispatchPolicy(prefill_limit=1, prefill_min_decoding=1)
    q = _queue({"a": 8}, policy)
    t0, t1 = _offered(q, 2)
    assert _ids(q.assign(now=10.0)) == ["r0", "r1"]  # nothing decoding: no gate
    q.first_token(t0)
    q.offer(_ticket(2))
    assert q.assign(now=10.0) == []  # one decoding, one in prefill: gated
    q.first_token(t1)
    assert _ids(q.assign(now=10.0)) == ["r2"]


def test_the_policy_checks_the_limit() -> None:
    assert DispatchPolicy.checked(prefill_limit=0).prefill_limit is None
    assert DispatchPolicy.checked(prefill_limit=2).prefill_limit == 2
    with pytest.raises(ValueError, match="prefill_limit"):
        DispatchPolicy.checked(prefill_limit=-1)


def test_the_limit_comes_from_the_flag_env_and_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from_args(["--prefill-limit", "2"]).slo.policy().prefill_limit == 2
    monkeypatch.setenv("SURGESCALE_GATEWAY_SLO", '{"prefill_limit": 3}')
    assert load_settings().slo.policy().prefill_limit == 3
    monkeypatch.setenv("SURGESCALE_GATEWAY_MODEL_SLOS", '{"big": {"prefill_limit": 0}}')
    assert load_settings().slo_for("big").policy().prefill_limit is None


_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["offer", "offer", "first_token", "finish", "withdraw", "requeue", "pod_up", "pod_down"]
        ),
        st.integers(min_value=0, max_value=30),
    ),
    min_size=10,
    max_size=80,
)


@settings(max_examples=120, deadline=None)
@given(
    ops=_OPS,
    limit=st.sampled_from([1, 2]),
    budget=st.sampled_from([None, 4000]),
    min_decoding=st.sampled_from([0, 2]),
)
def test_prefill_counts_match_tickets_and_the_gate_holds(
    ops: list[tuple[str, int]], limit: int, budget: int | None, min_decoding: int
) -> None:
    """Whatever arrives, starts, fails, finishes or leaves: each pod's prefill counts are its
    tickets' (no leak), no pod ever holds more prefills than the gate allows, a request waits
    only while no pod could take it, and once all is done every count is back at zero."""
    policy = DispatchPolicy(
        prefill_limit=limit, prefill_token_budget=budget, prefill_min_decoding=min_decoding
    )
    q = ModelQueue("m", max_length=10, policy=policy)
    tickets: list[Ticket] = []
    pods_seen: dict[str, Pod] = {}
    now = 0.0

    def gate_open(p: Pod) -> bool:
        if not p.free or not p.prefilling or p.outstanding - p.prefilling < min_decoding:
            return p.free
        return p.prefilling < limit and (budget is None or p.prefill_tokens < budget)

    for op, n in ops:
        now += 1.0
        running = [t for t in tickets if t.state is TicketState.ASSIGNED]
        if op == "offer":
            t = _ticket(len(tickets), tokens=1000 * (n % 4), stream=n % 5 != 0)
            tickets.append(t)
            q.offer(t)
        elif op in ("first_token", "finish", "requeue") and running:
            t = running[n % len(running)]
            if op == "first_token":
                q.first_token(t)
            elif op == "finish":
                q.finish(t)
            else:
                q.requeue(t, failed_pod=None)
        elif op == "withdraw":
            waiting = [t for t in tickets if t.state is TicketState.QUEUED]
            if waiting:
                q.withdraw(waiting[n % len(waiting)])
        elif op == "pod_up":
            pod = q.upsert_pod(f"p{n % 3}", ready=True, capacity=1 + n % 4)
            pods_seen[pod.url] = pod
        elif op == "pod_down":
            q.remove_pod(f"p{n % 3}")
        before = {p.url: (p.prefilling, p.outstanding) for p in q.pods.values()}
        for t in q.assign(now=now):
            assert t.pod is not None
            if t.stream and before[t.pod.url][1] - before[t.pod.url][0] >= min_decoding:
                assert t.pod.prefilling <= limit, "a pod took more prefills than the gate allows"
        assigned = [t for t in tickets if t.state is TicketState.ASSIGNED]
        for pod in q.pods.values():
            mine = [t for t in assigned if t.pod is pod and t.prefilling]
            assert pod.prefilling == len(mine)
            assert pod.prefill_tokens == sum(t.prompt_tokens for t in mine)
        assert all(t.state is TicketState.ASSIGNED for t in tickets if t.prefilling)
        if any(t.state is TicketState.QUEUED for t in tickets):
            assert not any(gate_open(p) for p in q.pods.values()), "a request waits for nothing"
    for t in tickets:
        q.finish(t)
    assert all(p.prefilling == 0 and p.prefill_tokens == 0 for p in pods_seen.values())
