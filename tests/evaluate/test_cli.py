"""`surgescale sim evaluate` end to end on a tiny JSONL trace: files, table, last-line JSON."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sim.evaluate.cli import main
from sim.evaluate.trace import poisson


def _trace(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.jsonl"
    trace = poisson(rate=3.0, duration_s=60.0, prompt_tokens=800, output_tokens=32, seed=5)
    lines = [
        orjson.dumps(
            {
                "timestamp": round(r.arrival_s * 1000),
                "input_length": r.prompt_tokens,
                "output_length": r.output_tokens,
            }
        )
        for r in trace.requests
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_cli_writes_summary_table_plots_and_a_json_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "--trace",
            str(_trace(tmp_path)),
            "--policies",
            "ours,kpa,static-peak,oracle",
            "--out",
            str(out),
            "--jobs",
            "1",
            "--model-load",
            "20",
            "--node-boot",
            "40",
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    last = orjson.loads(lines[-1])
    assert last["speedup_x"] > 0
    assert Path(last["summary"]) == out / "summary.json"
    rows = orjson.loads((out / "summary.json").read_bytes())
    assert [r["policy"] for r in rows] == ["ours", "kpa", "static-peak", "oracle"]
    for row in rows:
        for key in ("slo_attainment", "ttft_p50_s", "ttft_p95_s", "ttft_p99_s", "gpu_hours"):
            assert key in row
        assert 0.0 <= row["slo_attainment"] <= 1.0
        assert row["requests"] == row["completed"] > 100
        assert isinstance(row["scale_events"], int)
    assert any(line.startswith("| ours |") for line in lines)
    settings = orjson.loads((out / "scenario.json").read_bytes())
    assert settings["model_load_s"] == 20.0
    assert settings["node_boot_s"] == 40.0
    assert settings["requests"] == rows[0]["requests"]
    for name in ("summary.csv", "summary.md", "replicas.png", "ttft.png", "pareto.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "replicas.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--policies", "ours,nope"], "unknown policy 'nope'", id="bad-policy"),
        pytest.param(["--rate-scale", "0"], "must be > 0", id="bad-rate"),
        pytest.param(["--trace", "/nonexistent/trace.csv"], "no such trace", id="no-trace"),
    ],
)
def test_cli_bad_input_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    base = ["--trace", str(_trace(tmp_path)), "--out", str(tmp_path / "o"), "--jobs", "1"]
    try:
        code = main(base + args)
    except SystemExit as exc:  # argparse's own type errors
        code = int(exc.code or 0)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_parallel_planning_gives_the_same_results_as_one_process() -> None:
    from sim.evaluate.runner import evaluate
    from sim.evaluate.world import Scenario

    trace = poisson(rate=4.0, duration_s=120.0, prompt_tokens=3000, output_tokens=24, seed=9)
    sc = Scenario(name="p", requests=trace.requests, model_load_s=20.0, node_boot_s=40.0)
    volatile = {"wall_s", "speedup_x", "cpu_s", "planning_cpu_s", "refine_cpu_s"}

    def rows(jobs: int) -> list[dict[str, object]]:
        ev = evaluate(sc, ["oracle", "static-peak", "kpa"], jobs=jobs)
        return [{k: v for k, v in r.summary.items() if k not in volatile} for r in ev.runs]

    one = rows(1)
    assert one == rows(2)
    assert len(one[0]["oracle_schedule"]) == 4  # type: ignore[arg-type]  # 120 s / 30 s buckets
