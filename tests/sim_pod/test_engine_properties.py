"""Engine invariants on random workloads (hypothesis): nothing lost, nothing over-allocated."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.engine import Engine, get_profile

P8 = get_profile("llama3-8b-h200")

requests = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=2.0),  # arrival
        st.integers(min_value=1, max_value=300),  # prompt tokens
        st.integers(min_value=1, max_value=60),  # output tokens
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(
    reqs=requests,
    seats=st.integers(min_value=1, max_value=16),
    budget=st.integers(min_value=16, max_value=512),
    blocks=st.integers(min_value=24, max_value=200),
)
def test_every_request_finishes_with_its_tokens_within_limits(
    reqs: list[tuple[float, int, int]], seats: int, budget: int, blocks: int
) -> None:
    e = Engine(P8, max_num_seqs=seats, max_num_batched_tokens=budget, num_kv_blocks=blocks)
    arrivals = sorted((a, f"r{i}", p, m) for i, (a, p, m) in enumerate(reqs))
    accepted: dict[str, int] = {}
    produced: dict[str, int] = {}
    finished: set[str] = set()
    firsts: set[str] = set()
    t = 0.0
    todo = list(arrivals)
    for _ in range(100_000):
        if not todo and not e.has_work:
            break
        if not e.has_work:
            t = max(t, todo[0][0])
        while todo and todo[0][0] <= t:
            at, rid, p, m = todo.pop(0)
            if (p + m + 15) // 16 <= blocks:
                e.add(rid, p, m, now=at)
                accepted[rid] = m
        r = e.step(t)
        if r is None:
            t = todo[0][0]
            continue
        assert r.end > r.start
        assert e.running <= seats
        assert r.num_decode + r.num_prefill_tokens <= budget
        assert 0.0 <= e.kv_usage <= 1.0
        for o in r.outputs:
            assert o.total == produced.get(o.request_id, 0) + 1  # one token per step, in order
            produced[o.request_id] = o.total
            if o.first:
                assert o.request_id not in firsts
                firsts.add(o.request_id)
            if o.finished:
                finished.add(o.request_id)
        t = r.end
    assert finished == set(accepted)
    assert firsts == set(accepted)
    assert produced == accepted
    assert e.kv_usage == 0.0
    assert e.generation_tokens == sum(accepted.values())
