"""Controllers sharded by model: S shard Leases split among the live controller replicas.

A model belongs to shard `crc32(model) mod S` (stable across processes and versions). Each shard
is one `coordination.k8s.io/v1` Lease (`<lease-name>-<i>`), campaigned for by a `LeaseElector`
per shard in every replica, so a model is driven by whoever holds its shard's Lease and by no one
else: every write for it is fenced by *that* Lease's renew deadline (`remaining_for(model)`), the
same deadline rule as the single Lease (`controller.lease`).

**Balance.** Each replica also holds a member Lease of its own (`<lease-name>-member-<identity>`,
labelled with the group) and lists the group's member Leases every round; a member is live while
its record keeps changing within the lease duration (on our clock, as the elector judges a
holder). With N live members a replica wants at most `ceil(S / N)` shards: it renews its most
preferred held shards up to that number (preference = a hash of identity and shard, so members
prefer different shards) and releases the rest (stepping down first and waiting out its writes
in flight, `LeaseElector.release(drain=True)`); it takes a free (just released) shard only while
under that number. An orphaned shard (its holder stopped renewing: a lost member) is taken by any
replica at once, balance or not, so takeover time is the single Lease's: at most
`lease_duration + 2 x retry` (3 s + 1 s by default); extra shards are handed on afterwards.

With S = 1 (the default) there is one Lease named `<lease-name>`, no member Leases, and every
replica campaigns for it: the leader/standby behaviour of before. A replica alone holds every shard
(`ceil(S / 1) = S`) and runs everything.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import zlib
from collections.abc import Callable

import orjson
from kubernetes_asyncio import client

from controller.kube import body_of, classify
from controller.lease import Claim, LeaseElector
from controller.objects import Lease, ObjectList
from surgescale.cancel import checkpoint
from surgescale.retry import PermanentError, TemporaryError

log = logging.getLogger(__name__)

MEMBER_LABEL = "surgescale.io/controller-members"
SHARD_LABEL = "surgescale.io/controller-shards"


def shard_of(model: str, shards: int) -> int:
    """The shard of a model (CRC-32 of its name mod `shards`; the same in every process)."""
    if shards <= 1:
        return 0
    return zlib.crc32(model.encode()) % shards


def _dns_name(text: str) -> str:
    """`text` as a valid object name part (lower case, [a-z0-9-], at most 200 characters)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return (name or "x")[:200]


def _label_value(text: str) -> str:
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    return value[:63].rstrip("-_.") or "x"


class ShardSet:
    """The shard Leases (and member Lease) of one controller replica."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        shards: int,
        namespace: str,
        lease_name: str,
        identity: str,
        lease_duration_s: float,
        retry_period_s: float,
        on_change: Callable[[int, bool], None] | None = None,
    ) -> None:
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.shards = shards
        self.namespace = namespace
        self.identity = identity
        self.lease_name = lease_name
        self.lease_duration_s = lease_duration_s
        self.retry_period_s = retry_period_s
        self._on_change = on_change
        self._api = api
        self._coordination = client.CoordinationV1Api(api)
        self._group = _label_value(lease_name)
        self.members = 1
        """Live members seen in the last round (ourselves included)."""
        self._seen: dict[str, tuple[str, str | None]] = {}
        self._seen_at: dict[str, float] = {}
        self._released_at: dict[int, float] = {}
        self._preference = {i: zlib.crc32(f"{identity}/{i}".encode()) for i in range(shards)}
        self.electors: list[LeaseElector] = [
            LeaseElector(
                api,
                namespace=namespace,
                name=lease_name if shards == 1 else f"{lease_name}-{i}",
                identity=identity,
                lease_duration_s=lease_duration_s,
                retry_period_s=retry_period_s,
                on_change=self._changed(i),
                want=None if shards == 1 else self._wanting(i),
                labels=None if shards == 1 else {SHARD_LABEL: self._group},
            )
            for i in range(shards)
        ]
        self.member: LeaseElector | None = (
            None
            if shards == 1
            else LeaseElector(
                api,
                namespace=namespace,
                name=f"{_dns_name(lease_name)}-member-{_dns_name(identity)}",
                identity=identity,
                lease_duration_s=lease_duration_s,
                retry_period_s=retry_period_s,
                labels={MEMBER_LABEL: self._group},
            )
        )

    # --- who drives what --------------------------------------------------------------------

    def shard_of(self, model: str) -> int:
        return shard_of(model, self.shards)

    def remaining(self, shard: int) -> float:
        """Seconds our hold on `shard` is still valid for (<= 0: no write for its models)."""
        return self.electors[shard].remaining()

    def remaining_for(self, model: str | None) -> float:
        """The fence of a write for `model` (None, e.g. a target no model owns: never)."""
        if model is None:
            return 0.0
        return self.electors[self.shard_of(model)].remaining()

    def leads(self, model: str | None) -> bool:
        return self.remaining_for(model) > 0

    def held(self) -> list[int]:
        """The shards whose Lease we hold now."""
        return [i for i, e in enumerate(self.electors) if e.is_leader]

    @property
    def any_held(self) -> bool:
        return any(e.is_leader for e in self.electors)

    @property
    def target(self) -> int:
        """How many shards this replica should hold: ceil(S / live members)."""
        return math.ceil(self.shards / max(self.members, 1))

    # --- campaigning --------------------------------------------------------------------------

    def _changed(self, shard: int) -> Callable[[bool], None]:
        def changed(leader: bool) -> None:
            if not leader:
                self._released_at[shard] = self._now()
            if self._on_change is not None:
                self._on_change(shard, leader)

        return changed

    def _wanting(self, shard: int) -> Callable[[Claim], bool]:
        def want(claim: Claim) -> bool:
            held = self.held()
            target = self.target
            if claim is Claim.RENEW:
                keep = sorted(held, key=lambda i: -self._preference[i])[:target]
                return shard in keep
            if claim is Claim.FREE:
                return len(held) < target
            # An orphan is taken at once (a lost member's models must not wait for balance),
            # except one we let go of ourselves lately while at our share: its taker is on the way.
            released = self._released_at.get(shard)
            recent = released is not None and self._now() - released < 2 * self.lease_duration_s
            return not (recent and len(held) >= target)

        return want

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _count_members(self) -> None:
        try:
            resp = await self._coordination.list_namespaced_lease(
                self.namespace,
                label_selector=f"{MEMBER_LABEL}={self._group}",
                _preload_content=False,
                _request_timeout=2.0,
            )
            data: ObjectList[Lease] = orjson.loads(await body_of(resp))
        except (TemporaryError, PermanentError) as exc:
            log.warning("listing controller members: %s", exc)
            return
        except Exception as exc:
            log.warning("listing controller members: %s", classify(exc))
            return
        now = self._now()
        live = 0
        names = set()
        for item in data.get("items") or []:
            name = (item.get("metadata") or {}).get("name") or ""
            spec = item.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            record: tuple[str, str | None] = (holder, spec.get("renewTime"))
            names.add(name)
            if self._seen.get(name) != record:
                self._seen[name], self._seen_at[name] = record, now
            duration = float(spec.get("leaseDurationSeconds") or self.lease_duration_s)
            if holder == self.identity or (holder and now - self._seen_at[name] < duration):
                live += 1
        for gone in set(self._seen) - names:
            self._seen.pop(gone, None)
            self._seen_at.pop(gone, None)
        members = max(live, 1)
        if members != self.members:
            log.info(
                "%s: %d live controller members (was %d): share %d of %d shards",
                self.identity,
                members,
                self.members,
                math.ceil(self.shards / members),
                self.shards,
            )
        self.members = members

    async def _membership(self) -> None:
        while True:
            checkpoint()
            await self._count_members()
            await asyncio.sleep(self.retry_period_s)

    async def run(self) -> None:
        """Campaign for every shard (and keep our member Lease) until cancelled."""
        tasks = [asyncio.create_task(e.run(), name=f"lease {e.name}") for e in self.electors]
        if self.member is not None:
            tasks.append(asyncio.create_task(self.member.run(), name="member lease"))
            tasks.append(asyncio.create_task(self._membership(), name="members"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def release(self) -> None:
        """Give every held Lease up (shutdown; writes were flushed before)."""
        leases = [*self.electors, *([self.member] if self.member is not None else [])]
        await asyncio.gather(*(e.release() for e in leases), return_exceptions=True)
