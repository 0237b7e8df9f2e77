"""The scenario matrix: several evaluations in one command, one summary over all of them.

    surgescale sim evaluate --matrix default --out DIR
    surgescale sim evaluate --matrix entries.json --out DIR

`default` is Llama-3-8B on H200 (1 GPU per replica, 60 s model load) and Llama-3-70B TP4 on H200
(4 GPUs per replica, 2 replicas per 8-GPU node, 120 s model load), each on the Azure conv and
code traces at 1x and 4x: eight scenarios, all with the same SLO (TTFT deadline 1 s + 0.1 s per
1,000 prompt tokens, TPOT 50 ms). A matrix file is a JSON list of entries with the fields of
`Entry` (pydantic: a bad field is named). An entry that cannot run — a bad field, a missing
trace, an unknown profile, a replica larger than its node — is refused with a message on stderr
and the others run.

Outputs: `DIR/<entry>/` holds each scenario's own outputs (`summary.*`, plots, `scenario.json`);
`DIR/summary.json` has one row per (scenario, policy) with the scenario's name in `scenario`;
`DIR/summary.md` holds every scenario's table and the summary table; `DIR/refused.json` lists
the refused entries and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim.evaluate.trace import Trace, TraceError, rate_scale, read_trace
from sim.evaluate.world import Scenario
from surgescale.slo import Slo

TRACE_FILES = {
    "conv": "AzureLLMInferenceTrace_conv.csv",
    "code": "AzureLLMInferenceTrace_code.csv",
}


class Entry(BaseModel):
    """One scenario of the matrix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    trace: str
    """`conv`, `code` (the Azure 2023 traces in the load generator's directory) or a path."""
    rate_scale: float = Field(default=1.0, gt=0)
    profile: str = "llama3-8b-h200"
    model: str = "llama3-8b"
    gpus_per_replica: int = Field(default=1, ge=1)
    gpus_per_node: int = Field(default=8, ge=1)
    model_load_s: float = Field(default=60.0, ge=0)
    node_boot_s: float = Field(default=120.0, ge=0)
    pod_concurrency: int = Field(default=32, ge=1)
    slo_ttft_s: float = Field(default=1.0, gt=0)
    slo_ttft_per_input_token_s: float = Field(default=0.0001, ge=0)
    slo_tpot_s: float | None = Field(default=0.05, ge=0)
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    """None: derived from the trace (twice the oracle's peak)."""


def _default() -> list[Entry]:
    out = []
    for model, profile, gpus, load in (
        ("8b", "llama3-8b-h200", 1, 60.0),
        ("70b-tp4", "llama3-70b-tp4-h200", 4, 120.0),
    ):
        for trace in ("conv", "code"):
            for scale in (1.0, 4.0):
                out.append(
                    Entry(
                        name=f"{model}-{trace}-{scale:g}x",
                        trace=trace,
                        rate_scale=scale,
                        profile=profile,
                        model=f"llama3-{model}",
                        gpus_per_replica=gpus,
                        model_load_s=load,
                    )
                )
    return out


DEFAULT: tuple[Entry, ...] = tuple(_default())


class Refused(ValueError):
    """A matrix entry that cannot run; the message says why."""


def load(spec: str) -> tuple[list[Entry], list[dict[str, str]]]:
    """The entries of `default` or of a JSON file, and the refused ones (index/name, reason).
    A file that is not a JSON list raises `Refused`."""
    if spec == "default":
        return list(DEFAULT), []
    path = Path(spec)
    if not path.is_file():
        raise Refused(f"--matrix: no such matrix {spec!r} (use 'default' or a JSON file)")
    try:
        raw = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise Refused(f"--matrix {spec}: not JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise Refused(f"--matrix {spec}: expected a JSON list of entries")
    entries: list[Entry] = []
    refused: list[dict[str, str]] = []
    for i, item in enumerate(raw):
        label = str(item.get("name", f"#{i}")) if isinstance(item, dict) else f"#{i}"
        try:
            entries.append(Entry.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "entry"
            refused.append({"entry": label, "reason": f"{where}: {first['msg']}"})
    return entries, refused


def build(entry: Entry, *, traces_dir: Path, duration_s: float | None, seed: int) -> Scenario:
    """The entry's scenario, or `Refused` naming what is wrong."""
    from sim.engine import UnknownProfileError, get_profile

    if entry.gpus_per_replica > entry.gpus_per_node:
        raise Refused(
            f"gpus_per_replica {entry.gpus_per_replica} > gpus_per_node {entry.gpus_per_node}"
        )
    try:
        get_profile(entry.profile)
    except UnknownProfileError as exc:
        raise Refused(f"profile: {exc}") from exc
    path = (
        traces_dir / TRACE_FILES[entry.trace] if entry.trace in TRACE_FILES else Path(entry.trace)
    )
    try:
        trace: Trace = rate_scale(read_trace(path, max_duration_s=duration_s), entry.rate_scale)
    except TraceError as exc:
        raise Refused(f"trace: {exc}") from exc
    if not trace.requests:
        raise Refused(f"trace: {path} has no requests")
    slo = Slo.checked(
        ttft_base_s=entry.slo_ttft_s,
        ttft_per_input_token_s=entry.slo_ttft_per_input_token_s,
        tpot_s=entry.slo_tpot_s,
    )
    return Scenario(
        name=entry.name,
        requests=trace.requests,
        slo=slo,
        model_load_s=entry.model_load_s,
        node_boot_s=entry.node_boot_s,
        gpus_per_node=entry.gpus_per_node,
        gpus_per_replica=entry.gpus_per_replica,
        pod_concurrency=entry.pod_concurrency,
        profile=entry.profile,
        model=entry.model,
        min_replicas=entry.min_replicas,
        max_replicas=entry.max_replicas or 1,
        seed=seed,
    )


SUMMARY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("scenario", "scenario", "s"),
    ("policy", "policy", "s"),
    ("billed_gpu_hours", "billed GPU-h", "2f"),
    ("slo_attainment", "within SLO", "pct"),
    ("ttft_attainment", "TTFT met", "pct"),
    ("tpot_attainment", "TPOT met", "pct"),
    ("gpu_hours", "pod GPU-h", "2f"),
    ("peak_replicas", "peak repl.", "d"),
    ("max_replicas", "bound", "d"),
)


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """The matrix's summary as a markdown table (one row per scenario and policy)."""
    from sim.evaluate.report import _fmt

    head = "| " + " | ".join(t for _, t, _ in SUMMARY_COLUMNS) + " |"
    sep = "|" + "|".join("---" if k == "s" else "---:" for _, _, k in SUMMARY_COLUMNS) + "|"
    lines = [head, sep]
    for row in rows:
        lines.append(
            "| " + " | ".join(_fmt(row.get(key), kind) for key, _, kind in SUMMARY_COLUMNS) + " |"
        )
    return "\n".join(lines)
