"""Trace readers, synthetic patterns and prompt sizing (pure, no network)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sim.load.patterns import Sizes, flash_crowd, pattern, ramp, sine, step
from sim.load.prompts import prompt_text, request_body
from sim.load.trace import TraceError, default_traces_dir, parse_jsonl, read_azure_csv, read_trace
from sim.pod.wire import text_tokens


def test_azure_code_trace_reads_whole_with_relative_times() -> None:
    path = default_traces_dir() / "AzureLLMInferenceTrace_code.csv"
    assert path.exists(), f"Azure trace missing at {path}; set SURGESCALE_TRACES_DIR"
    reqs = read_azure_csv(path)
    assert len(reqs) == 8819
    assert reqs[0].arrival_s == 0.0
    assert (reqs[0].prompt_tokens, reqs[0].output_tokens) == (4808, 10)
    assert reqs[1].arrival_s == pytest.approx(0.052, abs=1e-6)  # 18:17:04.03196 - 18:17:03.97996
    assert all(b.arrival_s >= a.arrival_s for a, b in itertools.pairwise(reqs))
    assert 3000 < reqs[-1].arrival_s < 3700  # about an hour
    assert len(read_trace(path, limit=10)) == 10


def test_jsonl_reads_milliseconds_and_sizes(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(
        '{"timestamp": 0, "input_length": 10, "output_length": 5}\n\n'
        '{"timestamp": 1500, "input_length": 20, "output_length": 7, "request_id": "x"}\n'
    )
    reqs = read_trace(p)
    assert [(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in reqs] == [
        (0.0, 10, 5),
        (1.5, 20, 7),
    ]
    assert reqs[1].request_id == "x"


@pytest.mark.parametrize(
    ("line", "match"),
    [
        pytest.param(b"{oops", "not JSON", id="not-json"),
        pytest.param(b"[1]", "expected an object", id="not-object"),
        pytest.param(b'{"timestamp": 1, "input_length": 2}', "output_length", id="missing-field"),
        pytest.param(
            b'{"timestamp": -1, "input_length": 2, "output_length": 1}', "timestamp", id="negative"
        ),
        pytest.param(
            b'{"timestamp": "0", "input_length": 2, "output_length": 1}', "timestamp", id="string"
        ),
    ],
)
def test_bad_jsonl_lines_name_line_and_field(line: bytes, match: str) -> None:
    good = b'{"timestamp": 0, "input_length": 1, "output_length": 1}'
    with pytest.raises(TraceError, match=match) as err:
        list(parse_jsonl([good, line], source="f.jsonl"))
    assert "f.jsonl:2" in str(err.value)


def test_bad_csv_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("TIMESTAMP,ContextTokens\n2023-11-16 18:17:03.1,5\n")
    with pytest.raises(TraceError, match="missing columns"):
        read_azure_csv(p)
    with pytest.raises(TraceError, match="cannot read"):
        read_azure_csv(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("name", "rate", "peak", "expected"),
    [
        pytest.param("poisson", 20.0, None, 20.0 * 60, id="poisson"),
        pytest.param("step", 10.0, 30.0, 10.0 * 20 + 30.0 * 40, id="step"),
        pytest.param("ramp", 10.0, 30.0, 20.0 * 60, id="ramp"),
        pytest.param("sine", 10.0, 30.0, 20.0 * 60, id="sine"),
    ],
)
def test_patterns_deliver_their_mean_rate(
    name: str, rate: float, peak: float | None, expected: float
) -> None:
    reqs = pattern(name, rate=rate, duration=60.0, peak=peak, seed=42, period=60.0)
    assert abs(len(reqs) - expected) < 4 * expected**0.5  # within 4 sigma of Poisson
    assert all(0 <= r.arrival_s < 60 for r in reqs)
    assert reqs == pattern(name, rate=rate, duration=60.0, peak=peak, seed=42, period=60.0)
    assert reqs != pattern(name, rate=rate, duration=60.0, peak=peak, seed=43, period=60.0)


def test_rate_shapes() -> None:
    assert step(1, 5, 10)(9.9) == 1
    assert step(1, 5, 10)(10) == 5
    assert ramp(0, 10, 100)(50) == 5
    assert ramp(0, 10, 100)(500) == 10
    s = sine(10, 5, 60)
    assert s(15) == pytest.approx(15)
    assert s(45) == pytest.approx(5)
    f = flash_crowd(2, 50, 10, rise=5, hold=10, decay=5)
    assert (f(5), f(12.5), f(20), f(25)) == (2, 26, 50, 50)
    assert 2 < f(40) < 50


def test_flash_crowd_concentrates_arrivals() -> None:
    reqs = pattern("flash", rate=2.0, peak=40.0, at=20.0, duration=60.0, seed=1)
    before = sum(1 for r in reqs if r.arrival_s < 20)
    during = sum(1 for r in reqs if 25 <= r.arrival_s < 45)
    assert during > 5 * before


def test_sizes_from_trace_pool() -> None:
    pool = Sizes(pool=((1, 2), (3, 4)))
    reqs = pattern("poisson", rate=50, duration=2, sizes=pool, seed=3)
    assert {(r.prompt_tokens, r.output_tokens) for r in reqs} == {(1, 2), (3, 4)}


@pytest.mark.parametrize("tokens", [1, 7, 10, 513, 4000])
def test_prompts_are_sized_to_the_pods_token_rule(tokens: int) -> None:
    text = prompt_text(tokens, salt=tokens)
    assert len(text) == 4 * tokens
    assert text_tokens(text) == tokens
    body = request_body(api="completions", model="m", input_tokens=tokens, output_tokens=3)
    assert body["max_tokens"] == 3
    assert body["stream"] is True
