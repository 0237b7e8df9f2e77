"""`kubectl get` output: server-side Table responses (meta.k8s.io/v1 Table).

kubectl asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`; the columns for
built-in kinds follow the real printers (pods: Ready, Status, Restarts, Age, IP, Node ...);
custom resources use their CRD's `additionalPrinterColumns` (a JSONPath subset: `.a.b`,
`.a[0]`, `.a[*].b`, `.a[?(@.k=="v")].b`), date columns rendered as ages like the real server.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from .clock import parse_timestamp
from .resources import PrinterColumn, ResourceType

Obj = dict[str, Any]
Cell = Callable[[Obj], Any]


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration."""
    if seconds < -1:
        return "<invalid>"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // (24 * 365)}y"


def age(value: Any) -> str:
    if not value:
        return "<unknown>"
    try:
        then = parse_timestamp(str(value))
    except ValueError:
        return "<invalid>"
    return human_duration((dt.datetime.now(dt.UTC) - then).total_seconds())


def _meta_age(obj: Obj) -> str:
    return age(obj.get("metadata", {}).get("creationTimestamp"))


def _name(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


# ---- JSONPath subset ---------------------------------------------------------------------
_TOKEN = re.compile(
    r"\.((?:[A-Za-z0-9_/-]|\\\.)+)|\[(\d+|\*)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*[\"']([^\"']*)[\"']\)\]"
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Evaluate the JSONPath subset used by printer columns; returns all matches."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    current = [obj]
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if not m:
            return []
        pos = m.end()
        field, index, fkey, fval = m.groups()
        nxt: list[Any] = []
        if field is not None:
            field = field.replace("\\.", ".")
        for item in current:
            if field is not None and isinstance(item, dict) and field in item:
                nxt.append(item[field])
            elif index is not None and isinstance(item, list):
                if index == "*":
                    nxt.extend(item)
                elif int(index) < len(item):
                    nxt.append(item[int(index)])
            elif fkey is not None and isinstance(item, list):
                for el in item:
                    val: Any = el
                    for part in fkey.split("."):
                        val = val.get(part) if isinstance(val, dict) else None
                    if val is not None and str(val) == fval:
                        nxt.append(el)
        current = nxt
    return current


def _column_cell(col: PrinterColumn) -> Cell:
    def cell(obj: Obj) -> Any:
        found = jsonpath(obj, col.json_path)
        if not found:
            return None
        value = found[0] if len(found) == 1 else ",".join(str(v) for v in found)
        if col.type == "date":
            return age(value)
        if col.type == "integer":
            try:
                return int(value)
            except (TypeError, ValueError):
                return value
        if col.type == "number":
            try:
                return float(value)
            except (TypeError, ValueError):
                return value
        if col.type == "boolean":
            return bool(value)
        if isinstance(value, (dict, list)):
            import orjson

            return orjson.dumps(value).decode()
        return str(value)

    return cell


# ---- built-in printers -------------------------------------------------------------------
def _pod_ready(obj: Obj) -> str:
    statuses = obj.get("status", {}).get("containerStatuses") or []
    total = len(obj.get("spec", {}).get("containers") or []) or len(statuses)
    ready = sum(1 for c in statuses if c.get("ready"))
    return f"{ready}/{total}"


def _pod_status(obj: Obj) -> str:
    if obj.get("metadata", {}).get("deletionTimestamp"):
        return "Terminating"
    status = obj.get("status", {})
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return str(waiting["reason"])
    return str(status.get("reason") or status.get("phase") or "Pending")


def _node_status(obj: Obj) -> str:
    ready = "Unknown"
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = "Ready" if cond.get("status") == "True" else "NotReady"
    if obj.get("spec", {}).get("unschedulable"):
        ready += ",SchedulingDisabled"
    return ready


def _node_roles(obj: Obj) -> str:
    roles = [
        k.split("/", 1)[1]
        for k in (obj.get("metadata", {}).get("labels") or {})
        if k.startswith("node-role.kubernetes.io/")
    ]
    return ",".join(sorted(roles)) or "<none>"


def _svc_ports(obj: Obj) -> str:
    ports = obj.get("spec", {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _slice_endpoints(obj: Obj) -> str:
    addrs = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    if not addrs:
        return "<unset>"
    shown = ",".join(addrs[:3])
    return shown + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")


def _images(obj: Obj) -> str:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return ",".join(str(c.get("image", "")) for c in spec.get("containers") or [])


def _containers(obj: Obj) -> str:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return ",".join(str(c.get("name", "")) for c in spec.get("containers") or [])


def _selector(obj: Obj) -> str:
    labels = (obj.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in labels.items())


def _get(path: str, default: Any = None) -> Cell:
    def cell(obj: Obj) -> Any:
        found = jsonpath(obj, path)
        return found[0] if found else default

    return cell


Column = tuple[str, str, int, Cell]  # name, type, priority, cell

NAME: Column = ("Name", "string", 0, _name)
AGE: Column = ("Age", "string", 0, _meta_age)

BUILTIN: dict[str, list[Column]] = {
    "Pod": [
        NAME,
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, _pod_status),
        (
            "Restarts",
            "string",
            0,
            lambda o: str(
                sum(
                    int(c.get("restartCount", 0))
                    for c in o.get("status", {}).get("containerStatuses") or []
                )
            ),
        ),
        AGE,
        ("IP", "string", 1, _get(".status.podIP", "<none>")),
        ("Node", "string", 1, _get(".spec.nodeName", "<none>")),
        ("Nominated Node", "string", 1, _get(".status.nominatedNodeName", "<none>")),
        ("Readiness Gates", "string", 1, lambda o: "<none>"),
    ],
    "Deployment": [
        NAME,
        (
            "Ready",
            "string",
            0,
            lambda o: (
                f"{o.get('status', {}).get('readyReplicas', 0)}/{o.get('spec', {}).get('replicas', 1)}"
            ),
        ),
        ("Up-to-date", "integer", 0, _get(".status.updatedReplicas", 0)),
        ("Available", "integer", 0, _get(".status.availableReplicas", 0)),
        AGE,
        ("Containers", "string", 1, _containers),
        ("Images", "string", 1, _images),
        ("Selector", "string", 1, _selector),
    ],
    "ReplicaSet": [
        NAME,
        ("Desired", "integer", 0, _get(".spec.replicas", 0)),
        ("Current", "integer", 0, _get(".status.replicas", 0)),
        ("Ready", "integer", 0, _get(".status.readyReplicas", 0)),
        AGE,
    ],
    "Node": [
        NAME,
        ("Status", "string", 0, _node_status),
        ("Roles", "string", 0, _node_roles),
        AGE,
        ("Version", "string", 0, _get(".status.nodeInfo.kubeletVersion", "")),
        (
            "Internal-IP",
            "string",
            1,
            _get('.status.addresses[?(@.type=="InternalIP")].address', "<none>"),
        ),
        ("External-IP", "string", 1, lambda o: "<none>"),
    ],
    "Namespace": [NAME, ("Status", "string", 0, _get(".status.phase", "Active")), AGE],
    "Service": [
        NAME,
        ("Type", "string", 0, _get(".spec.type", "ClusterIP")),
        ("Cluster-IP", "string", 0, _get(".spec.clusterIP", "<none>")),
        ("External-IP", "string", 0, lambda o: "<none>"),
        ("Port(s)", "string", 0, _svc_ports),
        AGE,
        (
            "Selector",
            "string",
            1,
            lambda o: (
                ",".join(f"{k}={v}" for k, v in (o.get("spec", {}).get("selector") or {}).items())
                or "<none>"
            ),
        ),
    ],
    "EndpointSlice": [
        NAME,
        ("AddressType", "string", 0, _get(".addressType", "")),
        (
            "Ports",
            "string",
            0,
            lambda o: ",".join(str(p.get("port")) for p in o.get("ports") or []) or "<unset>",
        ),
        ("Endpoints", "string", 0, _slice_endpoints),
        AGE,
    ],
    "Lease": [NAME, ("Holder", "string", 0, _get(".spec.holderIdentity", "")), AGE],
    "Event": [
        (
            "Last Seen",
            "string",
            0,
            lambda o: age(
                o.get("lastTimestamp")
                or o.get("eventTime")
                or o.get("metadata", {}).get("creationTimestamp")
            ),
        ),
        ("Type", "string", 0, _get(".type", "")),
        ("Reason", "string", 0, _get(".reason", "")),
        (
            "Object",
            "string",
            0,
            lambda o: (
                f"{str(o.get('involvedObject', {}).get('kind', '')).lower()}/{o.get('involvedObject', {}).get('name', '')}"
            ),
        ),
        ("Message", "string", 0, _get(".message", "")),
    ],
    "PriorityClass": [
        NAME,
        ("Value", "integer", 0, _get(".value", 0)),
        ("Global-Default", "boolean", 0, _get(".globalDefault", False)),
        AGE,
    ],
    "ConfigMap": [NAME, ("Data", "integer", 0, lambda o: len(o.get("data") or {})), AGE],
    "CustomResourceDefinition": [
        NAME,
        ("Created At", "date", 0, lambda o: o.get("metadata", {}).get("creationTimestamp")),
    ],
}


def columns_for(rt: ResourceType) -> list[Column]:
    if rt.printer_columns is not None:
        cols: list[Column] = [NAME]
        for pc in rt.printer_columns:
            cols.append(
                (pc.name, "string" if pc.type == "date" else pc.type, pc.priority, _column_cell(pc))
            )
        if not rt.printer_columns:
            cols.append(AGE)
        return cols
    return BUILTIN.get(rt.kind, [NAME, AGE])


def _row_object(obj: Obj, include: str) -> Any:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def to_table(
    rt: ResourceType,
    objs: list[Obj],
    *,
    resource_version: str,
    include: str = "Metadata",
    continue_token: str | None = None,
    with_definitions: bool = True,
) -> dict[str, Any]:
    cols = columns_for(rt)
    rows = [
        {"cells": [cell(obj) for _, _, _, cell in cols], "object": _row_object(obj, include)}
        for obj in objs
    ]
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": [
            {
                "name": n,
                "type": t,
                "format": "name" if n == "Name" else "",
                "description": n,
                "priority": p,
            }
            for n, t, p, _ in cols
        ]
        if with_definitions
        else [],
        "rows": rows,
    }
