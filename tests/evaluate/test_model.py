"""The pieces of the evaluator: traces, the clock, the cluster's cold start and node boot."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.evaluate.clock import Clock
from sim.evaluate.cluster import Cluster, ClusterConfig, NodeMode
from sim.evaluate.oracle import Fixed
from sim.evaluate.pods import PodState, engine_factory
from sim.evaluate.runner import run_one
from sim.evaluate.trace import TraceError, poisson, rate_scale, read_trace, step
from sim.evaluate.world import Scenario


def test_azure_csv_is_read_relative_to_its_first_row(tmp_path: Path) -> None:
    path = tmp_path / "AzureLLMInferenceTrace_tiny.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.9799600,4808,10\n"
        "2023-11-16 18:17:04.0319600,3180,8\n"
        "2023-11-16 18:17:05.5000000,110,27\n"
    )
    trace = read_trace(path)
    assert trace.name == "azure-tiny"
    assert [r.prompt_tokens for r in trace.requests] == [4808, 3180, 110]
    assert trace.requests[0].arrival_s == 0.0
    assert trace.requests[1].arrival_s == pytest.approx(0.052, abs=1e-6)
    assert trace.duration_s == pytest.approx(1.52004, abs=1e-6)
    faster = rate_scale(trace, 4)
    assert faster.duration_s == pytest.approx(trace.duration_s / 4)
    assert len(faster.requests) == len(trace.requests)


def test_jsonl_trace_and_bad_input(tmp_path: Path) -> None:
    good = tmp_path / "t.jsonl"
    good.write_text(
        '{"timestamp": 1500, "input_length": 100, "output_length": 20}\n'
        '{"timestamp": 500, "input_length": 50, "output_length": 5}\n'
    )
    trace = read_trace(good)
    assert [(r.arrival_s, r.prompt_tokens) for r in trace.requests] == [(0.5, 50), (1.5, 100)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 1}\n')
    with pytest.raises(TraceError, match=r"bad\.jsonl:1"):
        read_trace(bad)
    with pytest.raises(TraceError, match="no such trace"):
        read_trace(tmp_path / "missing.csv")
    with pytest.raises(TraceError, match="positive"):
        rate_scale(trace, 0)


def test_a_trace_written_as_jsonl_reads_back_the_same(tmp_path: Path) -> None:
    from sim.evaluate.trace import write_jsonl

    trace = poisson(rate=5.0, duration_s=30.0, prompt_tokens=300, output_tokens=7, seed=2)
    back = read_trace(write_jsonl(trace, tmp_path / "t.jsonl"))
    assert len(back.requests) == len(trace.requests)
    for a, b in zip(back.requests, trace.requests, strict=True):
        assert a.arrival_s == pytest.approx(b.arrival_s, abs=1e-6)
        assert (a.prompt_tokens, a.output_tokens) == (b.prompt_tokens, b.output_tokens)


def test_clock_runs_in_time_order_and_breaks_ties_by_insertion() -> None:
    clock = Clock()
    seen: list[tuple[float, str]] = []
    clock.at(2.0, lambda a: seen.append((clock.now, a)), "b")
    clock.at(1.0, lambda a: seen.append((clock.now, a)), "a")
    clock.at(2.0, lambda a: seen.append((clock.now, a)), "c")
    clock.run(10.0)
    assert seen == [(1.0, "a"), (2.0, "b"), (2.0, "c")]
    assert clock.now == 10.0


def _cluster(mode: NodeMode) -> tuple[Clock, Cluster, list[float]]:
    clock = Clock()
    ready_at: list[float] = []
    cluster = Cluster(
        clock=clock,
        config=ClusterConfig(model_load_s=60.0, node_boot_s=120.0, gpus_per_node=8),
        mode=mode,
        engine_factory=engine_factory("llama3-8b-h200"),
        on_pod_ready=lambda pod: ready_at.append(clock.now),
    )
    cluster.warm_start(1)
    return clock, cluster, ready_at


def test_karpenter_batches_pending_pods_then_boots_a_node() -> None:
    clock, cluster, ready_at = _cluster(NodeMode.KARPENTER)
    cluster.scale(10)  # 7 fit on the warm node, 2 need a new one
    clock.run(400.0)
    assert sorted(ready_at)[:7] == [60.0] * 7
    # batch closes 1 s after the last pending pod, node boots 120 s, model loads 60 s
    assert sorted(ready_at)[7:] == [181.0, 181.0]
    assert cluster.node_counts() == (2, 0)
    cluster.scale(1)  # the second node empties and is consolidated (consolidateAfter 0 s)
    clock.run(401.0)
    assert cluster.node_counts() == (1, 0)
    assert cluster.gpu_seconds(401.0) > 0


def test_static_nodepool_boots_the_nodes_the_policy_asks_for() -> None:
    clock, cluster, ready_at = _cluster(NodeMode.STATIC)
    cluster.scale(9, 2)
    clock.run(300.0)
    assert sorted(ready_at) == [60.0] * 7 + [180.0]  # node ready at 120, model loaded at 180
    assert all(p.state is PodState.READY for p in cluster.live_pods())


def test_a_terminating_pod_drains_before_its_gpu_is_released() -> None:
    requests = poisson(rate=4.0, duration_s=20.0, output_tokens=400, seed=3).requests
    sc = Scenario(name="drain", requests=requests, initial_replicas=2, tail_s=0.0)
    result = run_one(sc, Fixed(2))
    assert all(r.finish is not None for r in result.requests)
    assert result.gpu_seconds == pytest.approx(2 * result.end_s)


def test_step_trace_has_the_rates_it_was_asked_for() -> None:
    trace = step(low_rate=1.0, high_rate=10.0, step_at_s=100.0, duration_s=200.0, seed=1)
    before = sum(1 for r in trace.requests if r.arrival_s < 100.0)
    after = sum(1 for r in trace.requests if r.arrival_s >= 100.0)
    assert 70 <= before <= 130
    assert 850 <= after <= 1150


def test_the_quantile_window_answers_as_a_merge_of_every_bucket() -> None:
    """The controller's window (also the evaluator's) reuses the merge of its closed buckets;
    its answers equal merging every live bucket afresh."""
    import random

    from controller.sketch import Sketch
    from controller.windows import QuantileWindow

    def reference(window: QuantileWindow, now: float, q: float) -> float | None:
        oldest = int((now - window.window_s) / window.bucket_s)
        merged = Sketch(window.relative_accuracy)
        live = [sketch for index, sketch in window._buckets if index > oldest]
        if not live:
            return None
        for sketch in live:
            merged.merge(sketch)
        value = merged.get_quantile_value(q)
        return None if value is None else float(value)

    rng = random.Random(11)
    window = QuantileWindow(60.0, refresh_s=0.0)
    now = 0.0
    checked = 0
    for _ in range(3000):
        now += rng.expovariate(20.0)
        window.add(now, rng.lognormvariate(-1.0, 1.2))
        if rng.random() < 0.2:
            for q in (0.5, 0.95, 0.99):
                expected = reference(window, now, q)
                assert window.quantile(now, q) == expected
                checked += 1
    assert checked > 100
    assert window.quantile(now + 61.0, 0.95) is None


def test_a_request_the_engine_refuses_ends_at_once_as_a_miss() -> None:
    from sim.evaluate.metrics import summarize
    from sim.evaluate.trace import TraceRequest

    requests = (
        TraceRequest(0.0, 500, 20),
        TraceRequest(0.1, 40_000, 20),  # longer than max_model_len: vLLM answers 400
        TraceRequest(0.2, 500, 20),
    )
    sc = Scenario(name="reject", requests=requests, tail_s=0.0)
    result = run_one(sc, Fixed(1))
    row = summarize(result, [])
    assert row["completed"] == 3
    assert row["rejected"] == 1
    assert row["slo_attainment"] == pytest.approx(2 / 3)
