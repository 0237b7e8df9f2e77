"""The share bookkeeping (`gateway.sharebook`), the grant script against real Redis
(`gateway.shares`) and the sum of workers' metrics (`gateway.workermetrics`)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admission import Ticket
from gateway.scheduler import QueueLimits, Scheduler
from gateway.sharebook import PodGrant, ShareBook, SyncReply, fair_share
from gateway.shares import Shares, SharesConfig
from gateway.workermetrics import merge
from sim.localredis.server import free_port, start_private_redis
from surgescale.events import RedisClient, StreamKeys, close, connect

POD = "http://pod-a"


def _grant(grant: int, *, hungry: bool = False, starving: bool = False, room: int = 99) -> PodGrant:
    return PodGrant(grant=grant, room=room, peer_hungry=hungry, peer_starving=starving)


# ------------------------------------------------------------ pure wants
@pytest.mark.parametrize(
    ("hungry", "last", "limit", "out", "want", "new_limit", "hold"),
    [
        pytest.param(False, _grant(4), 4, 0, 4, 4, 4, id="idle-keeps-fair-share"),
        pytest.param(False, _grant(10), 10, 2, 4, 4, 4, id="idle-gives-borrowed-back"),
        pytest.param(False, _grant(10), 10, 7, 7, 7, 7, id="shrinks-no-lower-than-in-use"),
        pytest.param(True, _grant(4), 4, 4, 16, 4, 4, id="hungry-borrows-everything"),
        pytest.param(True, _grant(10, starving=True), 10, 9, 4, 4, 9, id="starving-peer-stops-it"),
        pytest.param(False, _grant(4, hungry=True), 4, 1, 2, 2, 2, id="lends-keeping-headroom"),
    ],
)
def test_wants(
    hungry: bool, last: PodGrant, limit: int, out: int, want: int, new_limit: int, hold: int
) -> None:
    book = ShareBook(cap=16, fallback_instances=1, instances=4, fair=4, grants={POD: last})
    ask = book.wants(limits={POD: limit}, outstanding={POD: out}, hungry=hungry)
    assert (ask.wants[POD], ask.limits[POD], ask.holds[POD]) == (want, new_limit, hold)


def test_granted_stops_at_room_when_books_were_broken() -> None:
    book = ShareBook(cap=16, fallback_instances=1)
    ask = book.wants(limits={POD: 8}, outstanding={POD: 8}, hungry=False)
    reply = SyncReply(instances=2, fair=8, pods={POD: _grant(8, room=5)})
    assert book.granted(reply, asked=ask, now=0.0) == {POD: 5}


def test_fallback_holds_the_last_grant_then_takes_the_safe_share() -> None:
    book = ShareBook(cap=16, fallback_instances=1, instances=4, fair=4, grants={POD: _grant(2)})
    assert book.fallback(pods={POD: 2, "new": 0}, now=10.0, hold_s=5.0) == {POD: 2, "new": 4}
    assert book.in_fallback
    assert book.fallback(pods={POD: 2}, now=16.0, hold_s=5.0) == {POD: 4}


def test_fair_share_is_at_least_one() -> None:
    assert fair_share(16, 4) == 4
    assert fair_share(3, 8) == 1
    assert fair_share(16, 0) == 16


# ------------------------------------------------- the script, real Redis
class _Instance:
    """A real scheduler and `Shares` over one pod, synced by hand (no background task)."""

    def __init__(
        self, client: RedisClient, prefix: str, name: str, *, lease_s: float = 30.0
    ) -> None:
        self.scheduler = Scheduler(
            QueueLimits(max_length=1000, max_wait_s=60), clock=time.monotonic
        )
        self.shares = Shares(
            self.scheduler,
            client=client,
            config=SharesConfig(prefix=prefix, lease_s=lease_s),  # by default nobody dies
            caps={"m": 16},
            instance=name,
            clock=time.monotonic,
        )
        self.shares.prepare()
        self.shares.on_pods("m", {POD: True})
        self.tickets: list[Ticket] = []
        self.n = 0
        self.pending: asyncio.Task[None] | None = None

    @property
    def pod_outstanding(self) -> int:
        pod = self.scheduler.queue("m").pods.get(POD)
        return pod.outstanding if pod is not None else 0

    def arrive(self) -> None:
        self.n += 1
        t = Ticket(request_id=str(self.n), tenant="", arrived=time.monotonic())
        self.scheduler.admit("m", t)
        self.tickets.append(t)

    def finish_one(self, rng: random.Random) -> None:
        running = [t for t in self.tickets if t.pod is not None]
        if running:
            t = rng.choice(running)
            self.scheduler.finish("m", t)
            self.tickets.remove(t)


@settings(max_examples=15, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["arrive", "finish", "sync", "begin", "end"]), st.integers(0, 2)),
        min_size=20,
        max_size=120,
    ),
    seed=st.integers(0, 1000),
)
def test_grants_never_sum_above_the_cap(
    redis_url: str, ops: list[tuple[str, int]], seed: int
) -> None:
    """Three instances arriving, finishing and syncing in any order, with syncs left in flight
    while requests come and go: the requests they hold at the pod never exceed 16, and the
    grants in Redis never sum above 16."""

    async def run() -> None:
        client = connect(redis_url)
        prefix = f"test-{random.Random(seed).getrandbits(48):x}-{time.monotonic_ns()}"
        rng = random.Random(seed)
        try:
            fleet = [_Instance(client, prefix, f"gw-{i}") for i in range(3)]
            for op, who in ops:
                inst = fleet[who]
                if op == "arrive":
                    inst.arrive()
                elif op == "finish":
                    inst.finish_one(rng)
                elif op == "sync" and inst.pending is None:
                    await inst.shares.sync("m")
                elif op == "begin" and inst.pending is None:
                    inst.pending = asyncio.create_task(inst.shares.sync("m"))
                    await asyncio.sleep(0)
                elif op == "end" and inst.pending is not None:
                    await inst.pending
                    inst.pending = None
                assert sum(i.pod_outstanding for i in fleet) <= 16
                grants = await client.hgetall(fleet[0].shares.keys.pod("m", POD))
                assert sum(int(v) for v in grants.values()) <= 16
            for inst in fleet:
                if inst.pending is not None:
                    await inst.pending
            for _ in range(4):  # quiet: everyone settles
                for inst in fleet:
                    await inst.shares.sync("m")
            assert sum(i.pod_outstanding for i in fleet) <= 16
            for inst in fleet:
                inst.shares.close()
        finally:
            async for key in client.scan_iter(match=f"{prefix}:*"):
                await client.delete(key)
            await close(client)

    asyncio.run(run())


async def test_borrowed_slots_return_when_the_lender_gets_busy(
    redis_url: str, keys: StreamKeys, redis: RedisClient
) -> None:
    a, b = _Instance(redis, keys.prefix, "a"), _Instance(redis, keys.prefix, "b")
    for _ in range(3):
        await a.shares.sync("m")
        await b.shares.sync("m")
    assert a.shares.limits["m"][POD] == b.shares.limits["m"][POD] == 8
    for _ in range(30):
        a.arrive()
    for _ in range(3):
        await b.shares.sync("m")
        await a.shares.sync("m")
    assert a.pod_outstanding > 8  # borrowed b's idle share (b keeps a little headroom)
    for _ in range(30):
        b.arrive()
    rng = random.Random(1)
    for _ in range(40):  # a's requests finish one by one; b starves until it has its share
        a.finish_one(rng)
        a.arrive()
        await a.shares.sync("m")
        await b.shares.sync("m")
        assert a.pod_outstanding + b.pod_outstanding <= 16
    assert a.shares.limits["m"][POD] == b.shares.limits["m"][POD] == 8
    a.shares.close()
    b.shares.close()


async def test_books_lost_with_redis_are_rebuilt_before_anyone_grows(
    redis_url: str, keys: StreamKeys, redis: RedisClient
) -> None:
    """Redis restarts empty while two instances hold 8 slots each, both with more queued: the
    first to sync again may not grow until every holder has re-registered (one lease)."""
    a = _Instance(redis, keys.prefix, "a", lease_s=1.0)
    b = _Instance(redis, keys.prefix, "b", lease_s=1.0)
    for _ in range(3):
        await a.shares.sync("m")
        await b.shares.sync("m")
    for _ in range(20):
        a.arrive()
        b.arrive()
    assert a.pod_outstanding == b.pod_outstanding == 8
    async for key in redis.scan_iter(match=f"{keys.prefix}:*"):
        await redis.delete(key)
    await a.shares.sync("m")  # hungry, alone in the new books
    assert a.shares.limits["m"][POD] == 8
    await b.shares.sync("m")
    assert a.pod_outstanding + b.pod_outstanding <= 16
    for _ in range(15):  # past the quiet lease, both syncing as they do every 50 ms
        await asyncio.sleep(0.1)
        await a.shares.sync("m")
        await b.shares.sync("m")
        assert a.pod_outstanding + b.pod_outstanding <= 16
    assert a.shares.limits["m"][POD] == b.shares.limits["m"][POD] == 8
    a.shares.close()
    b.shares.close()


async def test_a_redis_restarted_without_the_scripts_gets_them_again() -> None:
    """A restarted Redis has no cached scripts (NOSCRIPT): the sync sends the script itself and
    goes on with grants, never falling back to the safe share."""
    server = start_private_redis()
    client = connect(server.url, timeout=0.5, connect_timeout=0.25)
    a = _Instance(client, "restart", "a")
    try:
        await a.shares.sync("m")
        assert a.shares.limits["m"][POD] == 16
        server.stop()
        server.start()  # empty: no books, no scripts
        await a.shares.sync("m")  # may meet the closed connection: within half a lease, no change
        await a.shares.sync("m")
        assert a.shares.fallback_models() == {"m": False}
        assert a.shares.instances() == {"m": 1}
        assert await client.zcard(a.shares.keys.members("m")) == 1  # registered again
        assert a.shares.limits["m"][POD] == 16
    finally:
        a.shares.close()
        await close(client)
        server.stop()


async def test_no_redis_means_the_safe_share() -> None:
    scheduler = Scheduler(QueueLimits(max_length=10, max_wait_s=60), clock=time.monotonic)
    client = connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2, connect_timeout=0.2)
    shares = Shares(
        scheduler,
        client=client,
        config=SharesConfig(prefix="nowhere", fallback_instances=3),
        caps={"m": 16},
        instance="x",
        clock=time.monotonic,
    )
    shares.prepare()
    shares.on_pods("m", {POD: True})
    await shares.sync("m")
    assert shares.fallback_models() == {"m": True}
    assert scheduler.queue("m").pods[POD].capacity == 16 // 3
    await close(client)


# ------------------------------------------------------------ the sum
def test_merge_sums_workers_and_keeps_shared_gauges() -> None:
    one = (
        "# HELP surgescale_gateway_requests_admitted_total Requests admitted\n"
        "# TYPE surgescale_gateway_requests_admitted_total counter\n"
        'surgescale_gateway_requests_admitted_total{model="m"} 3.0\n'
        "# HELP surgescale_gateway_ready_pods Pods receiving work\n"
        "# TYPE surgescale_gateway_ready_pods gauge\n"
        'surgescale_gateway_ready_pods{model="m"} 2.0\n'
        "# HELP surgescale_gateway_ready 1 when admitting\n"
        "# TYPE surgescale_gateway_ready gauge\n"
        "surgescale_gateway_ready 1.0\n"
    )
    two = one.replace("} 3.0", "} 4.0").replace(
        "surgescale_gateway_ready 1.0", "surgescale_gateway_ready 0.0"
    )
    text = merge([one, two]).decode()
    assert 'surgescale_gateway_requests_admitted_total{model="m"} 7.0' in text
    assert 'surgescale_gateway_ready_pods{model="m"} 2.0' in text
    assert "surgescale_gateway_ready 0.0" in text
    assert "surgescale_gateway_workers_reporting 2.0" in text


async def test_grants_on_a_redis_cluster(redis_cluster_url: str) -> None:
    """The script's keys share the model's hash tag, so it runs on a Redis Cluster too."""
    client = connect(redis_cluster_url)
    prefix = f"test-{time.monotonic_ns()}"
    try:
        a, b = _Instance(client, prefix, "a"), _Instance(client, prefix, "b")
        for _ in range(3):
            await a.shares.sync("m")
            await b.shares.sync("m")
        assert a.shares.instances() == b.shares.instances() == {"m": 2}
        assert a.shares.limits["m"][POD] == b.shares.limits["m"][POD] == 8
        assert a.shares.fallback_models() == {"m": False}
        for _ in range(20):
            a.arrive()
            b.arrive()
        assert a.pod_outstanding + b.pod_outstanding == 16
    finally:
        keys = a.shares.keys
        await client.delete(keys.members("m"), keys.hungry("m"), keys.epoch("m"))
        await client.delete(keys.pod("m", POD))
        await close(client)
