"""Evaluate a CRD's `x-kubernetes-validations` CEL rules on an object, as the API server does on
create (the `cel-python` package interprets CEL).

A rule sits on a schema node and runs with `self` bound to each value present at that node
(absent optional fields are not checked). Transition rules (those reading `oldSelf`) only run on
update, so they are skipped here. `find` (the Kubernetes regex extension) and `split` (the CEL
strings extension), which Karpenter's and Karpenter AWS's rules use, are supplied. A rule that cannot be evaluated is reported as an error rather than passed over."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel


def _find(value: Any, pattern: Any) -> celtypes.StringType:
    match = re.search(str(pattern), str(value))
    return celtypes.StringType(match.group(0) if match else "")


def _split(value: Any, separator: Any) -> celtypes.ListType:
    return celtypes.ListType([celtypes.StringType(s) for s in str(value).split(str(separator))])


@functools.cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions={"find": _find, "split": _split})


def _rules(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """(JSON path with [] and {} for any item/key, rule, rule object) for every rule."""
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule["rule"], rule
    for name, sub in (schema.get("properties") or {}).items():
        yield from _rules(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), Mapping):
        yield from _rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from _rules(schema["additionalProperties"], f"{path}{{}}")


def _values(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every value of `obj` at `path` (expanding [] and {}), with its concrete path."""
    if not path:
        yield "", obj
        return
    head = re.match(r"\.?([^.\[{]+)|(\[\])|(\{\})", path)
    assert head is not None, path
    rest = path[head.end() :]
    if head.group(1):
        if isinstance(obj, Mapping) and head.group(1) in obj:
            for sub, value in _values(obj[head.group(1)], rest):
                yield f".{head.group(1)}{sub}", value
    elif head.group(2):
        for i, item in enumerate(obj if isinstance(obj, list) else []):
            for sub, value in _values(item, rest):
                yield f"[{i}]{sub}", value
    else:
        for key, item in obj.items() if isinstance(obj, Mapping) else []:
            for sub, value in _values(item, rest):
                yield f"[{key}]{sub}", value


def cel_errors(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> list[str]:
    """Messages of the create-time CEL rules that `obj` breaks (empty when it passes them all)."""
    errors: list[str] = []
    for path, rule, spec in _rules(schema, ""):
        if "oldSelf" in rule:
            continue
        for where, value in _values(obj, path):
            try:
                ok = _program(rule).evaluate({"self": json_to_cel(value)})
            except Exception as exc:  # a rule we cannot evaluate must not pass silently
                errors.append(f"{where.lstrip('.')}: cannot evaluate {rule!r}: {exc}")
                continue
            if isinstance(ok, Exception) or not bool(ok):
                message = spec.get("message") or f"failed rule {rule}"
                errors.append(f"{where.lstrip('.')}: {message}")
    return errors
