"""Label and field selectors, parsed once and matched against stored objects.

Label selectors follow the Kubernetes grammar: `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
`k notin (a,b)`, `k`, `!k`, comma-separated (all must hold). Field selectors support `=`, `==` and
`!=` on any dotted path (`metadata.name`, `spec.nodeName`, `status.phase`, ...).
A `matchLabels`/`matchExpressions` LabelSelector object converts to the same form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op == "=":
            return present and labels[self.key] in self.values
        if self.op == "!=":
            return not present or labels[self.key] not in self.values
        if self.op == "in":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # notin


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in (x.strip() for x in parts) if p]


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if not text:
            return cls()
        reqs: list[Requirement] = []
        for part in _split_top(text):
            if "!=" in part:
                k, v = part.split("!=", 1)
                reqs.append(Requirement(k.strip(), "!=", frozenset({v.strip()})))
            elif "==" in part or ("=" in part and "(" not in part):
                k, v = part.split("==", 1) if "==" in part else part.split("=", 1)
                reqs.append(Requirement(k.strip(), "=", frozenset({v.strip()})))
            else:
                m = _SET_RE.match(part)
                if not m:
                    raise bad_request(f"unable to parse requirement: {part!r}")
                neg, key, op, vals = m.groups()
                if op:
                    if neg:
                        raise bad_request(f"unable to parse requirement: {part!r}")
                    values = frozenset(v.strip() for v in vals.split(",") if v.strip())
                    reqs.append(Requirement(key, op, values))
                else:
                    reqs.append(Requirement(key, "!exists" if neg else "exists"))
        return cls(tuple(reqs))

    @classmethod
    def from_object(cls, selector: Mapping[str, Any] | None) -> LabelSelector:
        """From a `metav1.LabelSelector` (`matchLabels` + `matchExpressions`)."""
        if not selector:
            return cls()
        reqs = [
            Requirement(k, "=", frozenset({str(v)}))
            for k, v in (selector.get("matchLabels") or {}).items()
        ]
        for expr in selector.get("matchExpressions") or []:
            op = str(expr.get("operator", ""))
            key = str(expr.get("key", ""))
            values = frozenset(str(v) for v in expr.get("values") or [])
            mapped = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
            if op not in mapped:
                raise bad_request(f"unsupported selector operator {op!r}")
            reqs.append(Requirement(key, mapped[op], values))
        return cls(tuple(reqs))

    @classmethod
    def from_map(cls, labels: Mapping[str, str] | None) -> LabelSelector:
        """From a plain map (a Service's or a Deployment's `matchLabels`)."""
        return cls(tuple(Requirement(k, "=", frozenset({v})) for k, v in (labels or {}).items()))

    def __str__(self) -> str:
        out = []
        for r in self.requirements:
            if r.op in ("=", "!="):
                out.append(f"{r.key}{r.op}{next(iter(r.values))}")
            elif r.op == "exists":
                out.append(r.key)
            elif r.op == "!exists":
                out.append(f"!{r.key}")
            else:
                out.append(f"{r.key} {r.op} ({','.join(sorted(r.values))})")
        return ",".join(out)


def get_path(obj: Mapping[str, Any], dotted: str) -> Any:
    """Value at a dotted path (`spec.nodeName`), or None."""
    cur: Any = obj
    for part in dotted.strip(".").split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


@dataclass(frozen=True, slots=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (path, equal?, value)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for path, equal, value in self.terms:
            actual = get_path(obj, path)
            text = "" if actual is None else str(actual)
            if (text == value) != equal:
                return False
        return True

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        if not text:
            return cls()
        terms = []
        for part in _split_top(text):
            if "!=" in part:
                k, v = part.split("!=", 1)
                terms.append((k.strip(), False, v.strip()))
            elif "=" in part:
                k, v = part.split("==", 1) if "==" in part else part.split("=", 1)
                terms.append((k.strip(), True, v.strip()))
            else:
                raise bad_request(f"invalid field selector: {part!r}")
        return cls(tuple(terms))
