"""The faults bench's pure parts: verdicts, the JSON summary, the fuzz cases, metric parsing."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sim.benches.faults.context import duplicate_count
from sim.benches.faults.fuzzcases import cases, is_openai_error
from sim.benches.faults.observe import parse_metric
from sim.benches.faults.redis_flood import manifest_maxmemory_mb
from sim.benches.faults.report import Figure, at_least, at_most, info, measured, summary, table
from surgescale.events import Event, EventType


@pytest.mark.parametrize(
    ("figure", "passed"),
    [
        pytest.param(at_most("x", 0, 0), True, id="zero-failures"),
        pytest.param(at_most("x", 1, 0), False, id="one-failure"),
        pytest.param(at_most("x", 3.9, 4.0), True, id="under-bound"),
        pytest.param(at_most("x", None, 4.0), False, id="missing-is-a-miss"),
        pytest.param(at_most("x", 2.0, 4.0, censored=True), False, id="not-reached"),
        pytest.param(at_least("x", 99.5, 99.0), True, id="at-least-met"),
        pytest.param(at_least("x", 98.0, 99.0), False, id="at-least-missed"),
        pytest.param(info("x", 5), None, id="context-has-no-verdict"),
    ],
)
def test_verdicts(figure: Figure, passed: bool | None) -> None:
    assert figure.passed is passed


def test_summary_lists_misses_and_targets() -> None:
    template = (at_most("a", None, 0), at_least("b", None, 100))
    figs = [*measured(template, {"a": 2, "b": 120}), info("c", 1.5)]
    out = summary(figs, extra={"mode": "quick"})
    assert out["a"] == 2
    assert out["b"] == 120
    assert out["c"] == 1.5
    assert out["missed"] == ["a"]
    assert out["targets"] == {"a": "<= 0", "b": ">= 100"}
    assert out["targets_met"] is False
    assert "FAIL" in table(figs)
    assert "PASS" in table(figs)


def test_censored_figures_say_so() -> None:
    [fig] = measured((at_most("t", None, 1.0, "s"),), {"t": 12.0}, censored=["t"])
    out = summary([fig], extra={})
    assert out["t_censored"] is True
    assert out["missed"] == ["t"]
    assert fig.shown().startswith("≥")


def test_fuzz_cases_are_many_distinct_and_seeded() -> None:
    a = cases(model="m", api_key="k", count=150, seed=3)
    b = cases(model="m", api_key="k", count=150, seed=3)
    assert len(a) >= 150
    assert [c.raw for c in a] == [c.raw for c in b]
    assert len({c.raw for c in a}) > 140
    assert any(c.bound for c in a)
    assert any(b"\xff" in c.raw for c in a)  # a non-UTF-8 credential is among them


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        pytest.param({"error": {"message": "m", "type": "t", "code": None}}, True, id="openai"),
        pytest.param({"error": "m"}, False, id="flat-error"),
        pytest.param({"detail": "x"}, False, id="other-json"),
        pytest.param(None, False, id="null"),
    ],
)
def test_openai_error_shape(body: object, ok: bool) -> None:
    assert is_openai_error(orjson.dumps(body)) is ok


def test_plain_text_is_not_an_openai_error() -> None:
    assert not is_openai_error(b"404: Not Found")


def test_parse_metric_sums_matching_labels() -> None:
    text = "\n".join(
        [
            "# HELP surgescale_controller_in_flight Requests at pods.",
            'surgescale_controller_in_flight{model="a"} 3.0',
            'surgescale_controller_in_flight{model="b"} 4.0',
            "surgescale_controller_in_flight_other 9.0",
            "surgescale_controller_events_total 120.0",
        ]
    )
    assert parse_metric(text, "surgescale_controller_in_flight", {"model": "b"}) == 4.0
    assert parse_metric(text, "surgescale_controller_in_flight") == 7.0
    assert parse_metric(text, "surgescale_controller_events_total") == 120.0
    assert parse_metric(text, "nope") is None


def test_memory_bound_comes_from_the_manifest(tmp_path: Path) -> None:
    assert manifest_maxmemory_mb() == 400  # manifests/base/redis/statefulset.yaml
    other = tmp_path / "sts.yaml"
    other.write_text(
        "spec:\n  template:\n    spec:\n      containers:\n"
        "        - args: [redis-server, --maxmemory, 2gb]\n"
    )
    assert manifest_maxmemory_mb(other) == 2048


def test_duplicate_count_finds_resent_events() -> None:
    e = Event(type=EventType.COMPLETE, model="m", gateway="g", ts_ms=1, request_id="r", status=200)
    f = Event(type=EventType.COMPLETE, model="m", gateway="g", ts_ms=1, request_id="s", status=200)
    assert duplicate_count([e, f, e]) == 1
