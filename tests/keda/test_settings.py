"""`surgescale keda-scaler` settings (`KedaSettings`): flags over env over defaults, one frozen
object, a bad value named by its flag."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controller.keda.cli import parse_args


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SURGESCALE_KEDA_MODELS", "SURGESCALE_KEDA_LISTEN", "POD_NAME"):
        monkeypatch.delenv(name, raising=False)


def test_models_from_flags_or_a_comma_separated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGESCALE_KEDA_MODELS", "a, b,,c")
    monkeypatch.setenv("SURGESCALE_KEDA_LISTEN", "127.0.0.1:7000")
    monkeypatch.setenv("POD_NAME", "keda-0")
    env = parse_args([])
    assert env.models == ["a", "b", "c"]
    assert (env.port, env.identity, env.log_level) == (7000, "keda-0", "INFO")
    flags = parse_args(["--model", "x", "--model", "y", "--listen", "0.0.0.0:9"])
    assert flags.models == ["x", "y"]  # the flags replace the environment's list
    assert flags.port == 9
    with pytest.raises(ValidationError):
        flags.listen = "1.2.3.4:5"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        pytest.param([], "name at least one model", id="no-model"),
        pytest.param(["--model", " "], "name at least one model", id="blank-model"),
        pytest.param(["--model", "m", "--listen", "9090"], "--listen", id="listen-without-host"),
        pytest.param(["--model", "m", "--log-level", "loud"], "--log-level", id="log-level"),
    ],
)
def test_a_bad_value_names_its_flag(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    assert said in capsys.readouterr().err
