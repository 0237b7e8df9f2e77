"""The pure engine model: step time against the measured tables, and scheduling behaviour
(FIFO, max_num_seqs, chunked prefill, KV blocks, preemption), time stepped by hand."""

from __future__ import annotations

import math

import pytest

from sim.engine import (
    PROFILE_NAMES,
    Engine,
    EventKind,
    RequestRejected,
    StepResult,
    get_profile,
    load_table,
)
from sim.engine.calibration import TABLE_8B_H200, TABLE_70B_TP4_H200

P8 = get_profile("llama3-8b-h200")


@pytest.mark.parametrize(
    ("profile", "table"),
    [
        pytest.param("llama3-8b-h200", TABLE_8B_H200, id="8b-h200"),
        pytest.param("llama3-70b-tp4-h200", TABLE_70B_TP4_H200, id="70b-tp4-h200"),
    ],
)
def test_decode_step_time_reproduces_the_table_plus_stated_overheads(
    profile: str, table: str
) -> None:
    model = get_profile(profile).step
    for point in load_table(table).decode:
        expected = point.seconds + model.overhead_s + model.comm_seconds(point.batch)
        got = model.decode_seconds(point.batch, point.batch * point.context)
        assert got == pytest.approx(expected, rel=1e-9), (point, got, expected)


@pytest.mark.parametrize(
    "batch", [pytest.param(1, id="batch-1"), pytest.param(256, id="batch-256")]
)
def test_itl_within_ten_percent_of_table_plus_overhead_as_contexts_grow(batch: int) -> None:
    """Decoding 64 tokens after a 512-token prompt stays near the 512-context row."""
    row = next(p for p in load_table(TABLE_8B_H200).decode if (p.batch, p.context) == (batch, 512))
    expected = row.seconds + P8.step.overhead_s
    for extra in range(0, 64):
        got = P8.step.decode_seconds(batch, batch * (512 + extra))
        assert abs(got - expected) / expected < 0.10, (extra, got, expected)


def test_prefill_time_reproduces_the_table() -> None:
    for p in load_table(TABLE_8B_H200).prefill:
        if p.batch != 1:
            continue
        n = p.prompt
        got = P8.step.seconds(
            n_decode=0,
            decode_context=0,
            prefill_tokens=n,
            prefill_pairs=n * (n + 1) / 2,
            prefill_kv_read=n,
        )
        assert got == pytest.approx(p.seconds + P8.step.overhead_s, rel=1e-9)


def test_profiles_order_as_the_hardware_does() -> None:
    h200, h100, big = (get_profile(n) for n in PROFILE_NAMES)
    for batch, ctx in [(1, 512), (64, 2048), (256, 2048), (1024, 4096)]:
        assert h100.step.decode_seconds(batch, batch * ctx) > h200.step.decode_seconds(
            batch, batch * ctx
        )
    assert big.step.decode_seconds(1, 512) > h200.step.decode_seconds(1, 512)
    # extrapolation beyond the table keeps growing with batch and context
    assert P8.step.decode_seconds(1024, 1024 * 8192) > P8.step.decode_seconds(512, 512 * 8192)
    assert h100.num_kv_blocks < h200.num_kv_blocks


def test_kv_blocks_sized_from_memory_weights_and_bytes_per_token() -> None:
    free = P8.gpu_memory_bytes * 0.9 - P8.step.weight_bytes - P8.reserve_bytes
    assert P8.num_kv_blocks == int(free // (131072 * 16))


def _run_steps(engine: Engine, start: float = 0.0, limit: int = 100_000) -> list[StepResult]:
    out = []
    t = start
    for _ in range(limit):
        r = engine.step(t)
        if r is None:
            break
        out.append(r)
        t = r.end
    return out


def test_first_token_after_prefill_then_one_token_per_step() -> None:
    e = Engine(P8)
    e.add("a", 1000, 5, now=0.0)
    steps = _run_steps(e)
    assert len(steps) == 5
    assert steps[0].num_prefill_tokens == 1000
    assert [o.total for s in steps for o in s.outputs] == [1, 2, 3, 4, 5]
    assert steps[0].outputs[0].first
    assert steps[-1].outputs[0].finished
    n = 1000
    prefill = P8.step.seconds(
        n_decode=0,
        decode_context=0,
        prefill_tokens=n,
        prefill_pairs=n * (n + 1) / 2,
        prefill_kv_read=n,
    )
    assert steps[0].end == pytest.approx(prefill)
    assert steps[1].duration == pytest.approx(P8.step.decode_seconds(1, 1001))
    assert e.kv_usage == 0.0
    assert not e.has_work


@pytest.mark.parametrize(
    ("prompt", "budget", "chunks"),
    [
        pytest.param(100, 64, [64, 36], id="two-chunks"),
        pytest.param(64, 64, [64], id="exact-budget"),
        pytest.param(300, 100, [100, 100, 100], id="three-chunks"),
    ],
)
def test_chunked_prefill_splits_prompts_by_token_budget(
    prompt: int, budget: int, chunks: list[int]
) -> None:
    e = Engine(P8, max_num_batched_tokens=budget)
    e.add("a", prompt, 2, now=0.0)
    steps = _run_steps(e)
    assert [s.num_prefill_tokens for s in steps[: len(chunks)]] == chunks
    assert [bool(s.outputs) for s in steps[: len(chunks)]] == [False] * (len(chunks) - 1) + [True]


def test_running_decodes_take_the_budget_before_waiting_prefills() -> None:
    e = Engine(P8, max_num_batched_tokens=50)
    e.add("a", 10, 100, now=0.0)
    e.step(0.0)  # a prefilled, first token
    e.add("b", 200, 5, now=0.001)
    r = e.step(e.busy_until)
    assert r is not None
    assert (r.num_decode, r.num_prefill_tokens) == (1, 49)


@pytest.mark.parametrize(
    ("max_num_seqs", "n_requests", "running", "waiting"),
    [
        pytest.param(2, 5, 2, 3, id="seats-limit"),
        pytest.param(8, 5, 5, 0, id="all-fit"),
        pytest.param(1, 3, 1, 2, id="one-seat"),
    ],
)
def test_max_num_seqs_caps_the_batch_and_the_rest_waits_fifo(
    max_num_seqs: int, n_requests: int, running: int, waiting: int
) -> None:
    e = Engine(P8, max_num_seqs=max_num_seqs)
    for i in range(n_requests):
        e.add(f"r{i}", 20, 3 + i, now=0.0)
    assert e.waiting == n_requests
    first = e.step(0.0)
    assert first is not None
    assert (e.running, e.waiting) == (running, waiting)
    finish_order = [
        o.request_id for s in [first, *_run_steps(e, first.end)] for o in s.outputs if o.finished
    ]
    assert finish_order == [f"r{i}" for i in range(n_requests)]  # FIFO, shortest first here


def test_waiting_request_joins_only_steps_that_start_after_it_arrived() -> None:
    e = Engine(P8)
    e.add("a", 16, 50, now=0.0)
    r1 = e.step(0.0)
    assert r1 is not None
    e.add("b", 16, 5, now=r1.end + 1.0)  # arrives later than the next step starts
    r2 = e.step(r1.end)
    assert r2 is not None
    assert r2.admitted == ()
    assert e.waiting == 1


def test_kv_cache_exhaustion_preempts_the_newest_and_recomputes() -> None:
    # 3 requests of 40 prompt + 40 output tokens need 5 blocks each at the end; 12 blocks total
    e = Engine(P8, num_kv_blocks=12)
    for i in range(3):
        e.add(f"r{i}", 40, 40, now=0.0)
    steps = _run_steps(e)
    preempted = [rid for s in steps for rid in s.preempted]
    assert preempted
    assert preempted[0] == "r2"
    assert e.preemptions == len(preempted)
    totals = {}
    for s in steps:
        for o in s.outputs:
            totals[o.request_id] = o.total
    assert totals == {"r0": 40, "r1": 40, "r2": 40}  # recompute loses no output
    firsts = [o.request_id for s in steps for o in s.outputs if o.first]
    assert sorted(firsts) == ["r0", "r1", "r2"]  # a first token is reported once
    assert e.kv_usage == 0.0


def test_kv_usage_gauge_counts_blocks() -> None:
    e = Engine(P8, num_kv_blocks=100)
    e.add("a", 33, 10, now=0.0)  # 33 prompt tokens -> 3 blocks
    e.step(0.0)
    assert e.kv_usage == pytest.approx(0.03)


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "blocks", "match"),
    [
        pytest.param(30000, 3000, None, "maximum context length", id="too-long-for-model"),
        pytest.param(100, 100, 5, "KV cache", id="too-big-for-cache"),
        pytest.param(0, 10, None, "at least 1", id="empty-prompt"),
        pytest.param(10, 0, None, "at least 1", id="zero-max-tokens"),
    ],
)
def test_requests_that_can_never_run_are_rejected(
    prompt: int, max_tokens: int, blocks: int | None, match: str
) -> None:
    e = Engine(P8, num_kv_blocks=blocks)
    with pytest.raises(RequestRejected, match=match):
        e.add("x", prompt, max_tokens, now=0.0)
    assert not e.has_work


def test_duplicate_ids_are_rejected_and_abort_frees_blocks() -> None:
    e = Engine(P8, num_kv_blocks=100)
    e.add("a", 160, 10, now=0.0)
    with pytest.raises(RequestRejected, match="duplicate"):
        e.add("a", 5, 5, now=0.0)
    e.step(0.0)
    assert e.kv_usage > 0
    assert e.abort("a")
    assert not e.abort("a")
    assert e.kv_usage == 0.0
    assert e.running == 0


def test_slowdown_multiplies_step_time() -> None:
    a, b = Engine(P8), Engine(P8)
    b.slowdown = 3.0
    for e in (a, b):
        e.add("x", 100, 2, now=0.0)
    ra, rb = a.step(0.0), b.step(0.0)
    assert ra is not None
    assert rb is not None
    assert rb.duration == pytest.approx(3 * ra.duration)


def test_step_refuses_to_start_before_the_previous_step_ends() -> None:
    e = Engine(P8)
    e.add("a", 10, 10, now=0.0)
    r = e.step(0.0)
    assert r is not None
    with pytest.raises(ValueError, match="before the previous step ends"):
        e.step(r.end / 2)


def test_events_carry_exact_times_in_advance_mode() -> None:
    e = Engine(P8)
    e.add("a", 1000, 3, now=0.0)
    events = e.advance(math.inf)
    assert [ev.kind for ev in events] == [EventKind.FIRST_TOKEN, EventKind.FINISHED]
    ref = Engine(P8)
    ref.add("a", 1000, 3, now=0.0)
    steps = _run_steps(ref)
    assert events[0].time == steps[0].end
    assert events[1].time == steps[-1].end
