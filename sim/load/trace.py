"""Request traces: readers for the Azure 2023 CSV and JSONL formats.

- Azure LLM inference trace 2023 (CC-BY-4.0, github.com/Azure/AzurePublicDataset): a CSV with
  `TIMESTAMP,ContextTokens,GeneratedTokens`; times become seconds from the first request.
- JSONL: one object per line, `{"timestamp": <ms from start>, "input_length": N,
  "output_length": M}`.

Both give `sim.load.records.TraceRequest` rows, the one trace-row type of the simulator.

Errors name the file, the line and the field. Synthetic arrivals live in `sim.load.patterns`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

import orjson

from sim.datafiles import data_dir
from sim.load.records import TraceRequest

ENV_TRACES = "SURGESCALE_TRACES_DIR"


class TraceError(ValueError):
    """A trace file is missing or malformed; the message says where."""


def default_traces_dir() -> Path:
    """`$SURGESCALE_TRACES_DIR`, else the copy packaged with surgescale
    (`sim/data/traces/azure2023`, `sim.datafiles`)."""
    return data_dir("traces/azure2023", ENV_TRACES)


def _parse_ts(text: str) -> datetime:
    # "2023-11-16 18:17:03.9799600": seven fractional digits; Python takes up to six
    head, _, frac = text.strip().partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}" if frac else head)


def read_azure_csv(path: Path | str, *, limit: int | None = None) -> list[TraceRequest]:
    """Read an Azure 2023 trace; times relative to its first row, in file order."""
    path = Path(path)
    out: list[TraceRequest] = []
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from exc
    with handle:
        reader = csv.DictReader(handle)
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames or ())
        if missing:
            raise TraceError(f"{path}: missing columns {sorted(missing)}")
        start: datetime | None = None
        for lineno, row in enumerate(reader, start=2):
            try:
                ts = _parse_ts(row["TIMESTAMP"])
                inp, outp = int(row["ContextTokens"]), int(row["GeneratedTokens"])
            except (TypeError, ValueError) as exc:
                raise TraceError(f"{path}:{lineno}: bad row {row!r}: {exc}") from exc
            if start is None:
                start = ts
            out.append(
                TraceRequest(
                    arrival_s=(ts - start).total_seconds(),
                    prompt_tokens=max(inp, 1),
                    output_tokens=max(outp, 1),
                    request_id=f"{path.stem}-{lineno - 1}",
                )
            )
            if limit is not None and len(out) >= limit:
                break
    return out


def read_jsonl(path: Path | str, *, limit: int | None = None) -> list[TraceRequest]:
    """Read JSONL lines of `{"timestamp": ms, "input_length": N, "output_length": M}`."""
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from exc
    return list(parse_jsonl(lines, source=str(path), limit=limit))


def parse_jsonl(
    lines: Iterable[bytes | str], *, source: str = "<jsonl>", limit: int | None = None
) -> Iterator[TraceRequest]:
    count = 0
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise TraceError(f"{source}:{lineno}: not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise TraceError(f"{source}:{lineno}: expected an object")
        values = []
        for field in ("timestamp", "input_length", "output_length"):
            v = obj.get(field)
            if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
                raise TraceError(f"{source}:{lineno}: field {field!r} must be a number >= 0")
            values.append(v)
        yield TraceRequest(
            arrival_s=float(values[0]) / 1e3,
            prompt_tokens=max(int(values[1]), 1),
            output_tokens=max(int(values[2]), 1),
            request_id=str(obj["request_id"]) if "request_id" in obj else f"{source}-{lineno}",
        )
        count += 1
        if limit is not None and count >= limit:
            return


def read_trace(
    path: Path | str, *, fmt: str | None = None, limit: int | None = None
) -> list[TraceRequest]:
    """Read a trace by format (`azure` or `jsonl`; guessed from the suffix when None)."""
    path = Path(path)
    fmt = fmt or ("jsonl" if path.suffix in (".jsonl", ".json", ".ndjson") else "azure")
    if fmt == "azure":
        return read_azure_csv(path, limit=limit)
    if fmt == "jsonl":
        return read_jsonl(path, limit=limit)
    raise TraceError(f"unknown trace format {fmt!r} (azure or jsonl)")
