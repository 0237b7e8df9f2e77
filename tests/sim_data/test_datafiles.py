"""The simulator's data files resolve to an override, the shared data, or the packaged copy."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sim import datafiles
from sim.engine.calibration import default_dir, load_table
from sim.load.trace import default_traces_dir, read_trace

KINDS = ["calibration", "traces/azure2023", "karpenter-crds"]


@pytest.mark.parametrize("kind", KINDS)
def test_packaged_copy_exists_and_matches_the_shared_data(kind: str) -> None:
    packaged = datafiles.PACKAGED / kind
    shared = datafiles.SHARED / kind
    assert packaged.is_dir(), f"packaged data missing: {packaged}"
    assert shared.is_dir(), f"the project's shared data is expected beside the repo: {shared}"
    for original in sorted(p for p in shared.iterdir() if p.is_file()):
        copy = packaged / original.name
        assert copy.is_file(), f"{copy} is not packaged"
        digest = hashlib.sha256(original.read_bytes()).hexdigest()
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == digest, f"{copy} differs"


def test_without_shared_data_the_packaged_copy_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(datafiles, "SHARED", tmp_path / "nowhere")
    monkeypatch.delenv("SURGESCALE_CALIBRATION_DIR", raising=False)
    monkeypatch.delenv("SURGESCALE_TRACES_DIR", raising=False)
    assert default_dir() == datafiles.PACKAGED / "calibration"
    assert load_table("h200_llama3_8b_forward.json").decode
    traces = default_traces_dir()
    assert traces == datafiles.PACKAGED / "traces/azure2023"
    assert len(read_trace(traces / "AzureLLMInferenceTrace_code.csv")) == 8819


def test_an_override_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SURGESCALE_CALIBRATION_DIR", str(tmp_path))
    assert default_dir() == tmp_path


def test_the_cluster_finds_the_packaged_karpenter_crds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sim.cluster.cluster import default_crd_dir

    monkeypatch.setattr(datafiles, "SHARED", tmp_path / "nowhere")
    monkeypatch.delenv("SURGESCALE_KARPENTER_CRDS", raising=False)
    crds = default_crd_dir()
    assert crds == datafiles.PACKAGED / "karpenter-crds"
    assert (crds / "karpenter.sh_nodepools.yaml").is_file()
