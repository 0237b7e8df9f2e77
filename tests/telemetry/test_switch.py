"""The OpenTelemetry switch: off imports nothing; on degrades with one clear line when it can't.

Each case runs in a fresh interpreter (imports are process-wide): a gateway app built with the
switch off never loads `opentelemetry`; on with the packages missing (an import that fails, as
in an install without the `otel` extra) or with no exporter configured, it logs one warning
naming the fix and serves without telemetry; on with a console exporter it is installed. (redis-py
imports `opentelemetry` by itself when it is installed, so the check is on who asks for it.)
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller import telemetry as controller_telemetry

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
if sys.argv[1] == "missing":
    sys.modules["opentelemetry"] = None  # what an install without the otel extra looks like
OURS = ("gateway", "controller", "surgescale")
importers = set()

class Watch:
    # Notes which of our modules asks for opentelemetry (redis-py imports it on its own).
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            frame = sys._getframe(1)
            while frame is not None:
                module = frame.f_globals.get("__name__", "")
                if not module.startswith(("importlib", "_frozen_importlib")):
                    break
                frame = frame.f_back
            if frame is not None and module.split(".")[0] in OURS:
                importers.add(module)
        return None

sys.meta_path.insert(0, Watch())
from gateway.app import build_app
from gateway.settings import GatewaySettings
from gateway.telemetry import TELEMETRY
app = build_app(GatewaySettings(redis_url=None, allow_unauthenticated=True))
print(f"installed={TELEMETRY in app} imported_by={sorted(importers)}")
"""


def _run(mode: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SURGESCALE_"))}
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def _warnings(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("WARNING")]


def test_off_by_default_imports_no_opentelemetry() -> None:
    proc = _run("present")
    assert proc.stdout.strip() == "installed=False imported_by=[]"
    assert _warnings(proc) == []


def test_on_without_packages_logs_once_and_serves() -> None:
    proc = _run("missing", SURGESCALE_OTEL="1", OTEL_TRACES_EXPORTER="console")
    assert proc.stdout.strip() == "installed=False imported_by=[]"
    (line,) = _warnings(proc)
    assert "not installed" in line
    assert "surgescale[otel]" in line


def test_on_without_exporter_logs_once_and_serves() -> None:
    proc = _run("present", SURGESCALE_GATEWAY_OTEL="true")
    assert proc.stdout.strip().startswith("installed=False")
    (line,) = _warnings(proc)
    assert "no exporter is configured" in line
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in line


def test_on_with_an_exporter_installs() -> None:
    proc = _run("present", SURGESCALE_OTEL="1", OTEL_TRACES_EXPORTER="console")
    assert proc.stdout.strip() == (
        "installed=True imported_by=['gateway.telemetry', 'surgescale.telemetry']"
    )
    assert _warnings(proc) == []


def test_controller_switch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The controller's side of the same switch (in process: the packages are installed)."""
    for name in [k for k in os.environ if k.startswith(("OTEL_", "SURGESCALE_"))]:
        monkeypatch.delenv(name)
    assert controller_telemetry.from_env(False) is None  # off: nothing built, nothing logged
    assert caplog.records == []
    with caplog.at_level(logging.WARNING):
        assert controller_telemetry.from_env(True) is None  # on, nowhere to export to
    (record,) = caplog.records
    assert "no exporter is configured" in record.getMessage()
    monkeypatch.setenv("SURGESCALE_OTEL", "1")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    tel = controller_telemetry.from_env(False)
    assert isinstance(tel, controller_telemetry.DecisionTelemetry)
    tel.close()
