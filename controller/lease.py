"""Leader election on a `coordination.k8s.io/v1` Lease (the client-go algorithm, asyncio).

Every `retry_period_s` each candidate reads the Lease. The holder renews it (`renewTime`); a
candidate takes it over when it is free or when the record has not changed for
`lease_duration_s` on the candidate's *own* clock (so clock skew between hosts does not matter).
Writes carry the read `resourceVersion`, so of two candidates racing only one wins (the other
gets a 409). A leader that cannot renew for `renew_deadline_s` steps down by itself, before
anyone else may take over. `release()` on shutdown hands the Lease over at once.

**Fencing.** Leadership is a deadline, not a flag: a successful round that started at `t`
(before the Lease was read, so before our `renewTime` landed) makes us leader until
`t + renew_deadline_s`, and `is_leader` / `remaining()` compare that deadline with the clock
*when asked*. A standby can take over no earlier than `lease_duration_s` after it saw our last
renewal, which came after `t`; with `renew_deadline_s < lease_duration_s` the difference is the
margin for a write in flight. So a leader that was paused (SIGSTOP, a long GC, a stalled event
loop) or partitioned answers "not leader" the moment it runs again, before its next renewal
round has even been tried. The actuator asks `remaining()` immediately before each PATCH and
bounds the PATCH's client timeout by it (`controller.actuator`).

`on_change(bool)` is called on each transition seen by the campaign loop. Times come from an
injected monotonic clock (the loop's by default).

**Wanting.** An optional `want(claim)` hook lets a caller (`controller.shards`) hold a Lease only
when it should: it is asked before each write with the kind of `Claim` (renew what we hold, take a
Lease just released or not yet created, take over one whose holder went silent); a holder that no
longer wants its Lease releases it (stepping down *before* the write, so the fence closes first).
The Lease is read every round regardless, so a candidate that starts wanting it has already been
watching the holder's silence.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import Callable

import orjson
from kubernetes_asyncio import client

from controller.kube import body_of, classify, now_rfc3339
from controller.objects import Lease, LeaseSpec, ObjectMeta
from surgescale.cancel import checkpoint
from surgescale.retry import PermanentError, TemporaryError

log = logging.getLogger(__name__)


class Claim(enum.Enum):
    """What a write of ours to the Lease would do (asked of the `want` hook)."""

    RENEW = "renew"
    """We hold it: renew."""
    FREE = "free"
    """Nobody holds it (released, or not created yet): take it."""
    ORPHAN = "orphan"
    """Its holder stopped renewing (or it has stayed free for a whole lease duration): take it
    over (a lost member's work)."""


class LeaseElector:
    """Campaigns for one Lease until cancelled; `is_leader` says whether we hold it."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration_s: float = 4.0,
        renew_deadline_s: float | None = None,
        retry_period_s: float = 1.0,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] | None = None,
        want: Callable[[Claim], bool] | None = None,
        labels: dict[str, str] | None = None,
    ) -> None:
        self._api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = (
            renew_deadline_s
            if renew_deadline_s is not None
            else max(lease_duration_s - retry_period_s, retry_period_s)
        )
        self.retry_period_s = retry_period_s
        self._on_change = on_change
        self._clock = clock
        self._want = want
        self._labels = dict(labels or {})
        self._leading = False
        self.transitions = 0
        self._observed: tuple[str | None, str | None, str | None] | None = None
        """(holder, renewTime, acquireTime) of the Lease as last read or written."""
        self._observed_at = 0.0
        self._valid_until = -math.inf

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def remaining(self) -> float:
        """Seconds our leadership is still valid for (<= 0: we must not write)."""
        if not self._leading:
            return 0.0
        return self._valid_until - self._now()

    @property
    def is_leader(self) -> bool:
        """True while we hold the Lease and its renew deadline has not passed (now)."""
        return self.remaining() > 0

    def _set_leader(self, value: bool) -> None:
        if value != self._leading:
            self._leading = value
            if not value:
                self._valid_until = -math.inf
            self.transitions += 1
            log.info(
                "%s %s lease %s/%s",
                self.identity,
                "acquired" if value else "lost",
                self.namespace,
                self.name,
            )
            if self._on_change is not None:
                self._on_change(value)

    async def run(self) -> None:
        """Campaign and renew forever (cancel to stop; call `release()` after)."""
        while True:
            checkpoint()
            if self._leading and self._want is not None and not self._want(Claim.RENEW):
                await self.release(drain=True)  # fence closes first, writes in flight end
                await asyncio.sleep(self.retry_period_s)
                continue
            started = self._now()
            try:
                ok = await self.try_acquire_or_renew()
            except (TemporaryError, PermanentError) as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                ok = False
            now = self._now()
            if ok:
                # Valid from when this round began: our renewTime landed after that.
                self._valid_until = started + self.renew_deadline_s
                self._set_leader(now < self._valid_until)
            elif self._leading and now >= self._valid_until:
                self._set_leader(False)
            await asyncio.sleep(self.retry_period_s)

    def _spec(self, *, renew: str, acquire: str, transitions: int) -> LeaseSpec:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, math.ceil(self.lease_duration_s)),
            "acquireTime": acquire,
            "renewTime": renew,
            "leaseTransitions": transitions,
        }

    async def _read(self) -> Lease | None:
        try:
            resp = await self._api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=2.0
            )
            data: Lease = orjson.loads(await body_of(resp))
        except PermanentError as exc:
            if str(exc).startswith("HTTP 404"):
                return None
            raise
        except Exception as exc:
            raise classify(exc) from exc
        return data

    async def try_acquire_or_renew(self) -> bool:
        """One round of the algorithm; True if we hold the Lease afterwards."""
        stamp = now_rfc3339(micro=True)
        lease = await self._read()
        now = self._now()
        if lease is None:
            if not self._wants(Claim.FREE):
                return False
            meta: ObjectMeta = {"name": self.name, "namespace": self.namespace}
            if self._labels:
                meta["labels"] = self._labels
            body: Lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": meta,
                "spec": self._spec(renew=stamp, acquire=stamp, transitions=0),
            }
            return await self._write(body, create=True)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("acquireTime"))
        if record != self._observed:
            self._observed = record
            self._observed_at = now
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration_s)
        silent = now - self._observed_at >= duration
        if holder and holder != self.identity and not silent:
            return False  # someone else holds a live lease
        # A released Lease carries a 1 s duration: free, then an orphan after 1 s.
        claim = Claim.RENEW if holder == self.identity else Claim.ORPHAN if silent else Claim.FREE
        if not self._wants(claim):
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder != self.identity:
            transitions += 1
            acquire = stamp
        else:
            acquire = spec.get("acquireTime") or stamp
        lease["spec"] = self._spec(renew=stamp, acquire=acquire, transitions=transitions)
        return await self._write(lease, create=False)

    def _wants(self, claim: Claim) -> bool:
        return self._want is None or self._want(claim)

    async def _write(self, body: Lease, *, create: bool) -> bool:
        try:
            if create:
                resp = await self._api.create_namespaced_lease(
                    self.namespace,
                    body,  # type: ignore[arg-type]
                    _preload_content=False,
                    _request_timeout=2.0,
                )
            else:
                resp = await self._api.replace_namespaced_lease(
                    self.name,
                    self.namespace,
                    body,  # type: ignore[arg-type]
                    _preload_content=False,
                    _request_timeout=2.0,
                )
            data: Lease = orjson.loads(await body_of(resp))
        except (TemporaryError, PermanentError) as exc:
            if "HTTP 409" in str(exc):
                return False  # lost a race
            raise
        except Exception as exc:
            raise classify(exc) from exc
        spec = data.get("spec") or {}
        self._observed = (
            spec.get("holderIdentity"),
            spec.get("renewTime"),
            spec.get("acquireTime"),
        )
        self._observed_at = self._now()
        return True

    async def release(self, *, drain: bool = False) -> None:
        """Give the Lease up (shutdown): clear the holder so a standby takes over at once.

        With `drain`, wait after stepping down until any write started under our leadership
        has timed out (writes bound their client timeout by `remaining()`), so that the next
        holder's first write cannot overtake one of ours (a hand-over while running)."""
        if not self._leading:
            return
        left = self.remaining()
        self._set_leader(False)
        if drain and left > 0:
            await asyncio.sleep(left)
        try:
            lease = await self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = lease.setdefault("spec", {})
            spec["holderIdentity"] = ""
            spec["leaseDurationSeconds"] = 1
            await self._write(lease, create=False)
        except (TemporaryError, PermanentError) as exc:
            log.warning("releasing lease %s/%s failed: %s", self.namespace, self.name, exc)
