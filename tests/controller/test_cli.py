"""`surgescale controller` settings (`controller.config`): flags over env over the YAML file over
defaults, one frozen object, bad values named by their flag."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from controller.cli import parse_args
from controller.config import ControllerConfig, load_config
from controller.state import StateSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POD_NAME", "POD_NAMESPACE", "SURGESCALE_CONTROLLER_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def test_flags_env_file_and_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "controller.yaml"
    path.write_text("redis_url: redis://file:6379/0\nlease_duration_s: 5\ntick_s: 2\nshards: 4\n")
    monkeypatch.setenv("SURGESCALE_CONTROLLER_REDIS_URL", "redis://10.0.0.1:6379/0")
    monkeypatch.setenv("SURGESCALE_CONTROLLER_LEASE_DURATION_S", "6")
    argv = ["--config", str(path), "--kubeconfig", "/tmp/kc", "--namespace", "models"]
    config = parse_args([*argv, "--lease-duration-s", "8", "--long-window-s", "30"])
    assert config.kubeconfig == "/tmp/kc"
    assert config.redis_url == "redis://10.0.0.1:6379/0"  # env beats the file
    assert config.lease_duration_s == 8.0  # flag beats env and file
    assert config.tick_s == 2.0  # file beats the default
    assert config.shards == 4
    assert config.min_eval_interval_s == 0.05  # default
    assert config.namespace == "models"
    assert config.state == StateSettings(short_window_s=2.0, long_window_s=30.0)


def test_the_config_file_may_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("consumer_count: 7\n")
    monkeypatch.setenv("SURGESCALE_CONTROLLER_CONFIG", str(path))
    assert parse_args([]).consumer_count == 7


def test_the_pod_gives_identity_and_lease_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "controller-7f9c")
    monkeypatch.setenv("POD_NAMESPACE", "surgescale")
    config = parse_args([])
    assert (config.identity, config.lease_namespace) == ("controller-7f9c", "surgescale")
    assert (config.http_host, config.http_port) == ("0.0.0.0", 8080)


def test_one_frozen_object_with_every_field_a_flag() -> None:
    """No second list of fields: the loop's settings and the command line's are the same."""
    config = ControllerConfig(redis_url="redis://x:6379/0", http_port=None, ingest_chunk=64)
    with pytest.raises(ValidationError):
        config.tick_s = 5.0  # type: ignore[misc]
    argv: list[str] = []
    for name in ControllerConfig.model_fields:
        if name in ("identity", "lease_namespace", "kubeconfig", "namespace", "http_port"):
            continue
        argv += ["--" + name.replace("_", "-"), str(getattr(config, name))]
    skipped = {"identity", "http_port"}
    assert parse_args(argv).model_dump(exclude=skipped) == config.model_dump(exclude=skipped)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        pytest.param(["--lease-retry-s", "-1"], "--lease-retry-s", id="negative"),
        pytest.param(["--shards", "0"], "--shards", id="no-shards"),
        pytest.param(["--log-level", "chatty"], "--log-level", id="log-level"),
        pytest.param(["--http-port", "70000"], "--http-port", id="port"),
        pytest.param(["--config", "/nonexistent.yaml"], "--config", id="missing-file"),
        pytest.param(
            ["--lease-duration-s", "1", "--lease-retry-s", "1"], "lease_retry_s", id="fence"
        ),
    ],
)
def test_a_bad_value_names_its_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    assert flag in capsys.readouterr().err


def test_an_unknown_key_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("tick: 1\n")
    with pytest.raises(ValidationError, match="tick"):
        load_config(path)


def test_docs_list_every_setting() -> None:
    """docs/controller.md's table names the flag of every field (a new field needs a line)."""
    docs = (Path(__file__).parents[2] / "docs" / "controller.md").read_text()
    table = docs[docs.index("| flag (env") : docs.index("A controller run in-process")]
    missing = [
        name
        for name in ControllerConfig.model_fields
        if f"`--{name.replace('_', '-')}`" not in table
    ]
    assert missing == []


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """The help text is made from the field docstrings (a stray `%` there would break it)."""
    with pytest.raises(SystemExit) as info:
        parse_args(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert all(f"--{name.replace('_', '-')}" in out for name in ControllerConfig.model_fields)


def test_service_link_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kubernetes puts `SURGESCALE_CONTROLLER_SERVICE_HOST`, `..._PORT` and `..._PORT_9090_TCP*`
    into the pods of a namespace with a Service named surgescale-controller (ours): they share
    the prefix but name no field, and must not stop the controller from starting."""
    monkeypatch.setenv("SURGESCALE_CONTROLLER_SERVICE_HOST", "10.96.0.12")
    monkeypatch.setenv("SURGESCALE_CONTROLLER_PORT", "tcp://10.96.0.12:9090")
    monkeypatch.setenv("SURGESCALE_CONTROLLER_PORT_9090_TCP_PORT", "9090")
    config = parse_args([])
    assert config.http_port == 8080
