"""Kubernetes Events from the simulated controllers (what `kubectl describe` shows).

`EventRecorder.emit(obj, type, reason, message, source)` writes a core/v1 Event about `obj` in
its namespace (`default` for cluster-scoped objects), named `<object>.<hex>` like the real
recorder; a repeat of the same (object, reason, message) bumps `count` and `lastTimestamp`
instead. At most `limit` events are kept, oldest deleted first, so a big cluster does not fill
memory with them. Recording can be turned off (`ClusterOptions.record_events`).
"""

from __future__ import annotations

import collections
from typing import Any

from .clock import micro_timestamp, timestamp
from .resources import Registry
from .store import Obj, Store, clone


class EventRecorder:
    """Writes core/v1 Events into the store (see the module docstring)."""

    def __init__(
        self, registry: Registry, store: Store, *, enabled: bool = True, limit: int = 2000
    ) -> None:
        self.store = store
        self.enabled = enabled
        self.limit = limit
        self.rt = registry.require("", "v1", "events")
        self._seen: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._order: collections.deque[tuple[str, str]] = collections.deque()
        self._seq = 0

    def emit(self, obj: Obj, type_: str, reason: str, message: str, source: str) -> None:
        if not self.enabled:
            return
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        ns = meta.get("namespace") or "default"
        key = (uid, reason, message)
        now = timestamp()
        known = self._seen.get(key)
        if known is not None:
            existing = self.store.try_get(self.rt, *known)
            if existing is not None:
                new = clone(existing)
                new["count"] = int(new.get("count", 1)) + 1
                new["lastTimestamp"] = now
                self.store.update(self.rt, new, check_rv=False)
                return
        self._seq += 1
        name = f"{meta.get('name', 'object')}.{self._seq:016x}"
        event: dict[str, Any] = {
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", ""),
                "kind": obj.get("kind", ""),
                "name": meta.get("name", ""),
                "namespace": meta.get("namespace", ""),
                "uid": uid,
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "source": {"component": source},
            "reportingComponent": source,
            "reportingInstance": f"{source}-sim",
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": micro_timestamp(),
            "action": reason,
        }
        ns_rt = self.store.registry.require("", "v1", "namespaces")
        if self.store.try_get(ns_rt, "", ns) is None:
            return
        self.store.create(self.rt, event)
        self._seen[key] = (ns, name)
        self._order.append((ns, name))
        while len(self._order) > self.limit:
            old_ns, old_name = self._order.popleft()
            if self.store.try_get(self.rt, old_ns, old_name) is not None:
                self.store.delete(self.rt, old_ns, old_name)
        if len(self._seen) > 4 * self.limit:
            alive = set(self._order)
            self._seen = {k: v for k, v in self._seen.items() if v in alive}


class EventSource:
    """Mixin of the simulated controllers: `_event` records through `events` when one is set
    (the cluster sets it on every part at start; without it, events are simply not recorded)."""

    events: EventRecorder | None = None

    def _event(self, obj: Obj, type_: str, reason: str, message: str, source: str) -> None:
        if self.events is not None:
            self.events.emit(obj, type_, reason, message, source)
