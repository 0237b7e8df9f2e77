"""Shared pod capacity across gateway instances: slot grants in Redis, synced off the hot path.

Every gateway instance (each worker of each replica) serving a model runs one `Shares` task. Every
`sync_interval_ms` it runs one Lua script per model (atomic in Redis) that

1. renews this instance's lease in the model's member set (a sorted set scored by lease expiry,
   Redis server time) and drops the members whose lease ran out, with all their grants
   (a dead instance's slots are reclaimed within one lease);
2. for each pod: reads every live instance's grant, and sets this instance's to what it asked
   for, never letting the grants on the pod sum above the cap (`gateway.sharebook` decides the
   ask: borrowing idle shares when requests queue here, giving them back when a peer starves).

The books have an id (`…:epoch`). If Redis loses them (restarted empty) while instances hold
slots, the first instance that knew the old books opens a quiet period of one lease in which
nobody's grant grows, so every holder re-registers what it holds before slots are handed out.

Requests are dispatched against the local limit only (`Pod.capacity`), with no Redis round trip
on the request path. A limit grows only after Redis granted it and shrinks locally before Redis
hears of it, so the requests all instances have at a pod never exceed its cap.

When Redis cannot be reached for half a lease (or was never reached) the instance falls back to
the safe share `max(1, cap // n)`, n the last known number of instances (or `fallback_instances`),
logs it once and shows `surgescale_gateway_capacity_fallback{model} 1`; it returns to grants at
the next good sync. Keys are hash-tagged by model (`{model}`), so one model's keys live in one
Redis Cluster slot. Only the configured cap is reported to the controller (`pod_cap`), never
a share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.scheduler import Scheduler
from gateway.sharebook import Ask, PodGrant, ShareBook, SyncReply
from surgescale.cancel import checkpoint
from surgescale.events import close, connect
from surgescale.events.client import RedisClient
from surgescale.events.rawwrite import PackedScript, RawPipe

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CapacityKeys:
    """Redis key names of the shared capacity of one model (one Cluster slot per model)."""

    prefix: str

    def _base(self, model: str) -> str:
        return f"{self.prefix}:capacity:{{{model}}}"

    def members(self, model: str) -> str:
        """Sorted set: live instances serving `model`, scored by lease expiry (ms)."""
        return self._base(model) + ":members"

    def epoch(self, model: str) -> str:
        """Hash: the books' id, when they were made and until when nobody may grow (after a
        Redis that lost its data, every holder re-registers first)."""
        return self._base(model) + ":epoch"

    def hungry(self, model: str) -> str:
        """Hash: instance -> 1 if it has requests queued for `model`."""
        return self._base(model) + ":hungry"

    def pod(self, model: str, url: str) -> str:
        """Hash: instance -> slots it holds on the pod `url`."""
        return self._base(model) + ":pod:" + url


_SYNC = """
local me = ARGV[1]
local lease = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local ttl = tonumber(ARGV[5])
local known = ARGV[6]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ep = redis.call('HMGET', KEYS[3], 'id', 'born', 'quiet')
local id = ep[1]
local quiet = tonumber(ep[3] or '0') or 0
if not id then
  -- new books: a fresh start, or a Redis that lost its data while instances held slots
  id = me .. '@' .. now
  quiet = 0
  if known ~= '' then quiet = now + lease end
  redis.call('HSET', KEYS[3], 'id', id, 'born', now, 'quiet', quiet)
elseif known ~= '' and known ~= id then
  -- someone else wrote new books after a loss: no growth until every holder re-registered
  local until_ = tonumber(ep[2]) + lease
  if until_ > quiet then
    quiet = until_
    redis.call('HSET', KEYS[3], 'quiet', quiet)
  end
end
redis.call('PEXPIRE', KEYS[3], ttl)
local growing = now >= quiet
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)) do
  if m ~= me then
    redis.call('ZREM', KEYS[1], m)
    redis.call('HDEL', KEYS[2], m)
    for k = 4, #KEYS do redis.call('HDEL', KEYS[k], m) end
  end
end
redis.call('ZADD', KEYS[1], now + lease, me)
redis.call('HSET', KEYS[2], me, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
table.sort(members)
local n = #members
local base = math.floor(cap / n)
local extra = cap - base * n
local fair = {}
for r, m in ipairs(members) do
  if r <= extra then fair[m] = base + 1 else fair[m] = base end
end
local hungry = {}
local hv = redis.call('HGETALL', KEYS[2])
for i = 1, #hv, 2 do hungry[hv[i]] = (hv[i + 1] == '1') end
local peer_hungry = 0
for m, h in pairs(hungry) do
  if h and m ~= me and fair[m] then peer_hungry = 1 end
end
local out = {n, fair[me], peer_hungry, id}
for k = 4, #KEYS do
  local j = 7 + (k - 4) * 2
  local limit = tonumber(ARGV[j])
  local want = tonumber(ARGV[j + 1])
  local others = 0
  local starving = 0
  local gv = redis.call('HGETALL', KEYS[k])
  for i = 1, #gv, 2 do
    local m = gv[i]
    local g = tonumber(gv[i + 1])
    if m ~= me then
      if fair[m] then
        others = others + g
        if hungry[m] and g < fair[m] then starving = 1 end
      else
        redis.call('HDEL', KEYS[k], m)
      end
    end
  end
  local room = cap - others
  local grant = limit
  if want > limit and growing then grant = math.max(limit, math.min(want, room)) end
  if grant > 0 then
    redis.call('HSET', KEYS[k], me, grant)
    redis.call('PEXPIRE', KEYS[k], ttl)
  else
    redis.call('HDEL', KEYS[k], me)
  end
  out[#out + 1] = grant
  out[#out + 1] = room
  out[#out + 1] = starving
end
return out
"""

_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
for k = 2, #KEYS do redis.call('HDEL', KEYS[k], ARGV[1]) end
return 1
"""


@dataclass(frozen=True, slots=True)
class SharesConfig:
    """How the shares are kept (`gateway.settings`: `capacity_*`)."""

    prefix: str
    sync_interval_s: float = 0.05
    lease_s: float = 2.0
    fallback_instances: int = 1
    fallback_hold_s: float = 5.0


class Shares:
    """This instance's grants on every pod of every model, kept in step with Redis."""

    def __init__(
        self,
        scheduler: Scheduler,
        *,
        client: RedisClient | None,
        config: SharesConfig,
        caps: Mapping[str, int],
        instance: str,
        clock: Callable[[], float],
    ) -> None:
        self.scheduler = scheduler
        self.client = client
        self.config = config
        self.keys = CapacityKeys(config.prefix)
        self.member = f"{instance}:{uuid.uuid4().hex[:8]}"
        """Unique per process even if two instances were given the same id."""
        self.clock = clock
        self.books = {
            m: ShareBook(cap=cap, fallback_instances=config.fallback_instances)
            for m, cap in caps.items()
        }
        self.limits: dict[str, dict[str, int]] = {m: {} for m in caps}
        """model -> pod url -> the local limit (mirrored in `Pod.capacity`)."""
        self._gone: dict[str, set[str]] = {m: set() for m in caps}
        """model -> pods forgotten here whose grant is to be given back at the next sync."""
        self._last_ok: dict[str, float] = {}
        self._epochs: dict[str, str] = {}
        """model -> the id of the Redis books this instance last synced with."""
        self._warned = False
        self._wake = asyncio.Event()
        self._next_at: dict[str, float] = {}
        """model -> when it is next synced; a settled model (nothing here, nobody hungry, every
        ask granted) only renews its lease, every quarter lease, so idle models cost little."""
        self._sync: Any = None
        self._release: Any = None
        self._pipe: RawPipe | None = None

    # ------------------------------------------------------------ discovery
    def on_pods(self, model: str, ready: dict[str, bool]) -> None:
        """Discovery's report: new pods start at limit 0 (or the safe share in fallback)."""
        book = self.books.get(model)
        if book is None:
            self.scheduler.set_pods(model, ready, capacity=0)
            return
        limits = self.limits[model]
        known = set(self.scheduler.queue(model).pods)
        for url in ready:
            if url not in limits:
                limits[url] = 0
        if book.in_fallback or self.client is None:
            new = [u for u in ready if u not in known]
            limits.update(book.fallback(pods=dict.fromkeys(new, 0), now=self.clock(), hold_s=0))
        self.scheduler.set_pods(model, ready, capacity=0, limits=limits)
        self._forget_gone(model)
        self._next_at[model] = 0.0
        self._wake.set()  # new pods get their grants at once, not at the next tick

    def _forget_gone(self, model: str) -> None:
        pods = self.scheduler.queue(model).pods
        limits = self.limits[model]
        for url in [u for u in limits if u not in pods]:
            del limits[url]
            self._gone[model].add(url)

    # ------------------------------------------------------------------ sync
    async def run(self) -> None:
        """Sync every interval (or at once when pods change) until cancelled."""
        if self.client is None:  # events off: no peers can be learnt
            for model in self.books:
                self._enter_fallback(model, "no Redis configured")
            return
        loop = asyncio.get_running_loop()
        self.prepare()
        while True:
            checkpoint()
            started = loop.time()
            self._wake.clear()
            now = self.clock()
            due = [m for m in self.books if self._next_at.get(m, 0.0) <= now or self._busy(m)]
            if len(due) == 1:  # the usual case: no task and gather future per round
                await self.sync(due[0])
            elif due:
                await asyncio.gather(*(self.sync(m) for m in due))
            delay = self.config.sync_interval_s - (loop.time() - started)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()

    def _busy(self, model: str) -> bool:
        q = self.scheduler.queue(model)
        return q.queued + q.requeued + q.in_flight > 0

    def prepare(self) -> None:
        """Register the scripts (before the first `sync`; `run` does it). On a single Redis they
        run over a lean connection of their own (`RawPipe`: a sync every 50 ms per busy model
        through redis-py's `Script` cost ~0.1 ms of CPU more each); on a cluster through redis-py."""
        if self.client is None or self._sync is not None:
            return
        self._pipe = RawPipe.for_client(self.client)
        if self._pipe is not None:
            self._sync = PackedScript(self._pipe, _SYNC)
            self._release = PackedScript(self._pipe, _RELEASE)
        else:
            self._sync = self.client.register_script(_SYNC)
            self._release = self.client.register_script(_RELEASE)

    def close(self) -> None:
        """Close the scripts' own connection, if any (after `release`)."""
        if self._pipe is not None:
            self._pipe.close()

    async def sync(self, model: str) -> None:
        """One sync of `model`'s grants (or the fallback if Redis does not answer)."""
        book = self.books[model]
        q = self.scheduler.queue(model)
        self._forget_gone(model)
        limits = self.limits[model]
        gone = [u for u in self._gone[model] if u not in limits]
        outstanding = {u: q.pods[u].outstanding for u in limits if u in q.pods}
        ask = book.wants(limits=limits, outstanding=outstanding, hungry=q.queued + q.requeued > 0)
        self._apply(model, ask.limits)  # shrinks first
        sent = self.clock()
        try:
            async with asyncio.timeout(max(0.05, self.config.lease_s / 4)):
                reply = await self._call(model, ask, book.cap, gone)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis away, timing out, or refusing: degrade, never crash
            last = self._last_ok.get(model)
            if last is None or self.clock() - last > self.config.lease_s / 2:
                self._enter_fallback(model, f"{type(exc).__name__}: {exc}")
            return
        self._last_ok[model] = sent
        settled = (
            not self._busy(model)
            and not any(g.peer_hungry for g in reply.pods.values())
            and all(g.grant == ask.wants[u] for u, g in reply.pods.items())
        )
        self._next_at[model] = sent + self.config.lease_s / 4 if settled else 0.0
        self._gone[model].difference_update(gone)
        was_fallback = book.in_fallback
        new = book.granted(reply, asked=ask, now=self.clock())
        if was_fallback:
            self._warned = False  # a later outage is logged again
            log.info("shared capacity of %s: Redis reachable again, back to grants", model)
        self._apply(model, new)

    async def _call(self, model: str, ask: Ask, cap: int, gone: list[str]) -> SyncReply:
        urls = list(ask.limits)
        keys = [self.keys.members(model), self.keys.hungry(model), self.keys.epoch(model)]
        keys += [self.keys.pod(model, u) for u in [*urls, *gone]]
        lease_ms = int(self.config.lease_s * 1000)
        known = self._epochs.get(model, "")
        args: list[Any] = [self.member, lease_ms, cap, int(ask.hungry), lease_ms * 10, known]
        for url in urls:
            args += [ask.holds[url], ask.wants[url]]
        args += [0, 0] * len(gone)  # given back
        raw = await self._sync(keys=keys, args=args)
        n, fair, peer_hungry = int(raw[0]), int(raw[1]), bool(int(raw[2]))
        epoch = raw[3].decode() if isinstance(raw[3], bytes) else str(raw[3])
        if known and epoch != known:
            log.warning("shared capacity of %s: Redis lost its books; re-registering", model)
        self._epochs[model] = epoch
        pods = {
            url: PodGrant(
                grant=int(raw[4 + 3 * i]),
                room=int(raw[5 + 3 * i]),
                peer_hungry=peer_hungry,
                peer_starving=bool(int(raw[6 + 3 * i])),
            )
            for i, url in enumerate(urls)
        }
        return SyncReply(instances=n, fair=fair, pods=pods)

    def _enter_fallback(self, model: str, why: str) -> None:
        book = self.books[model]
        if not self._warned:
            self._warned = True
            log.warning(
                "shared capacity: cannot reach Redis (%s); each instance uses a safe share of "
                "every pod (cap // %d instances) until it can",
                why,
                book.instances or book.fallback_instances,
            )
        limits = book.fallback(
            pods=self.limits[model], now=self.clock(), hold_s=self.config.fallback_hold_s
        )
        self._apply(model, limits)

    def _apply(self, model: str, limits: Mapping[str, int]) -> None:
        own = self.limits[model]
        changed = {u: v for u, v in limits.items() if u in own and own[u] != v}
        if changed:
            own.update(changed)
            self.scheduler.set_limits(model, changed)

    async def release(self) -> None:
        """Give every grant back (a clean exit: peers need not wait for the lease to lapse)."""
        if self.client is None or self._release is None:
            return
        for model, limits in self.limits.items():
            keys = [self.keys.members(model), self.keys.hungry(model)]
            keys += [self.keys.pod(model, u) for u in limits]
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._release(keys=keys, args=[self.member])

    # --------------------------------------------------------------- reports
    def fallback_models(self) -> dict[str, bool]:
        return {m: b.in_fallback for m, b in self.books.items()}

    def instances(self) -> dict[str, int]:
        return {m: b.instances for m, b in self.books.items()}


@contextlib.asynccontextmanager
async def running_shares(
    scheduler: Scheduler,
    *,
    redis_url: str | None,
    config: SharesConfig,
    caps: Mapping[str, int],
    instance: str,
    clock: Callable[[], float],
) -> AsyncIterator[Shares]:
    """A `Shares` syncing in the background; its grants are given back on exit."""
    client = connect(redis_url, timeout=0.5, connect_timeout=0.25) if redis_url else None
    shares = Shares(
        scheduler, client=client, config=config, caps=caps, instance=instance, clock=clock
    )
    task = asyncio.create_task(shares.run(), name="capacity-shares")
    try:
        yield shares
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await shares.release()
        shares.close()
        if client is not None:
            with contextlib.suppress(Exception):
                await close(client)
