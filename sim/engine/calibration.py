"""The measured GPU forward-pass tables, read from disk into frozen values.

The tables ship in `sim/data/calibration/` (or come from the directory in
`SURGESCALE_CALIBRATION_DIR`); their README there says how they were measured. This module only parses
them; `sim.engine.steptime` turns a table into a step-time model and `sim.engine.profiles` names
the GPU/model combinations built from them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sim.datafiles import data_dir

ENV_DIR = "SURGESCALE_CALIBRATION_DIR"
TABLE_8B_H200 = "h200_llama3_8b_forward.json"
TABLE_70B_TP4_H200 = "h200_llama3_70b_tp4_shard_forward.json"


class CalibrationError(ValueError):
    """A calibration table is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class DecodePoint:
    """One decode step: `batch` sequences each holding `context` tokens of KV cache."""

    batch: int
    context: int
    seconds: float


@dataclass(frozen=True, slots=True)
class PrefillPoint:
    """One prefill forward pass over `batch` prompts of `prompt` tokens each."""

    batch: int
    prompt: int
    seconds: float


@dataclass(frozen=True, slots=True)
class CalibrationTable:
    """A parsed table: the model's byte sizes and the measured points."""

    source: str
    weight_bytes: int
    kv_bytes_per_token: int
    copy_bytes_per_s: float
    decode: tuple[DecodePoint, ...]
    prefill: tuple[PrefillPoint, ...]


def default_dir() -> Path:
    """`$SURGESCALE_CALIBRATION_DIR`, else the copy packaged with surgescale
    (`sim/data/calibration`, `sim.datafiles`)."""
    return data_dir("calibration", ENV_DIR)


def load_table(name: str, directory: Path | None = None) -> CalibrationTable:
    """Read and validate one table file (`name` inside `directory`)."""
    path = (directory or default_dir()) / name
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CalibrationError(
            f"calibration table {path} not found; set {ENV_DIR} to the directory holding {name}"
        ) from exc
    except ValueError as exc:
        raise CalibrationError(f"calibration table {path} is not valid JSON: {exc}") from exc
    return parse_table(raw, source=str(path))


def parse_table(raw: object, *, source: str) -> CalibrationTable:
    """Validate the JSON structure of a table; errors name the offending field."""
    if not isinstance(raw, dict):
        raise CalibrationError(f"{source}: top level must be an object")
    try:
        info = raw["info"]
        decode = tuple(
            DecodePoint(int(r["batch"]), int(r["context"]), float(r["step_ms"]) / 1e3)
            for r in raw["decode"]
        )
        prefill = tuple(
            PrefillPoint(int(r["batch"]), int(r["prompt"]), float(r["prefill_ms"]) / 1e3)
            for r in raw["prefill"]
        )
        table = CalibrationTable(
            source=source,
            weight_bytes=int(info["weight_bytes"]),
            kv_bytes_per_token=int(info["kv_bytes_per_token"]),
            copy_bytes_per_s=float(info["copy_TBps"]) * 1e12,
            decode=decode,
            prefill=prefill,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"{source}: missing or bad field {exc!s}") from exc
    if not table.decode or not any(p.batch == 1 for p in table.prefill):
        raise CalibrationError(f"{source}: needs decode rows and batch-1 prefill rows")
    return table
