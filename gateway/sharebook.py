"""Per-instance shares of every pod's slots: the pure bookkeeping of one model on one instance.

Several gateway instances (workers and replicas) send requests to the same pods. Each instance
may only use, on each pod, the slots it holds a *grant* for; the grants of all instances on one
pod sum to at most the pod's cap (`gateway.shares` keeps them in Redis and changes them
atomically). The local limit (`Pod.capacity` in `gateway.admission`) is never above the grant
Redis holds for this instance, so the requests all instances have at a pod never exceed its cap.

This module decides, without I/O and without a clock of its own (time is passed in):

- `ShareBook.wants(...)` what to ask for on the next sync, per pod, and which local limits to
  lower *before* the ask leaves (a shrink takes effect locally first; a growth only once Redis
  granted it);
- `ShareBook.granted(...)` the new limits from a sync's answer;
- `ShareBook.fallback(...)` the limits while Redis cannot be reached: a safe share
  `max(1, cap // n)`, n the last known number of instances (or the configured guess).

How much to ask for (per pod, `fair` = this instance's fair share `cap // n` (+1 for the first
`cap % n` instances), `out` = its requests at the pod):

- hungry (requests queued here) and no peer is *starving* (hungry with less than its fair share):
  everything the pod has left (idle shares are borrowed);
- hungry while a peer starves: `fair` (no new requests above it; borrowed slots go back as the
  requests on them finish);
- not hungry while a peer is hungry: `min(fair, out + headroom)` (lend what is idle, keep a
  little headroom so a new arrival here still goes at once);
- otherwise `max(out, fair)`.

The local limit may drop below `out`; Redis keeps `max(out, limit)` granted (`Ask.holds`), so
what it holds for this instance always covers what this instance has at the pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PodGrant:
    """A sync's answer for one pod."""

    grant: int
    """The slots Redis now holds for this instance on the pod."""
    room: int
    """Cap minus everyone else's grants (below `grant` only if the books were broken)."""
    peer_hungry: bool
    """Another live instance has requests queued for the model."""
    peer_starving: bool
    """Another live instance is hungry and holds less than its fair share of this pod."""


@dataclass(frozen=True, slots=True)
class SyncReply:
    """A sync's answer for one model."""

    instances: int
    fair: int
    pods: Mapping[str, PodGrant]


@dataclass(frozen=True, slots=True)
class Ask:
    """What to send on a sync, per pod."""

    limits: dict[str, int]
    """The local dispatch limit after any shrink: applied before the sync is sent. It may be
    below the requests already at the pod (no new ones go there until they finish)."""
    holds: dict[str, int]
    """What Redis must keep granted until the answer: `max(requests at the pod, limit)`."""
    wants: dict[str, int]
    """The dispatch limit this instance would like."""
    hungry: bool


def fair_share(cap: int, instances: int) -> int:
    """The safe share of one of `instances` instances: `cap // n`, at least 1."""
    return max(1, cap // max(1, instances))


@dataclass(slots=True)
class ShareBook:
    """One model's shares on this instance."""

    cap: int
    fallback_instances: int
    """Instances assumed when none were ever learnt (the workers of this replica, at least)."""
    instances: int = 0
    """Live instances serving the model at the last sync (0: never synced)."""
    fair: int = 0
    grants: dict[str, PodGrant] = field(default_factory=dict)
    in_fallback: bool = False
    fallback_since: float | None = None

    def wants(
        self, *, limits: Mapping[str, int], outstanding: Mapping[str, int], hungry: bool
    ) -> Ask:
        """What to ask Redis for, per pod in `limits` (the current local limits)."""
        fair = self.fair if self.instances else fair_share(self.cap, self.fallback_instances)
        headroom = max(1, fair // 4)
        new_limits: dict[str, int] = {}
        holds: dict[str, int] = {}
        wants: dict[str, int] = {}
        for url, limit in limits.items():
            out = outstanding.get(url, 0)
            last = self.grants.get(url)
            peer_hungry = last.peer_hungry if last is not None else False
            peer_starving = last.peer_starving if last is not None else False
            if hungry and not peer_starving:
                want = self.cap
            elif hungry:
                want = fair  # stop refilling borrowed slots: they go back as requests finish
            elif peer_hungry:
                want = min(fair, out + headroom)
            else:
                want = max(out, fair)
            want = min(want, self.cap)
            if want < limit:  # a shrink: local first, so Redis never holds less than we use
                limit = want
            new_limits[url] = limit
            holds[url] = max(out, limit)
            wants[url] = want
        return Ask(limits=new_limits, holds=holds, wants=wants, hungry=hungry)

    def granted(self, reply: SyncReply, *, asked: Ask, now: float) -> dict[str, int]:
        """The local limits after a successful sync (leaving fallback if it was on)."""
        self.instances = reply.instances
        self.fair = reply.fair
        self.in_fallback = False
        self.fallback_since = None
        out: dict[str, int] = {}
        for url, pod in reply.pods.items():
            self.grants[url] = pod
            if url not in asked.limits:
                continue
            limit = min(pod.grant, max(asked.wants[url], asked.limits[url]))
            if pod.room < limit:  # someone took slots we still hold: stop at what is left
                limit = max(0, pod.room)
            out[url] = limit
        for url in [u for u in self.grants if u not in reply.pods]:
            del self.grants[url]
        return out

    def fallback(self, *, pods: Mapping[str, int], now: float, hold_s: float) -> dict[str, int]:
        """The local limits while Redis is away: the safe share, not above the last grant
        during the first `hold_s` (while requests sent under the old grants finish)."""
        if not self.in_fallback:
            self.in_fallback = True
            self.fallback_since = now
        share = fair_share(self.cap, self.instances or self.fallback_instances)
        holding = self.fallback_since is not None and now - self.fallback_since < hold_s
        out: dict[str, int] = {}
        for url in pods:
            last = self.grants.get(url)
            out[url] = min(share, last.grant) if holding and last is not None else share
        return out
