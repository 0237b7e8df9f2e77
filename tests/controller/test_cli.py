"""`surgescale controller` settings: flags over env over defaults, bad values name the flag."""

from __future__ import annotations

import pytest

from controller.cli import parse_args, to_config


def test_flags_env_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGESCALE_CONTROLLER_REDIS_URL", "redis://10.0.0.1:6379/0")
    monkeypatch.setenv("SURGESCALE_CONTROLLER_LEASE_DURATION_S", "6")
    settings = parse_args(
        ["--kubeconfig", "/tmp/kc", "--namespace", "models", "--lease-duration-s", "8"]
    )
    assert settings.kubeconfig == "/tmp/kc"
    assert settings.redis_url == "redis://10.0.0.1:6379/0"  # from env
    assert settings.lease_duration_s == 8.0  # flag beats env
    assert settings.tick_s == 1.0  # default
    config = to_config(settings)
    assert config.namespace == "models"
    assert config.lease_duration_s == 8.0
    assert config.min_eval_interval_s == 0.05


def test_a_bad_value_names_its_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["--lease-retry-s", "-1"])
    assert info.value.code == 2
    assert "--lease-retry-s" in capsys.readouterr().err
