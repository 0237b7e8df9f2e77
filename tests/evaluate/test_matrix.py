"""`surgescale sim evaluate --matrix`: bad entries are refused with a message, the rest run."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sim.evaluate import matrix
from sim.evaluate.cli import main
from sim.evaluate.trace import poisson, write_jsonl


def test_default_matrix_is_two_models_on_two_traces_at_two_rates_with_a_tpot_objective() -> None:
    names = [e.name for e in matrix.DEFAULT]
    assert len(names) == len(set(names)) == 8
    shapes = {(e.profile, e.gpus_per_replica, e.gpus_per_node) for e in matrix.DEFAULT}
    assert shapes == {("llama3-8b-h200", 1, 8), ("llama3-70b-tp4-h200", 4, 8)}
    assert {(e.trace, e.rate_scale) for e in matrix.DEFAULT} == {
        ("conv", 1.0),
        ("conv", 4.0),
        ("code", 1.0),
        ("code", 4.0),
    }
    assert all(e.slo_tpot_s == 0.05 and e.max_replicas is None for e in matrix.DEFAULT)


def test_matrix_refuses_bad_entries_and_runs_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = write_jsonl(
        poisson(rate=2.0, duration_s=40.0, prompt_tokens=600, output_tokens=16, seed=2),
        tmp_path / "tiny.jsonl",
    )
    good = {"name": "tiny", "trace": str(trace), "model_load_s": 10.0, "node_boot_s": 20.0}
    entries = [
        good,
        {**good, "name": "too-wide", "gpus_per_replica": 16},
        {**good, "name": "negative", "rate_scale": -1},
        {**good, "name": "no-trace", "trace": str(tmp_path / "missing.csv")},
        {**good, "name": "typo", "gpus_per_nod": 8},
        {**good, "name": "no-profile", "profile": "gpt-9"},
    ]
    spec = tmp_path / "matrix.json"
    spec.write_bytes(orjson.dumps(entries))
    out = tmp_path / "out"
    code = main(
        [
            "--matrix",
            str(spec),
            "--out",
            str(out),
            "--policies",
            "ours,static-peak,oracle",
            "--jobs",
            "1",
            "--no-plots",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for name, why in (
        ("too-wide", "gpus_per_replica 16 > gpus_per_node 8"),
        ("negative", "rate_scale"),
        ("no-trace", "missing.csv"),
        ("typo", "gpus_per_nod"),
        ("no-profile", "gpt-9"),
    ):
        assert f"refused matrix entry {name}: " in captured.err, name
        line = next(x for x in captured.err.splitlines() if f"entry {name}:" in x)
        assert why in line, line
    rows = orjson.loads((out / "summary.json").read_bytes())
    assert [(r["scenario"], r["policy"]) for r in rows] == [
        ("tiny", "ours"),
        ("tiny", "static-peak"),
        ("tiny", "oracle"),
    ]
    for row in rows:
        for key in ("billed_gpu_hours", "gpu_hours", "slo_attainment", "ttft_attainment"):
            assert isinstance(row[key], float), key
        assert row["billed_gpu_hours"] >= row["gpu_hours"]  # whole nodes are billed
    assert len(orjson.loads((out / "refused.json").read_bytes())) == 5
    assert (out / "tiny" / "summary.json").is_file()
    assert "## Summary" in (out / "summary.md").read_text()
    last = orjson.loads(captured.out.strip().splitlines()[-1])
    assert last["speedup_x"] > 0
    assert last["scenarios"] == 1


def test_matrix_that_is_not_a_list_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "m.json"
    spec.write_text('{"name": "x"}')
    assert main(["--matrix", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert "expected a JSON list" in capsys.readouterr().err


def test_default_policy_set_is_ours_against_the_usual_baselines_and_the_oracle() -> None:
    from sim.evaluate.runner import DEFAULT_POLICIES

    assert DEFAULT_POLICIES == (
        "ours",
        "hpa-memory",
        "keda-prometheus",
        "kpa",
        "static-peak",
        "oracle",
    )
