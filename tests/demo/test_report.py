"""Summary figures and the report from hand-made recorded runs (no live stack needed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from sim.demo.record import ClusterSample, RunRecord, ScaleChange
from sim.demo.report import PLOTS, main, write_report
from sim.demo.summary import backlog_end, summarize, waiting_series
from sim.load.records import RequestResult


def _run(name: str = "surgescale", *, backlog: bool = True) -> RunRecord:
    requests: list[RequestResult] = []
    # quiet: 1 request/s, fast. burst at t=10..20: 10/s, slow first token until t=15 if backlog.
    for i in range(10):
        requests.append(RequestResult(scheduled_s=float(i), status="ok", ttft_s=0.1, e2e_s=1.0))
    for i in range(100):
        sent = 10.0 + i * 0.1
        ttft = max(0.1, 15.0 - sent) if backlog else 0.1
        requests.append(RequestResult(scheduled_s=sent, status="ok", ttft_s=ttft, e2e_s=ttft + 1))
    requests.append(RequestResult(scheduled_s=12.0, status="http_503", e2e_s=3.0))
    cluster = (
        ClusterSample(
            t=0.0,
            replicas_desired=1,
            replicas_starting=0,
            replicas_ready=1,
            nodes_desired=1,
            nodes_ready=1,
        ),
        ClusterSample(
            t=10.5,
            replicas_desired=3,
            replicas_starting=2,
            replicas_ready=1,
            nodes_desired=1,
            nodes_ready=1,
        ),
        ClusterSample(
            t=13.0,
            replicas_desired=3,
            replicas_starting=0,
            replicas_ready=3,
            nodes_desired=1,
            nodes_ready=1,
        ),
        ClusterSample(
            t=25.0,
            replicas_desired=1,
            replicas_starting=0,
            replicas_ready=1,
            nodes_desired=1,
            nodes_ready=1,
        ),
    )
    return RunRecord(
        name=name,
        label=name,
        slo_s=1.0,
        speed=10.0,
        duration_s=30.0,
        load_step_at=10.0,
        burst_end_at=20.0,
        gpus_per_replica=1,
        gpus_per_node=8,
        requests=tuple(requests),
        cluster=cluster,
        changes=(
            ScaleChange(t=10.5, target="replicas", old=1, new=3, reason="queue"),
            ScaleChange(t=25.0, target="replicas", old=3, new=1, reason="idle"),
        ),
        pod_ready_at=(13.0, 13.2),
    )


def test_waiting_series_counts_requests_without_first_token() -> None:
    reqs = [
        RequestResult(scheduled_s=1.0, status="ok", ttft_s=2.0),
        RequestResult(scheduled_s=2.0, status="connection_error"),  # ends at once: not waiting
        RequestResult(scheduled_s=2.5, status="ok", ttft_s=0.1),
    ]
    assert waiting_series(reqs, [0.5, 1.0, 2.55, 2.7, 3.0]) == [0, 1, 2, 1, 0]


def test_summary_figures() -> None:
    summary = summarize(_run())
    assert summary.requests == 111
    assert summary.failed == 1
    assert summary.reaction.patch_s == pytest.approx(0.5)
    assert summary.reaction.pod_ready_s == pytest.approx(3.0)
    assert summary.reaction.node_ready_s is None
    # every burst request sent before 14.0 has TTFT > 1 s; the backlog ends near t = 15.
    drain = summary.reaction.drain_s
    assert drain is not None
    assert 4.0 <= drain <= 5.5
    within = 10 + sum(1 for i in range(100) if max(0.1, 15.0 - (10 + i * 0.1)) <= 1.0)
    assert summary.slo_attainment == pytest.approx(within / 111)
    # GPU-minutes: 1 GPU x (10.5 + 3 x 2.5 [ready+starting] + 3 x 12 + 1 x 5) s.
    assert summary.gpu_minutes == pytest.approx((10.5 + 7.5 + 36.0 + 5.0) / 60.0)
    assert summary.max_replicas == 3


def test_no_backlog_drains_at_once() -> None:
    record = _run(backlog=False)
    assert backlog_end(record, after=10.0) is None
    assert summarize(record).reaction.drain_s == 0.0


def test_report_holds_the_plots(tmp_path: Path) -> None:
    page = write_report([_run(), _run("keda")], tmp_path)
    text = page.read_text()
    for name in PLOTS:
        png = tmp_path / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f'src="{name}"' in text
    assert "load step → scale PATCH" in text
    assert text.count("<th>keda</th>") == 1
    assert "1 → 3" in text  # the scale changes and their reasons are listed
    assert ">queue<" in text
    assert (tmp_path / "summary.json").exists()


def test_report_rebuilds_from_the_raw_run(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 2  # nothing to rebuild from
    (tmp_path / "run-surgescale.json").write_bytes(_run().to_json())
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / "report.html").exists()


def test_a_later_blip_does_not_undo_the_drain() -> None:
    record = _run()
    blip = (
        RequestResult(scheduled_s=27.0, status="ok", ttft_s=0.5, e2e_s=1.0),
        RequestResult(scheduled_s=27.0, status="ok", ttft_s=0.5, e2e_s=1.0),
        RequestResult(scheduled_s=27.0, status="ok", ttft_s=0.5, e2e_s=1.0),
    )
    with_blip = RunRecord.from_json(record.to_json())
    with_blip = RunRecord(
        **{
            **{f: getattr(with_blip, f) for f in with_blip.__dataclass_fields__},
            "requests": record.requests + blip,
        }
    )
    assert summarize(with_blip).reaction.drain_s == summarize(record).reaction.drain_s


def test_within_slo_is_the_shared_definition() -> None:
    """Attainment counts a request by `Slo`: with a per-input-token allowance a long prompt's
    slower first token can still be within SLO; failures never are."""
    reqs = (
        RequestResult(scheduled_s=0.0, status="ok", ttft_s=0.9, prompt_tokens=10),
        RequestResult(scheduled_s=0.0, status="ok", ttft_s=1.5, prompt_tokens=4000),  # 1 + 0.8 s
        RequestResult(scheduled_s=0.0, status="ok", ttft_s=1.5, prompt_tokens=1000),  # 1 + 0.2 s
        RequestResult(scheduled_s=0.0, status="http_503", prompt_tokens=1),
    )
    flat = replace(_run(), requests=reqs)
    assert summarize(flat).slo_attainment == pytest.approx(1 / 4)
    allowance = replace(flat, slo_per_input_token_s=0.0002)
    assert summarize(allowance).slo_attainment == pytest.approx(2 / 4)
    again = RunRecord.from_json(allowance.to_json())
    assert again.objective() == allowance.objective()
    assert again.requests[1].prompt_tokens == 4000


def test_old_run_files_still_load() -> None:
    raw = orjson.loads(_run().to_json())
    del raw["slo_per_input_token_s"]
    for r in raw["requests"]:
        del r["prompt_tokens"]
    old = RunRecord.from_json(orjson.dumps(raw))
    assert old.objective().ttft_budget(5000) == old.slo_s


def test_run_files_from_before_the_shared_request_record_still_load() -> None:
    """Run files once held the demo's own request record: `sent_at`, an HTTP status as bare
    digits, `prompt_tokens` possibly null. They read as the load generator's `RequestResult`
    and summarise as they did."""
    raw = orjson.loads(_run().to_json())
    raw["requests"] = [
        {"sent_at": 1.0, "status": "ok", "ttft_s": 0.2, "e2e_s": 0.5, "output_tokens": 3},
        {"sent_at": 2.0, "status": "503", "ttft_s": None, "e2e_s": None, "prompt_tokens": None},
        {"sent_at": 3.0, "status": "timeout", "ttft_s": None, "e2e_s": None, "output_tokens": 0},
    ]
    old = RunRecord.from_json(orjson.dumps(raw))
    assert [r.started_s for r in old.requests] == [1.0, 2.0, 3.0]
    assert [r.status for r in old.requests] == ["ok", "http_503", "timeout"]
    assert [r.ok for r in old.requests] == [True, False, False]
    summary = summarize(old)
    assert (summary.ok, summary.failed, summary.ttft_p50_s) == (1, 2, 0.2)
    assert summary.slo_attainment == pytest.approx(1 / 3)


def test_bench_figures_and_table_with_the_fifo_arm() -> None:
    from rich.console import Console

    from sim.demo.bench import figures, table

    ours, keda, fifo = summarize(_run()), summarize(_run("keda")), summarize(_run("fifo"))
    out = figures(ours, keda, speed=10.0, fifo=fifo)
    for key in (
        "ours_node_minutes",
        "baseline_node_minutes",
        "ours_gpu_minutes",
        "baseline_gpu_minutes",
        "ours_failed",
        "baseline_failed",
        "ours_fifo_slo_attainment",
    ):
        assert key in out, key
    assert out["ours_failed"] == 1
    assert out["ours_gpu_minutes"] == pytest.approx(ours.gpu_minutes, abs=1e-3)
    assert "ours_fifo_slo_attainment" not in figures(ours, keda, speed=10.0)
    console = Console(width=200, record=True)
    console.print(table(ours, keda, fifo))
    text = console.export_text()
    assert "fifo" in text
    assert "node-minutes" in text
