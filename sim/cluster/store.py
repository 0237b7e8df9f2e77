"""The object store: resourceVersions, optimistic concurrency, watch history and fan-out.

One in-memory dict per resource type, one global resourceVersion counter (like etcd's revision),
a bounded history of change events so a watch can resume from a resourceVersion (older than the
history -> 410 Gone), and per-watcher queues filled at write time (filtering by namespace and
selectors happens once per event per watcher). Internal controllers subscribe with plain
callbacks. Stored objects are never mutated in place: writers pass a fresh dict, readers that
want to change one take `clone()` first. Pods are deleted gracefully (deletionTimestamp first,
the kubelet finishes the delete) and dependents are garbage-collected through ownerReferences,
as the real registry and garbage collector do. All methods are synchronous: the event loop is
the lock, so nothing here can interleave with another write.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import random
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from . import errors
from .clock import timestamp
from .resources import Registry, ResourceType
from .selectors import FieldSelector, LabelSelector

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
WATCH_QUEUE_LIMIT = 50_000


def clone(obj: Obj) -> Obj:
    """A deep copy (through orjson: faster than copy.deepcopy for JSON-shaped data)."""
    out: Obj = orjson.loads(orjson.dumps(obj))
    return out


def random_suffix(n: int = 5, rng: random.Random | None = None) -> str:
    r = rng or random
    return "".join(r.choice(_NAME_CHARS) for _ in range(n))


@dataclass(slots=True)
class WatchEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    rt: ResourceType
    obj: Obj
    encoded: bytes | None = None  # cached JSON of {"type","object"} for plain watchers

    def json_line(self) -> bytes:
        if self.encoded is None:
            self.encoded = orjson.dumps({"type": self.type, "object": self.obj}) + b"\n"
        return self.encoded


class Watcher:
    """One watch stream's filter and queue; `None` in the queue means the stream must end."""

    def __init__(
        self, rt: ResourceType, namespace: str | None, labels: LabelSelector, fields: FieldSelector
    ) -> None:
        self.rt = rt
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self.closed = False

    def matches(self, obj: Obj) -> bool:
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace", "") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(obj)

    def offer(self, event: WatchEvent) -> None:
        if self.closed or not self.matches(event.obj):
            return
        if self.queue.qsize() >= WATCH_QUEUE_LIMIT:
            self.close()  # a watcher that cannot keep up is dropped, as the real server does
            return
        self.queue.put_nowait(event)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


class Store:
    """All objects of all served types, with watch history and subscribers."""

    def __init__(self, registry: Registry, *, history: int = 20_000, seed: int | None = None):
        self.registry = registry
        self.rv = 1
        self._objects: dict[str, dict[Key, Obj]] = collections.defaultdict(dict)
        self._history: collections.deque[WatchEvent] = collections.deque(maxlen=history)
        self._compacted_rv = 0
        self._watchers: dict[str, set[Watcher]] = collections.defaultdict(set)
        self._listeners: list[Callable[[WatchEvent], None]] = []
        self._pending: collections.deque[WatchEvent] = collections.deque()
        self._dispatching = False
        self._owned: dict[str, set[tuple[str, Key]]] = collections.defaultdict(set)
        self._rt_by_key: dict[str, ResourceType] = {}
        self.rng = random.Random(seed)

    # ---- reads -------------------------------------------------------------------------
    def try_get(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        return self._objects[rt.key].get((namespace if rt.namespaced else "", name))

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.try_get(rt, namespace, name)
        if obj is None:
            raise errors.not_found(rt.plural, name, rt.group)
        return obj

    def items(self, rt: ResourceType) -> Iterable[Obj]:
        return self._objects[rt.key].values()

    def count(self, rt: ResourceType) -> int:
        return len(self._objects[rt.key])

    def select(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> tuple[list[Obj], str, str | None]:
        """Matching objects sorted by (namespace, name), the list resourceVersion, next token."""
        labels = labels or LabelSelector()
        fields = fields or FieldSelector()
        start: Key | None = None
        if continue_token:
            try:
                raw = orjson.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start = (str(raw["ns"]), str(raw["name"]))
            except Exception as exc:
                raise errors.bad_request(f"invalid continue token: {exc}") from exc
        out: list[Obj] = []
        next_token: str | None = None
        for key in sorted(self._objects[rt.key]):
            if start is not None and key <= start:
                continue
            if namespace is not None and key[0] != namespace:
                continue
            obj = self._objects[rt.key][key]
            if not labels.matches(obj["metadata"].get("labels")) or not fields.matches(obj):
                continue
            if limit and len(out) >= limit:
                last = out[-1]["metadata"]
                token = {"ns": last.get("namespace", ""), "name": last["name"]}
                next_token = base64.urlsafe_b64encode(orjson.dumps(token)).decode()
                break
            out.append(obj)
        return out, str(self.rv), next_token

    def dependents(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        out = []
        for rt_key, key in list(self._owned.get(uid, ())):
            obj = self._objects[rt_key].get(key)
            if obj is not None:
                out.append((self._rt_by_key[rt_key], obj))
        return out

    # ---- writes ------------------------------------------------------------------------
    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _publish(self, rt: ResourceType, type_: str, obj: Obj, rv: int) -> None:
        event = WatchEvent(rv, type_, rt, obj)
        if len(self._history) == self._history.maxlen:
            self._compacted_rv = self._history[0].rv
        self._history.append(event)
        for watcher in list(self._watchers.get(rt.key, ())):
            watcher.offer(event)
        # Listeners may write (and so publish) themselves: queue, so each sees events in order.
        self._pending.append(event)
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._pending:
                queued = self._pending.popleft()
                for listener in self._listeners:
                    try:
                        listener(queued)
                    except Exception:
                        log.exception("store listener %r failed", listener)
        finally:
            self._dispatching = False

    def _index_owners(self, rt: ResourceType, key: Key, obj: Obj, add: bool) -> None:
        for ref in obj["metadata"].get("ownerReferences") or []:
            uid = ref.get("uid")
            if not uid:
                continue
            if add:
                self._owned[uid].add((rt.key, key))
            else:
                self._owned[uid].discard((rt.key, key))
                if not self._owned[uid]:
                    del self._owned[uid]

    def create(self, rt: ResourceType, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise errors.invalid(
                    rt.kind, "", [("metadata.name", "name or generateName is required")], rt.group
                )
            for _ in range(20):
                meta["name"] = prefix + random_suffix(rng=self.rng)
                if (meta.get("namespace", ""), meta["name"]) not in self._objects[rt.key]:
                    break
        if rt.namespaced:
            meta["namespace"] = meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        key = (meta.get("namespace", ""), meta["name"])
        if key in self._objects[rt.key]:
            raise errors.already_exists(rt.plural, meta["name"], rt.group)
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        rv = self._next_rv()
        meta["uid"] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        meta["resourceVersion"] = str(rv)
        meta["creationTimestamp"] = timestamp()
        meta.pop("deletionTimestamp", None)
        if rt.tracks_generation:
            meta["generation"] = 1
        self._rt_by_key[rt.key] = rt
        self._objects[rt.key][key] = obj
        self._index_owners(rt, key, obj, add=True)
        self._publish(rt, "ADDED", obj, rv)
        return obj

    def update(self, rt: ResourceType, obj: Obj, *, check_rv: bool = True) -> Obj:
        """Replace a stored object. A set, stale `metadata.resourceVersion` is a 409 Conflict."""
        meta = obj.setdefault("metadata", {})
        name = meta.get("name", "")
        namespace = (meta.get("namespace") or "default") if rt.namespaced else ""
        key = (namespace, name)
        old = self._objects[rt.key].get(key)
        if old is None:
            raise errors.not_found(rt.plural, name, rt.group)
        old_meta = old["metadata"]
        given = meta.get("resourceVersion")
        if check_rv and given and str(given) != old_meta["resourceVersion"]:
            raise errors.conflict(rt.plural, name, rt.group)
        if old_meta.get("uid") and meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise errors.conflict(rt.plural, name, rt.group)
        for fixed in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if fixed in old_meta:
                meta[fixed] = old_meta[fixed]
        if rt.namespaced:
            meta["namespace"] = namespace
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        if rt.tracks_generation:
            generation = int(old_meta.get("generation", 1))
            if _spec_part(obj) != _spec_part(old):
                generation += 1
            meta["generation"] = generation
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and rt.plural != "pods":
            return self._remove(rt, key, old)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if obj == old:  # a no-op write changes nothing and emits no event, as the real server
            return old
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        self._index_owners(rt, key, old, add=False)
        self._objects[rt.key][key] = obj
        self._index_owners(rt, key, obj, add=True)
        self._publish(rt, "MODIFIED", obj, rv)
        return obj

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        grace_seconds: int | None = None,
        expect_rv: str | None = None,
        expect_uid: str | None = None,
    ) -> Obj:
        """Delete; pods on a node and objects with finalizers are only marked for deletion."""
        key = (namespace if rt.namespaced else "", name)
        old = self._objects[rt.key].get(key)
        if old is None:
            raise errors.not_found(rt.plural, name, rt.group)
        meta = old["metadata"]
        if expect_rv and expect_rv != meta["resourceVersion"]:
            raise errors.conflict(rt.plural, name, rt.group)
        if expect_uid and expect_uid != meta.get("uid"):
            raise errors.conflict(rt.plural, name, rt.group)
        graceful = rt.plural == "pods" and old.get("spec", {}).get("nodeName")
        if graceful and grace_seconds is None:
            grace_seconds = int(old["spec"].get("terminationGracePeriodSeconds", 30))
        if graceful and grace_seconds:
            if meta.get("deletionTimestamp"):
                return old
            new = clone(old)
            new["metadata"]["deletionTimestamp"] = timestamp()
            new["metadata"]["deletionGracePeriodSeconds"] = grace_seconds
            return self._force_update(rt, key, old, new)
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return old
            new = clone(old)
            new["metadata"]["deletionTimestamp"] = timestamp()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._force_update(rt, key, old, new)
        return self._remove(rt, key, old)

    def _force_update(self, rt: ResourceType, key: Key, old: Obj, new: Obj) -> Obj:
        rv = self._next_rv()
        new["metadata"]["resourceVersion"] = str(rv)
        self._objects[rt.key][key] = new
        self._publish(rt, "MODIFIED", new, rv)
        return new

    def _remove(self, rt: ResourceType, key: Key, old: Obj) -> Obj:
        del self._objects[rt.key][key]
        self._index_owners(rt, key, old, add=False)
        rv = self._next_rv()
        gone = {**old, "metadata": {**old["metadata"], "resourceVersion": str(rv)}}  # shallow
        self._publish(rt, "DELETED", gone, rv)
        uid = old["metadata"].get("uid")
        if uid:  # background cascading deletion of dependents
            for dep_rt, dep in self.dependents(uid):
                dmeta = dep["metadata"]
                refs = dmeta.get("ownerReferences") or []
                if all(r.get("uid") == uid for r in refs):
                    try:
                        self.delete(dep_rt, dmeta.get("namespace", ""), dmeta["name"])
                    except errors.ApiError:
                        pass
        return gone

    # ---- watch -------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[WatchEvent], None]) -> None:
        """Call `listener` synchronously on every change (internal controllers)."""
        self._listeners.append(listener)

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        labels: LabelSelector,
        fields: FieldSelector,
        since: str | None,
    ) -> Watcher:
        """A watcher primed with the events after `since` (or ADDED for all objects)."""
        watcher = Watcher(rt, namespace, labels, fields)
        if not since or since == "0":
            for obj in self.select(rt, namespace, labels=labels, fields=fields)[0]:
                watcher.offer(WatchEvent(int(obj["metadata"]["resourceVersion"]), "ADDED", rt, obj))
        else:
            try:
                start = int(since)
            except ValueError as exc:
                raise errors.bad_request(f"invalid resourceVersion {since!r}") from exc
            if start < self._compacted_rv:
                raise errors.gone(f"too old resource version: {start} ({self._compacted_rv + 1})")
            for event in self._history:
                if event.rv > start and event.rt.key == rt.key:
                    watcher.offer(event)
        self._watchers[rt.key].add(watcher)
        return watcher

    def compact(self) -> None:
        """Forget the watch history (etcd compaction): older resourceVersions get 410 Gone."""
        self._compacted_rv = self.rv
        self._history.clear()

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers[watcher.rt.key].discard(watcher)

    def close_watchers(self) -> None:
        for watchers in self._watchers.values():
            for w in watchers:
                w.close()

    def drop_type(self, rt: ResourceType) -> None:
        """Remove every object of a type (its CRD was deleted) and end its watches."""
        for key, obj in list(self._objects[rt.key].items()):
            self._remove(rt, key, obj)
        for w in list(self._watchers.get(rt.key, ())):
            w.close()
