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
