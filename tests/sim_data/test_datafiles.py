"""The data shipped in `sim/data/` is what its recorded checksums say, and the simulator's data files
resolve to an override or the packaged copy.

The packaged copy is checked against `sim/data/SHA256SUMS`, which
is recorded in the repository (regenerate it with `cd sim/data && sha256sum ... > SHA256SUMS` only
when the data is deliberately replaced, together with the PROVENANCE beside it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sim import datafiles
from sim.engine.calibration import default_dir, load_table
from sim.load.trace import default_traces_dir, read_trace

SUMS = datafiles.PACKAGED / "SHA256SUMS"


def _recorded() -> dict[str, str]:
    """relative path -> sha256, from the `sha256sum` listing recorded in the repository."""
    out: dict[str, str] = {}
    for line in SUMS.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        out[name.lstrip("*")] = digest
    return out


def test_packaged_data_matches_its_recorded_checksums() -> None:
    recorded = _recorded()
    present = {
        str(p.relative_to(datafiles.PACKAGED))
        for p in datafiles.PACKAGED.rglob("*")
        if p.is_file() and p != SUMS and "__pycache__" not in p.parts
    }
    assert present == set(recorded), (
        f"unrecorded: {sorted(present - set(recorded))}, missing: {sorted(set(recorded) - present)}"
    )
    for name, digest in sorted(recorded.items()):
        actual = hashlib.sha256((datafiles.PACKAGED / name).read_bytes()).hexdigest()
        assert actual == digest, f"sim/data/{name} differs from its recorded checksum"


@pytest.mark.parametrize(
    "kind", ["karpenter-crds", "karpenter-aws-crds", "prometheus-operator-crds", "traces/azure2023"]
)
def test_third_party_data_has_licence_and_provenance(kind: str) -> None:
    folder = datafiles.PACKAGED / kind
    assert (folder / "LICENSE").is_file(), f"{folder} has no LICENSE"
    provenance = next(
        (folder / n for n in ("PROVENANCE.txt", "SOURCE.txt") if (folder / n).is_file()), None
    )
    assert provenance is not None, f"{folder} has no PROVENANCE.txt or SOURCE.txt"
    text = provenance.read_text()
    # every data file a provenance names is named with the checksum it had at the source
    for path in [*folder.glob("*.yaml"), *folder.glob("*.csv")]:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert path.name in text, f"{provenance} does not name {path.name}"
        assert digest in text, f"{provenance} does not record the checksum of {path.name}"


def test_without_an_override_the_packaged_copy_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_the_cluster_finds_the_packaged_karpenter_crds(monkeypatch: pytest.MonkeyPatch) -> None:
    from sim.cluster.cluster import default_crd_dir

    monkeypatch.delenv("SURGESCALE_KARPENTER_CRDS", raising=False)
    crds = default_crd_dir()
    assert crds == datafiles.PACKAGED / "karpenter-crds"
    assert (crds / "karpenter.sh_nodepools.yaml").is_file()
