"""The store alone: resourceVersions, conflicts, generation, graceful deletion, GC, watch replay."""

from __future__ import annotations

import pytest

from sim.cluster.errors import ApiError
from sim.cluster.resources import Registry
from sim.cluster.selectors import FieldSelector, LabelSelector
from sim.cluster.store import Store, clone


@pytest.fixture
def store() -> Store:
    return Store(Registry(), history=8, seed=1)


def cm(name: str, **labels: str) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "default", "labels": labels}, "data": {}}


def test_create_sets_metadata_and_rejects_duplicates(store: Store) -> None:
    rt = store.registry.require("", "v1", "configmaps")
    obj = store.create(rt, cm("a"))
    meta = obj["metadata"]
    assert meta["uid"]
    assert meta["creationTimestamp"]
    assert int(meta["resourceVersion"]) > 1
    assert obj["apiVersion"] == "v1"
    assert obj["kind"] == "ConfigMap"
    with pytest.raises(ApiError) as exc:
        store.create(rt, cm("a"))
    assert exc.value.code == 409
    assert exc.value.reason == "AlreadyExists"


def test_generate_name(store: Store) -> None:
    rt = store.registry.require("", "v1", "configmaps")
    obj = store.create(rt, {"metadata": {"generateName": "x-", "namespace": "default"}})
    assert obj["metadata"]["name"].startswith("x-")
    assert len(obj["metadata"]["name"]) == 7


def test_stale_resource_version_conflicts(store: Store) -> None:
    rt = store.registry.require("", "v1", "configmaps")
    first = store.create(rt, cm("a"))
    stale = clone(first)
    newer = clone(first)
    newer["data"] = {"k": "1"}
    store.update(rt, newer)
    stale["data"] = {"k": "2"}
    with pytest.raises(ApiError) as exc:
        store.update(rt, stale)
    assert exc.value.code == 409
    assert exc.value.reason == "Conflict"
    assert store.get(rt, "default", "a")["data"] == {"k": "1"}


def test_generation_moves_with_spec_only(store: Store) -> None:
    rt = store.registry.require("apps", "v1", "deployments")
    dep = store.create(
        rt, {"metadata": {"name": "d", "namespace": "default"}, "spec": {"replicas": 1}}
    )
    assert dep["metadata"]["generation"] == 1
    new = clone(dep)
    new["status"] = {"replicas": 1}
    assert store.update(rt, new)["metadata"]["generation"] == 1
    new = clone(store.get(rt, "default", "d"))
    new["spec"]["replicas"] = 3
    assert store.update(rt, new)["metadata"]["generation"] == 2


def test_noop_update_emits_nothing(store: Store) -> None:
    rt = store.registry.require("", "v1", "configmaps")
    obj = store.create(rt, cm("a"))
    rv = store.rv
    store.update(rt, clone(obj))
    assert store.rv == rv


def test_bound_pod_deletion_is_graceful(store: Store) -> None:
    rt = store.registry.require("", "v1", "pods")
    store.create(
        rt,
        {
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "nodeName": "n1",
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "c"}],
            },
        },
    )
    marked = store.delete(rt, "default", "p")
    assert marked["metadata"]["deletionTimestamp"]
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 5
    assert store.try_get(rt, "default", "p") is not None
    store.delete(rt, "default", "p", grace_seconds=0)
    assert store.try_get(rt, "default", "p") is None


def test_finalizers_hold_deletion_until_removed(store: Store) -> None:
    rt = store.registry.require("", "v1", "configmaps")
    obj = cm("a")
    obj["metadata"]["finalizers"] = ["x/y"]  # type: ignore[index]
    store.create(rt, obj)
    marked = store.delete(rt, "default", "a")
    assert marked["metadata"]["deletionTimestamp"]
    released = clone(marked)
    released["metadata"]["finalizers"] = []
    store.update(rt, released)
    assert store.try_get(rt, "default", "a") is None


def test_owner_references_cascade(store: Store) -> None:
    cms = store.registry.require("", "v1", "configmaps")
    owner = store.create(cms, cm("owner"))
    child = cm("child")
    child["metadata"]["ownerReferences"] = [  # type: ignore[index]
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    ]
    store.create(cms, child)
    store.delete(cms, "default", "owner")
    assert store.try_get(cms, "default", "child") is None


def test_watch_replays_history_and_expires(store: Store) -> None:
    rt = store.registry.require("", "v1", "configmaps")
    first = store.create(rt, cm("a", app="x"))
    since = first["metadata"]["resourceVersion"]
    store.create(rt, cm("b", app="y"))
    store.create(rt, cm("c", app="x"))
    watcher = store.watch(
        rt, "default", labels=LabelSelector.parse("app=x"), fields=FieldSelector(), since=since
    )
    events = []
    while not watcher.queue.empty():
        ev = watcher.queue.get_nowait()
        assert ev is not None
        events.append((ev.type, ev.obj["metadata"]["name"]))
    assert events == [("ADDED", "c")]
    for n in range(20):  # overflow the 8-event history
        store.create(rt, cm(f"z{n}"))
    with pytest.raises(ApiError) as exc:
        store.watch(rt, None, labels=LabelSelector(), fields=FieldSelector(), since=since)
    assert exc.value.code == 410


def test_select_paginates(store: Store) -> None:
    rt = store.registry.require("", "v1", "configmaps")
    for n in range(5):
        store.create(rt, cm(f"c{n}"))
    page, _, token = store.select(rt, "default", limit=2)
    assert [o["metadata"]["name"] for o in page] == ["c0", "c1"]
    assert token
    rest, _, token2 = store.select(rt, "default", limit=10, continue_token=token)
    assert [o["metadata"]["name"] for o in rest] == ["c2", "c3", "c4"]
    assert token2 is None
