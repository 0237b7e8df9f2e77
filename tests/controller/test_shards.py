"""Controllers sharded by model (issue 17): shard Leases split among replicas, a lost replica's
models taken over within the failover bound with their state rebuilt from the streams, and no
write for a model from anyone but the holder of its shard's Lease at that moment.

Controllers talk to the simulated API server through loopback recording proxies (one each), so
every write is seen with when it arrived; the API server's own store tells who held each shard
Lease when (a listener in this process, same clock), and each write is checked against it.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.loop import Controller
from controller.shards import shard_of
from surgescale.events import Event, EventProducer, EventType, RedisClient, StreamKeys
from tests.controller.conftest import NS, Sim, eventually
from tests.controller.test_failover import TimedProxy

REPO = Path(__file__).resolve().parents[2]
SHARDS = 4
DURATION_S = 2.0
RETRY_S = 0.25
BOUND_S = DURATION_S + 2 * RETRY_S
"""The failover bound: a holder's silence is seen after the lease duration, plus a round."""


def models_covering(shards: int, per_shard: int = 1) -> list[str]:
    """Model names such that every shard has `per_shard` of them."""
    out: dict[int, list[str]] = {i: [] for i in range(shards)}
    k = 0
    while any(len(v) < per_shard for v in out.values()):
        name = f"model-{k:03d}"
        bucket = out[shard_of(name, shards)]
        if len(bucket) < per_shard:
            bucket.append(name)
        k += 1
    return sorted(m for v in out.values() for m in v)


async def create(sim: Sim, name: str) -> None:
    await sim.create_model(
        name,
        replicas=1,
        model=name,
        capacity={"strategy": "None", "gpusPerReplica": 1, "gpusPerNode": 2, "billing": "GPU"},
    )


class Ledger:
    """Who held each Lease when, as the API server stored it (loop time of this process)."""

    def __init__(self, sim: Sim) -> None:
        self.history: dict[str, list[tuple[float, str]]] = {}
        sim.cluster.store.subscribe(self._on)

    def _on(self, event: Any) -> None:
        if event.rt.kind != "Lease":
            return
        name = event.obj["metadata"]["name"]
        holder = (event.obj.get("spec") or {}).get("holderIdentity") or ""
        rows = self.history.setdefault(name, [])
        if not rows or rows[-1][1] != holder:
            rows.append((asyncio.get_running_loop().time(), holder))

    def holder_at(self, lease: str, t: float) -> str:
        rows = self.history.get(lease, [])
        i = bisect.bisect_right([r[0] for r in rows], t) - 1
        return rows[i][1] if i >= 0 else ""

    def holders(self, lease_prefix: str) -> dict[int, str]:
        return {
            i: rows[-1][1]
            for i in range(SHARDS)
            if (rows := self.history.get(f"{lease_prefix}-{i}"))
        }


def model_of_path(path: str, models: list[str]) -> str | None:
    """The model a write is for (scale of its Deployment, status of its scaler, its pods)."""
    for model in models:
        if (
            path.endswith(f"/deployments/{model}/scale")
            or path.endswith(f"/inferencescalers/{model}/status")
            or f"/pods/{model}-" in path
        ):
            return model
    return None


def foreign_writes(
    ledger: Ledger, lease_prefix: str, writers: dict[str, TimedProxy], models: list[str]
) -> list[tuple[str, float, str, str, str]]:
    """Writes for a model by anyone but the holder of its shard's Lease when it arrived."""
    bad = []
    for who, proxy in writers.items():
        for t, method, path in proxy.writes_since(0.0):
            model = model_of_path(path, models)
            if model is None:
                continue
            lease = f"{lease_prefix}-{shard_of(model, SHARDS)}"
            holder = ledger.holder_at(lease, t)
            if holder != who:
                bad.append((who, t, method, path, holder))
    return bad


class Gateways:
    """Emits events for many models through the real producer (snapshots on demand)."""

    def __init__(self, redis: RedisClient, keys: StreamKeys) -> None:
        self.producer = EventProducer(redis, keys=keys)
        self.seq = 0

    def queue(self, model: str, n: int, *, interval_ms: int = 10_000) -> None:
        """A snapshot saying `n` are queued (the next one is due in `interval_ms`)."""
        self.seq += 1
        now = int(time.time() * 1000)
        self.producer.emit(
            Event(
                type=EventType.SNAPSHOT,
                model=model,
                gateway="gw-1",
                ts_ms=now,
                queue_depth=n,
                in_flight=0,
                seq=self.seq,
                interval_ms=interval_ms,
            )
        )


@pytest.fixture
async def gateways(redis: RedisClient, keys: StreamKeys) -> AsyncIterator[Gateways]:
    gw = Gateways(redis, keys)
    await gw.producer.start()
    try:
        yield gw
    finally:
        await gw.producer.close()


async def proxied(sim: Sim, tmp_path: Path, who: str) -> tuple[TimedProxy, Path]:
    proxy = TimedProxy(sim.cluster.url)
    await proxy.start()
    kubeconfig = tmp_path / f"{who}.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(proxy.kubeconfig(NS)))
    return proxy, kubeconfig


async def spawn(sim: Sim, kubeconfig: Path, who: str, log: Path) -> asyncio.subprocess.Process:
    """A controller as its own process (as in production), sharded."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "controller",
        f"--kubeconfig={kubeconfig}",
        f"--redis-url={sim.redis_url}",
        f"--namespace={NS}",
        f"--stream-prefix={sim.keys.prefix}",
        f"--identity={who}",
        f"--lease-name=lease-{sim.keys.prefix}",
        f"--lease-namespace={NS}",
        f"--lease-duration-s={DURATION_S}",
        f"--lease-retry-s={RETRY_S}",
        f"--shards={SHARDS}",
        "--tick-s=0.25",
        "--status-interval-s=0.25",
        "--http-host=127.0.0.1",
        "--http-port=0",
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with_signal = [signal.SIGCONT, signal.SIGTERM]
    for sig in with_signal:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def balanced(ledger: Ledger, prefix: str, members: set[str]) -> dict[int, str]:
    """Wait until every shard is held and each member holds its share."""
    share = SHARDS // len(members)

    async def check() -> dict[int, str] | None:
        holders = ledger.holders(prefix)
        counts = {m: sum(1 for h in holders.values() if h == m) for m in members}
        ok = len(holders) == SHARDS and all(c == share for c in counts.values())
        return holders if ok else None

    result: dict[int, str] = await eventually(
        check, timeout=30.0, what=f"{SHARDS} shards split evenly over {sorted(members)}"
    )
    return result


async def test_models_split_and_a_killed_member_is_taken_over_with_its_state(
    sim: Sim, gateways: Gateways, tmp_path: Path
) -> None:
    models = models_covering(SHARDS, per_shard=2)
    for m in models:
        await create(sim, m)
    ledger = Ledger(sim)
    prefix = f"lease-{sim.keys.prefix}"
    proxy_a, kube_a = await proxied(sim, tmp_path, "a")
    proxy_b, kube_b = await proxied(sim, tmp_path, "b")
    a = await spawn(sim, kube_a, "a", tmp_path / "a.log")
    try:
        b = await sim.controller(
            "b",
            kubeconfig=kube_b,
            shards=SHARDS,
            lease_duration_s=DURATION_S,
            lease_retry_s=RETRY_S,
        )
        holders = await balanced(ledger, prefix, {"a", "b"})
        a_models = [m for m in models if holders[shard_of(m, SHARDS)] == "a"]
        b_models = [m for m in models if holders[shard_of(m, SHARDS)] == "b"]
        assert a_models
        assert b_models
        # b keeps state and decides only for its own models.
        await asyncio.sleep(1.0)
        for m in models:
            gateways.queue(m, 60)

        async def all_scaled() -> bool:
            return all([await sim.replicas(m) > 1 for m in models])

        await eventually(all_scaled, timeout=20.0, what="every model scaled by its shard's holder")
        assert set(b.store.models) <= set(b_models)
        assert all(b.leads(s) == (s.model in b_models) for s in b.scalers.values())
        # ...and reads only their streams: the others are not even fetched from Redis.
        assert b.consumer is not None
        assert set(b.consumer.models) == set(b_models)
        assert set(b.consumer.all_models) >= set(models)
        # Each model's writes so far came from its shard's holder only.
        assert foreign_writes(ledger, prefix, {"a": proxy_a, "b": proxy_b}, models) == []
        assert any(model_of_path(p, a_models) for _, _, p in proxy_a.writes_since(0.0))
        assert any(model_of_path(p, b_models) for _, _, p in proxy_b.writes_since(0.0))

        loop = asyncio.get_running_loop()
        killed = loop.time()
        a.kill()  # no release: its shards are orphaned
        await a.wait()

        async def b_holds_all() -> bool:
            return len(b.shards.held()) == SHARDS if b.shards else False

        await eventually(b_holds_all, timeout=BOUND_S + 3.0, what="b to take a's shards over")
        took = loop.time() - killed
        print(f"takeover of a killed member's shards: {took:.2f} s (bound {BOUND_S:.2f} s)")

        # Its models' state was rebuilt from the streams: b never applied their events live,
        # and no new event came since, yet it knows their queues.
        async def rebuilt() -> bool:
            return all(
                m in b.store.models and b.store.models[m].queue_depth == 60 for m in a_models
            )

        await eventually(rebuilt, what="a's models rebuilt from their streams")
        assert b.gate.replayed > 0

        async def reads_all() -> bool:  # a's streams are read now too
            return b.consumer is not None and set(b.consumer.models) == set(models)

        await eventually(reads_all, what="b to read every model's stream")
        assert b.health.live() == (True, "ok")  # rebuild tasks ending is not a dead controller
        assert all(b.evaluates(s) for s in b.scalers.values())
        assert foreign_writes(ledger, prefix, {"a": proxy_a, "b": proxy_b}, models) == []
    finally:
        await stop(a)
        for ctl in list(sim.controllers):
            await ctl.stop()
        sim.controllers.clear()
        await proxy_a.stop()
        await proxy_b.stop()


async def test_a_paused_member_never_writes_for_shards_taken_from_it(
    sim: Sim, gateways: Gateways, tmp_path: Path
) -> None:
    models = models_covering(SHARDS, per_shard=1)
    for m in models:
        await create(sim, m)
    ledger = Ledger(sim)
    prefix = f"lease-{sim.keys.prefix}"
    proxy_a, kube_a = await proxied(sim, tmp_path, "a")
    proxy_b, kube_b = await proxied(sim, tmp_path, "b")
    a = await spawn(sim, kube_a, "a", tmp_path / "a.log")
    paused = False
    try:
        b = await sim.controller(
            "b",
            kubeconfig=kube_b,
            shards=SHARDS,
            lease_duration_s=DURATION_S,
            lease_retry_s=RETRY_S,
        )
        holders = await balanced(ledger, prefix, {"a", "b"})
        a_models = [m for m in models if holders[shard_of(m, SHARDS)] == "a"]
        await asyncio.sleep(1.0)
        for m in models:
            gateways.queue(m, 40)

        async def a_scaled() -> bool:
            return all([await sim.replicas(m) > 1 for m in a_models])

        await eventually(a_scaled, timeout=20.0, what="a to scale its models")
        os.kill(a.pid, signal.SIGSTOP)  # paused while holding shards: it cannot renew
        paused = True

        async def b_holds_all() -> bool:
            return len(b.shards.held()) == SHARDS if b.shards else False

        await eventually(b_holds_all, timeout=BOUND_S + 3.0, what="b to take a's shards over")
        for m in a_models:
            gateways.queue(m, 150)  # the paused process will find these when it wakes

        async def b_scaled() -> bool:
            return all([await sim.replicas(m) > 2 for m in a_models])

        await eventually(b_scaled, timeout=10.0, what="b to scale a's models")
        # Someone scales one by hand: anything the woken process wrote from its stale belief
        # would undo this.
        await sim.apps.patch_namespaced_deployment_scale(a_models[0], NS, {"spec": {"replicas": 2}})
        os.kill(a.pid, signal.SIGCONT)
        paused = False
        await asyncio.sleep(4.0)  # renewals, event batches, a hand-back of shards to it
        assert a.returncode is None, "the woken process should keep running"
        assert foreign_writes(ledger, prefix, {"a": proxy_a, "b": proxy_b}, models) == []
        # It came back as a member: the shards are split again (it writes again, for its own).
        await balanced(ledger, prefix, {"a", "b"})
        assert foreign_writes(ledger, prefix, {"a": proxy_a, "b": proxy_b}, models) == []
    finally:
        if paused:
            os.kill(a.pid, signal.SIGCONT)
        await stop(a)
        for ctl in list(sim.controllers):
            await ctl.stop()
        sim.controllers.clear()
        await proxy_a.stop()
        await proxy_b.stop()


async def test_a_joining_member_gets_its_share_without_two_holders_at_once(
    sim: Sim, tmp_path: Path
) -> None:
    models = models_covering(SHARDS)
    for m in models:
        await create(sim, m)
    ledger = Ledger(sim)
    prefix = f"lease-{sim.keys.prefix}"
    opts: dict[str, Any] = {
        "shards": SHARDS,
        "lease_duration_s": DURATION_S,
        "lease_retry_s": RETRY_S,
    }
    b = await sim.controller("b", **opts)
    await balanced(ledger, prefix, {"b"})  # alone: it runs everything

    async def b_leads_all() -> bool:  # the server stores a Lease before b reads the reply
        return bool(b.scalers) and all(b.leads(s) for s in b.scalers.values())

    await eventually(b_leads_all, timeout=5.0, what="b to lead every model once it holds all")

    both: list[tuple[int, ...]] = []
    sampling = True

    async def sample(c: Controller) -> None:
        while sampling:  # both in this process, one clock: at no moment may both hold a shard
            if b.shards is not None and c.shards is not None:
                both.extend(
                    (i,)
                    for i in range(SHARDS)
                    if b.shards.remaining(i) > 0 and c.shards.remaining(i) > 0
                )
            await asyncio.sleep(0.005)

    c = await sim.controller("c", **opts)
    sampler = asyncio.create_task(sample(c))
    try:
        await balanced(ledger, prefix, {"b", "c"})
        await asyncio.sleep(1.0)
    finally:
        sampling = False
        await sampler
    assert both == []
    assert len(b.shards.held()) == len(c.shards.held()) == SHARDS // 2  # type: ignore[union-attr]
    for s in b.scalers.values():
        assert b.leads(s) != c.leads(c.scalers[s.key])
