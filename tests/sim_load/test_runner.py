"""The load generator against real simulated pods on loopback: replay timing, recorded results,
and a terminal status for every request whatever goes wrong."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from sim.load import cli
from sim.load.records import TraceRequest
from sim.load.runner import run_load
from sim.load.summary import CsvRecorder
from sim.load.trace import parse_jsonl
from sim.localredis.server import free_port
from sim.pod.faults import Faults
from sim.pod.runtime import PodOptions, RunningPod, start_pod


@pytest.fixture
async def pod() -> AsyncIterator[RunningPod]:
    running = await start_pod(PodOptions(model="llama3-8b"))
    try:
        yield running
    finally:
        await running.stop()


def _trace(times_ms: list[int], inp: int = 64, out: int = 5) -> list[TraceRequest]:
    lines = [
        orjson.dumps({"timestamp": t, "input_length": inp, "output_length": out}) for t in times_ms
    ]
    return list(parse_jsonl(lines))


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_replay_follows_the_scaled_schedule(
    pod: RunningPod, api: str, tmp_path: Path
) -> None:
    times = [0, 200, 300, 700, 1000, 1400, 2000]
    recorder = CsvRecorder(tmp_path / "out.csv")
    report = await run_load(
        _trace(times, out=7), target_url=pod.url, model="llama3-8b", time_scale=2.0, api=api,
        recorder=recorder,
    )  # fmt: skip
    recorder.close()
    assert [r.status for r in report.results] == ["ok"] * len(times)
    for r, t in zip(report.results, times, strict=True):
        assert r.scheduled_s == pytest.approx(t / 1000 / 2)
        assert r.sent_s is not None
        # never early; late only by what a busy machine costs (generous: shared CI machine)
        assert 0 <= r.sent_s - r.scheduled_s < 0.5, r
        assert r.output_tokens == 7
        assert r.ttft_s is not None
        assert r.e2e_s is not None
        assert r.tpot_s is not None
        assert 0 < r.ttft_s <= r.e2e_s
    sent = [r.sent_s or 0.0 for r in report.results]
    assert sent == sorted(sent)
    assert report.wall_s >= 1.0  # the last send is due at 1.0 s
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert len(rows) == len(times)
    assert {row["status"] for row in rows} == {"ok"}
    assert report.figures["slo_attainment"] == 1.0
    assert report.figures["ok"] == len(times)


async def test_errors_are_recorded_with_their_status() -> None:
    pod = await start_pod(PodOptions(model="llama3-8b", faults=Faults(error_rate=1.0)))
    try:
        report = await run_load(_trace([0, 10, 20]), target_url=pod.url, model="llama3-8b")
    finally:
        await pod.stop()
    assert [r.status for r in report.results] == ["http_500"] * 3
    assert all("injected" in r.error for r in report.results)
    assert report.figures["slo_attainment"] == 0.0


async def test_unreachable_target_gives_connection_errors() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    report = await run_load(_trace([0, 5]), target_url=url, model="m")
    assert [r.status for r in report.results] == ["connection_error"] * 2


async def test_wrong_model_is_a_404(pod: RunningPod) -> None:
    report = await run_load(_trace([0]), target_url=pod.url, model="other")
    assert report.results[0].status == "http_404"


async def test_timeouts_and_hangs_end_with_a_status() -> None:
    pod = await start_pod(PodOptions(model="llama3-8b", faults=Faults(hang=True)))
    try:
        report = await run_load(
            _trace([0, 50]), target_url=pod.url, model="llama3-8b", request_timeout=0.3
        )
    finally:
        await pod.stop()
    assert [r.status for r in report.results] == ["timeout"] * 2


async def test_duration_cap_and_drain_cancel_what_is_left() -> None:
    pod = await start_pod(PodOptions(model="llama3-8b", faults=Faults(hang=True)))
    try:
        report = await run_load(
            _trace([0, 100, 5000, 6000]),
            target_url=pod.url,
            model="llama3-8b",
            duration=1.0,
            drain_timeout=0.2,
        )
    finally:
        await pod.stop()
    assert report.beyond_duration == 2
    assert [r.status for r in report.results] == ["cancelled"] * 2
    assert report.figures["beyond_duration"] == 2


async def test_crash_mid_stream_is_recorded(tmp_path: Path) -> None:
    pod = await start_pod(PodOptions(model="llama3-8b"))
    run = asyncio.ensure_future(
        run_load(_trace([0, 0, 0], out=3000), target_url=pod.url, model="llama3-8b")
    )
    for _ in range(500):
        if pod.engine.running == 3:
            break
        await asyncio.sleep(0.01)
    await pod.set_faults(crash=True)
    report = await asyncio.wait_for(run, 30)
    assert len(report.results) == 3
    assert {r.status for r in report.results} <= {"connection_error", "protocol_error"}


async def test_bounded_concurrency_delays_sends(pod: RunningPod) -> None:
    report = await run_load(
        _trace([0, 0, 0, 0], out=40), target_url=pod.url, model="llama3-8b", concurrency=1
    )
    sent = [r.sent_s for r in report.results]
    e2e = [r.e2e_s for r in report.results]
    assert all(s is not None for s in sent)
    assert all(e is not None for e in e2e)
    for i in range(1, 4):
        prev_sent, prev_e2e, cur = sent[i - 1], e2e[i - 1], sent[i]
        assert prev_sent is not None
        assert prev_e2e is not None
        assert cur is not None
        assert cur >= prev_sent + prev_e2e - 1e-3  # one at a time


async def test_cli_prints_summary_and_last_line_json(
    pod: RunningPod, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text(
        "\n".join(
            orjson.dumps({"timestamp": t, "input_length": 30, "output_length": 4}).decode()
            for t in (0, 100, 200)
        )
    )
    out_csv = tmp_path / "r.csv"
    argv = ["--target", pod.url, "--trace", str(trace), "--time-scale", "4", "--out", str(out_csv)]
    code = await asyncio.to_thread(cli.main, argv)
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    figures = orjson.loads(lines[-1])
    assert figures["requests"] == 3
    assert figures["ok"] == 3
    for key in (
        "ttft_p50_ms",
        "ttft_p95_ms",
        "ttft_p99_ms",
        "tpot_p99_ms",
        "throughput_rps",
        "slo_attainment",
    ):
        assert key in figures
    assert len(list(csv.DictReader(out_csv.open()))) == 3
    assert cli.main(["--target", pod.url, "--trace", str(tmp_path / "missing.jsonl")]) == 2
