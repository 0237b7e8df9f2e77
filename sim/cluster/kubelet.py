"""The kubelet: runs bound pods, reports their status, and terminates them gracefully.

A pod bound to a node gets an IP of its own in 127.0.0.0/8 (like a pod IP; loopback routes the
whole /8), passes through ContainerCreating, and, when its template names a model (container env
`SURGESCALE_MODEL` or annotation `surgescale.io/model`), starts a simulated vLLM pod on
`<ip>:<port>` through `sim.pod.runtime.start_pod`. It turns Ready after the model-load time
(annotation `surgescale.io/load-seconds`, simulated seconds) and once the pod's server reports
ready. Pods without a model are plain containers, Ready after `container_start_s`. A pod marked
for deletion turns not-Ready at once (its EndpointSlice endpoint turns `terminating`, not ready), lets in-flight requests
finish for up to its grace period, stops, and only then disappears from the API. A model pod
whose server crashes (fault injection) goes not-Ready and is restarted with a model reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from sim.pod.runtime import PodOptions, RunningPod, start_pod

from .admission import now_condition
from .clock import SimClock, timestamp
from .events import EventSource
from .reconcile import IterationBudget
from .resources import Registry
from .store import Obj, Store, WatchEvent, clone

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PodModel:
    model: str
    profile: str | None
    load_seconds: float
    max_num_seqs: int | None


@dataclass
class _Running:
    uid: str
    ip: str
    task: asyncio.Task[None] | None = None
    server: RunningPod | None = None
    terminating: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def pod_model(pod: Obj, default_load_s: float) -> PodModel | None:
    """What simulated vLLM pod (if any) a pod runs, from its env and annotations."""
    ann = pod["metadata"].get("annotations") or {}
    model = ann.get("surgescale.io/model")
    for c in pod.get("spec", {}).get("containers") or []:
        for env in c.get("env") or []:
            if env.get("name") == "SURGESCALE_MODEL" and env.get("value"):
                model = model or str(env["value"])
    if not model:
        return None
    try:
        load = float(ann.get("surgescale.io/load-seconds", default_load_s))
    except ValueError:
        load = default_load_s
    seqs = ann.get("surgescale.io/max-num-seqs")
    return PodModel(
        model=model,
        profile=ann.get("surgescale.io/profile"),
        load_seconds=load,
        max_num_seqs=int(seqs) if seqs and str(seqs).isdigit() else None,
    )


def pod_port(pod: Obj, default: int) -> int:
    for c in pod.get("spec", {}).get("containers") or []:
        for p in c.get("ports") or []:
            if isinstance(p.get("containerPort"), int):
                return int(p["containerPort"])
    return default


class Kubelet(EventSource):
    """One kubelet for all simulated nodes (they share this process)."""

    def __init__(
        self,
        registry: Registry,
        store: Store,
        clock: SimClock,
        *,
        port: int,
        default_load_s: float,
        container_start_s: float,
    ) -> None:
        self.store = store
        self.clock = clock
        self.port = port
        self.default_load_s = default_load_s
        self.container_start_s = container_start_s
        self.pod_rt = registry.require("", "v1", "pods")
        self.node_rt = registry.require("", "v1", "nodes")
        self._pods: dict[tuple[str, str], _Running] = {}
        self._next_ip = random.SystemRandom().randrange(10_000_000)
        """Where this kubelet's pod IPs start: random, so two simulated clusters on one machine
        (parallel test runs, a demo beside the tests) do not hand out the same address."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._budget = IterationBudget(50)
        self.started_servers = 0
        store.subscribe(self._on_event)

    def server_for(self, namespace: str, name: str) -> RunningPod | None:
        """The simulated vLLM server a pod runs, if it runs one (for fault injection)."""
        running = self._pods.get((namespace, name))
        return running.server if running is not None else None

    def _alloc_ip(self) -> str:
        n = self._next_ip
        self._next_ip += 1
        return f"127.{1 + n // 62_500}.{(n // 250) % 250}.{n % 250 + 1}"

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("kubelet task %s failed", task.get_name(), exc_info=task.exception())

    def _on_event(self, ev: WatchEvent) -> None:
        if ev.rt.key == self.node_rt.key and ev.type == "DELETED":
            node = ev.obj["metadata"]["name"]
            for pod in list(self.store.items(self.pod_rt)):
                if pod.get("spec", {}).get("nodeName") == node:
                    meta = pod["metadata"]
                    self.store.delete(self.pod_rt, meta["namespace"], meta["name"], grace_seconds=0)
            return
        if ev.rt.key != self.pod_rt.key:
            return
        meta = ev.obj["metadata"]
        key = (meta["namespace"], meta["name"])
        running = self._pods.get(key)
        if running is not None and running.uid != meta.get("uid"):
            self._forget(key, running)
            running = None
        if ev.type == "DELETED":
            if running is not None:
                self._forget(key, running)
            return
        if meta.get("deletionTimestamp"):
            if running is None:
                running = _Running(uid=meta.get("uid", ""), ip="")
                self._pods[key] = running
            if not running.terminating:
                running.terminating = True
                grace = float(meta.get("deletionGracePeriodSeconds") or 0)
                self._spawn(self._terminate(key, running, grace), f"terminate-{key[1]}")
            return
        if running is None and ev.obj.get("spec", {}).get("nodeName"):
            running = _Running(uid=meta.get("uid", ""), ip=self._alloc_ip())
            self._pods[key] = running
            running.task = self._spawn(self._run(key, running), f"pod-{key[1]}")

    def _forget(self, key: tuple[str, str], running: _Running) -> None:
        self._pods.pop(key, None)
        if running.task is not None and not running.task.done():
            running.task.cancel()
        if running.server is not None:
            server, running.server = running.server, None
            self._spawn(server.stop(0.0), f"stop-{key[1]}")

    def _patch_status(self, key: tuple[str, str], uid: str, mutate: Any) -> Obj | None:
        pod = self.store.try_get(self.pod_rt, *key)
        if pod is None or pod["metadata"].get("uid") != uid:
            return None
        new = clone(pod)
        mutate(new)
        return self.store.update(self.pod_rt, new, check_rv=False)

    async def _run(self, key: tuple[str, str], running: _Running) -> None:
        pod = self.store.try_get(self.pod_rt, *key)
        if pod is None:
            return
        node = self.store.try_get(self.node_rt, "", pod["spec"]["nodeName"])
        host_ip = "127.0.0.1"
        for addr in (node or {}).get("status", {}).get("addresses") or []:
            if addr.get("type") == "InternalIP":
                host_ip = addr["address"]
        container_names = [c.get("name", "main") for c in pod["spec"].get("containers") or []]

        def creating(p: Obj) -> None:
            st = p.setdefault("status", {})
            st.update(
                {
                    "hostIP": host_ip,
                    "podIP": running.ip,
                    "podIPs": [{"ip": running.ip}],
                    "startTime": timestamp(),
                    "phase": "Pending",
                }
            )
            st["containerStatuses"] = [
                {
                    "name": n,
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "image": "",
                    "imageID": "",
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                }
                for n in container_names
            ]
            _set_conditions(st, Initialized="True", Ready="False", ContainersReady="False")

        await self._budget.take()
        self._patch_status(key, running.uid, creating)
        model = pod_model(pod, self.default_load_s)
        if model is None:
            await self.clock.sleep(self.container_start_s)
        else:
            if not await self._start_server(key, running, pod, model):
                return
        await self._budget.take()
        if running.terminating:
            return
        self._mark_ready(key, running, container_names)
        if model is not None:
            await self._watch_health(key, running, pod, model, container_names)

    async def _start_server(
        self, key: tuple[str, str], running: _Running, pod: Obj, model: PodModel
    ) -> bool:
        kwargs: dict[str, Any] = {
            "model": model.model,
            "load_seconds": self.clock.wall(model.load_seconds),
            "max_num_seqs": model.max_num_seqs,
            "seed": zlib.crc32(f"{key[0]}/{key[1]}".encode()) & 0xFFFF,
        }
        if model.profile:
            kwargs["profile"] = model.profile
        try:
            server = await start_pod(
                PodOptions(**kwargs), host=running.ip, port=pod_port(pod, self.port)
            )
        except (OSError, ValueError, KeyError) as exc:
            reason = str(exc)
            log.warning("pod %s/%s failed to start: %s", *key, exc)

            def failed(p: Obj) -> None:
                st = p.setdefault("status", {})
                for cs in st.get("containerStatuses") or []:
                    cs["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": reason}}

            self._patch_status(key, running.uid, failed)
            return False
        self.started_servers += 1
        running.server = server
        if running.terminating:
            return False

        def started(p: Obj) -> None:
            st = p.setdefault("status", {})
            st["phase"] = "Running"
            for cs in st.get("containerStatuses") or []:
                cs.update({"started": True, "state": {"running": {"startedAt": timestamp()}}})

        self._patch_status(key, running.uid, started)
        await self.clock.sleep(model.load_seconds)
        if not server.ready:
            with contextlib.suppress(Exception):
                await server.wait_ready(30.0)
        return not running.terminating and running.server is server

    def _mark_ready(self, key: tuple[str, str], running: _Running, names: list[str]) -> None:
        def ready(p: Obj) -> None:
            st = p.setdefault("status", {})
            st["phase"] = "Running"
            restarts = {
                cs.get("name"): cs.get("restartCount", 0)
                for cs in st.get("containerStatuses") or []
            }
            st["containerStatuses"] = [
                {
                    "name": n,
                    "ready": True,
                    "started": True,
                    "restartCount": restarts.get(n, 0),
                    "image": "",
                    "imageID": "",
                    "state": {"running": {"startedAt": timestamp()}},
                }
                for n in names
            ]
            _set_conditions(st, Ready="True", ContainersReady="True")

        self._patch_status(key, running.uid, ready)

    async def _watch_health(
        self, key: tuple[str, str], running: _Running, pod: Obj, model: PodModel, names: list[str]
    ) -> None:
        """Restart a crashed model server (fault injection), with a model reload."""
        while not running.terminating:
            await asyncio.sleep(0.1)
            server = running.server
            if server is None or running.terminating:
                return
            if server.ready:
                continue
            if not server.stopped and not server.faults.crash:
                continue  # stopping or hung: not a crash

            def crashed(p: Obj) -> None:
                st = p.setdefault("status", {})
                for cs in st.get("containerStatuses") or []:
                    cs.update(
                        {
                            "ready": False,
                            "restartCount": int(cs.get("restartCount", 0)) + 1,
                            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        }
                    )
                _set_conditions(st, Ready="False", ContainersReady="False")

            self._patch_status(key, running.uid, crashed)
            self._event(
                pod, "Warning", "BackOff", "Back-off restarting failed container vllm", "kubelet"
            )
            running.server = None
            with contextlib.suppress(Exception):
                await server.stop(0.0)
            await self.clock.sleep(1.0)
            if not await self._start_server(key, running, pod, model):
                return
            self._mark_ready(key, running, names)

    async def _terminate(self, key: tuple[str, str], running: _Running, grace: float) -> None:
        if running.task is not None and not running.task.done():
            running.task.cancel()

        def not_ready(p: Obj) -> None:
            st = p.setdefault("status", {})
            for cs in st.get("containerStatuses") or []:
                cs["ready"] = False
            _set_conditions(st, Ready="False", ContainersReady="False")

        pod_now = self._patch_status(key, running.uid, not_ready)
        if pod_now is not None:
            for c in pod_now["spec"].get("containers") or []:
                self._event(
                    pod_now, "Normal", "Killing", f"Stopping container {c.get('name')}", "kubelet"
                )
        server, running.server = running.server, None
        if server is not None:
            try:
                await server.stop(self.clock.wall(grace))
            except Exception:
                log.exception("pod %s/%s did not stop cleanly", *key)
        pod = self.store.try_get(self.pod_rt, *key)
        if pod is not None and pod["metadata"].get("uid") == running.uid:
            self.store.delete(self.pod_rt, key[0], key[1], grace_seconds=0)
        self._pods.pop(key, None)

    async def stop(self) -> None:
        servers = [r.server for r in self._pods.values() if r.server is not None]
        for r in self._pods.values():
            r.server = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(*(s.stop(0.0) for s in servers), return_exceptions=True)
        self._pods.clear()


def _set_conditions(status: Obj, **values: str) -> None:
    conds = {c["type"]: c for c in status.get("conditions") or []}
    for type_, value in values.items():
        prev = conds.get(type_)
        if prev is None or prev.get("status") != value:
            conds[type_] = now_condition(type_, value)
    status["conditions"] = sorted(conds.values(), key=lambda c: _ORDER.get(c["type"], 99))


_ORDER = {
    t: n
    for n, t in enumerate(
        ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
    )
}
