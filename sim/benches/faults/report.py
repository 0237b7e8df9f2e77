"""The faults bench's figures: each value with its target, PASS/FAIL, the table and the JSON line.

A `Figure` is one measured number (`key` is its name in the JSON line) with a `Target` (at most,
at least, or none for context figures). A fault that could not run (its stack did not come up)
yields its figures with `value=None` and a note; they count as missed.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any


class Bound(enum.StrEnum):
    AT_MOST = "<="
    AT_LEAST = ">="
    INFO = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    """One measured number and its target."""

    key: str
    value: float | None
    unit: str = ""
    bound: Bound = Bound.INFO
    target: float = 0.0
    fault: str = ""
    censored: bool = False
    """The value is the observation bound: the real figure is at least this (never reached)."""

    @property
    def passed(self) -> bool | None:
        if self.bound is Bound.INFO:
            return None
        if self.value is None or math.isnan(self.value) or self.censored:
            return False
        if self.bound is Bound.AT_MOST:
            return self.value <= self.target
        return self.value >= self.target

    def shown(self) -> str:
        if self.value is None:
            return "n/a"
        text = f"{self.value:.2f}" if self.value != int(self.value) else f"{int(self.value)}"
        return ("≥ " if self.censored else "") + text + (f" {self.unit}" if self.unit else "")

    def target_text(self) -> str:
        if self.bound is Bound.INFO:
            return ""
        t = f"{self.target:g}"
        return f"{self.bound.value} {t}" + (f" {self.unit}" if self.unit else "")


def at_most(key: str, value: float | None, target: float, unit: str = "", **kw: Any) -> Figure:
    return Figure(key=key, value=value, unit=unit, bound=Bound.AT_MOST, target=target, **kw)


def at_least(key: str, value: float | None, target: float, unit: str = "", **kw: Any) -> Figure:
    return Figure(key=key, value=value, unit=unit, bound=Bound.AT_LEAST, target=target, **kw)


def info(key: str, value: float | None, unit: str = "", **kw: Any) -> Figure:
    return Figure(key=key, value=value, unit=unit, **kw)


def measured(
    template: Sequence[Figure], values: dict[str, float | None], censored: Iterable[str] = ()
) -> list[Figure]:
    """The template's figures with their measured values (a key not given stays missing)."""
    cut = set(censored)
    return [replace(f, value=values.get(f.key), censored=f.key in cut) for f in template]


def table(figures: Sequence[Figure]) -> str:
    rows = [("fault", "figure", "value", "target", "")]
    for f in figures:
        verdict = {True: "PASS", False: "FAIL", None: ""}[f.passed]
        rows.append((f.fault, f.key, f.shown(), f.target_text(), verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _json_value(value: float | None) -> float | int | None:
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return None
    return int(value) if value == int(value) else round(value, 3)


def summary(figures: Iterable[Figure], *, extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON object: every figure, its target, the misses and `targets_met`."""
    figures = list(figures)
    out: dict[str, Any] = {}
    targets: dict[str, str] = {}
    missed: list[str] = []
    for f in figures:
        out[f.key] = _json_value(f.value)
        if f.censored:
            out[f"{f.key}_censored"] = True
        if f.bound is not Bound.INFO:
            targets[f.key] = f.target_text()
            if not f.passed:
                missed.append(f.key)
    out.update(extra)
    out["targets"] = targets
    out["missed"] = missed
    out["targets_met"] = not missed and bool(targets)
    return out
