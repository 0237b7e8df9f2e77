"""The namespace controller: deleting a namespace deletes everything in it.

The real server marks the namespace Terminating and its controller deletes the contents; here
the contents go as soon as the Namespace object is gone (pods on nodes still terminate
gracefully through the kubelet).
"""

from __future__ import annotations

import contextlib

from . import errors
from .resources import Registry
from .store import Store, WatchEvent


class NamespaceController:
    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store
        self.ns_rt = registry.require("", "v1", "namespaces")
        store.subscribe(self._on_event)

    def _on_event(self, ev: WatchEvent) -> None:
        if ev.rt.key != self.ns_rt.key or ev.type != "DELETED":
            return
        ns = ev.obj["metadata"]["name"]
        for rt in self.registry:
            if not rt.namespaced:
                continue
            for obj in list(self.store.select(rt, ns)[0]):
                with contextlib.suppress(errors.ApiError):
                    self.store.delete(rt, ns, obj["metadata"]["name"])
