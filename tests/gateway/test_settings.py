"""Settings from flags, env and YAML, in that precedence, with errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.cli import settings_from_args
from gateway.settings import GatewaySettings, load_settings


def test_precedence_flags_over_env_over_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        "port: 9001\nmax_queue_length: 7\npod_concurrency: 3\n"
        "static_pods:\n  - {model: m, url: 'http://127.0.0.1:9'}\n"
    )
    monkeypatch.setenv("SURGESCALE_GATEWAY_MAX_QUEUE_LENGTH", "8")
    monkeypatch.setenv("SURGESCALE_GATEWAY_POD_CONCURRENCY", "4")
    s = settings_from_args(["--config", str(config), "--pod-concurrency", "5"])
    assert isinstance(s, GatewaySettings)
    assert s.port == 9001  # yaml
    assert s.max_queue_length == 8  # env beats yaml
    assert s.pod_concurrency == 5  # flag beats env
    assert [p.model for p in s.static_pods] == ["m"]


def test_env_lists_and_static_pod_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SURGESCALE_GATEWAY_STATIC_PODS", '["a=http://127.0.0.1:1", "b=http://127.0.0.1:2"]'
    )
    monkeypatch.setenv("SURGESCALE_GATEWAY_MODELS", '[{"name": "c", "service": "svc-c"}]')
    s = load_settings()
    assert s.model_names() == ["c", "a", "b"]
    route = s.route("c")
    assert route is not None
    assert route.selector() == "kubernetes.io/service-name=svc-c"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"port": 70000}, "port", id="port"),
        pytest.param({"workers": 2, "port": 0}, "port", id="workers-need-port"),
        pytest.param({"static_pods": ["nonsense"]}, "MODEL=URL", id="static-pod"),
        pytest.param({"models": [{"name": "x"}]}, "models", id="route-without-selector"),
        pytest.param({"log_level": "loud"}, "log_level", id="log-level"),
        pytest.param({"redis_url": "http://x"}, "redis_url", id="redis-url"),
    ],
)
def test_errors_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises((ValidationError, ValueError)) as info:
        GatewaySettings(**kwargs)  # type: ignore[arg-type]
    assert field in str(info.value)


def test_cli_rejects_bad_values_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    assert main(["--port", "70000"]) == 2
    assert "port" in capsys.readouterr().err


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param(
            {"slo": {"ttft_per_input_token_s": -0.001}}, "ttft_per_input_token_s", id="allowance"
        ),
        pytest.param({"slo": {"late_max_wait_s": -1}}, "late_max_wait_s", id="late-bound"),
        pytest.param({"slo": {"ttft_base_s": 0}}, "ttft_base_s", id="base"),
        pytest.param({"slo": {"first_token_s": "nan"}}, "first_token_s", id="nan"),
        pytest.param({"slo": {"dispatch": "lifo"}}, "dispatch", id="policy"),
        pytest.param(
            {"model_slos": {"m": {"late_max_wait_s": -5}}}, "late_max_wait_s", id="per-model"
        ),
        pytest.param({"keepalive_interval_s": -1}, "keepalive_interval_s", id="keepalive"),
    ],
)
def test_bad_slo_config_is_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        GatewaySettings(**kwargs)  # type: ignore[arg-type]
    assert field in str(info.value)


def test_cli_refuses_a_negative_bound_at_start(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    assert main(["--late-max-wait", "-3"]) == 2
    assert "late_max_wait_s" in capsys.readouterr().err


def test_slo_per_model_and_flags(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        "slo: {ttft_base_s: 2.0, ttft_per_input_token_s: 0.001}\n"
        "model_slos:\n  big: {ttft_base_s: 5.0, dispatch: fifo}\n"
    )
    s = settings_from_args(["--config", str(config), "--late-max-wait", "7"])
    assert isinstance(s, GatewaySettings)
    small = s.slo_for("small")
    assert (small.ttft_base_s, small.late_max_wait_s) == (2.0, 7.0)  # flag keeps the YAML base
    assert small.objective().deadline(10.0, 1000) == pytest.approx(13.0)
    big = s.slo_for("big")
    assert big.policy().order.value == "fifo"
    assert big.objective().ttft_budget(None) == 5.0


def test_defaults_cap_and_dispatch() -> None:
    s = GatewaySettings()
    assert s.pod_concurrency == 256  # vLLM's default max_num_seqs
    assert s.slo_for("any").policy().order.value == "deadline"
