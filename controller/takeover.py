"""Which events a sharded controller applies, and rebuilding a model's state when its shard moves.

With shards (`controller.shards`, S > 1) a replica keeps state only for the models of the shards
it holds: `ModelGate.admit(events)` passes those and drops the rest (they are read by the
replica's own consumer group and acknowledged like any, but never folded in). When a shard is
taken over, its models' state is rebuilt from their streams: each model's state is dropped and
the last `window_s` of its stream is re-read (`surgescale.events.replay`) and folded in; events of
the shard that arrive meanwhile are held back and folded in after the replay (the replay's tail
and the held-back events overlap: events carry ids, so the state applies each once). Only then
does the shard count as ready (`ready(shard)`), and the loop decides for its models.
When a shard is lost its models' state is dropped.

With S = 1 every event is admitted (a standby keeps its state warm, as before sharding).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from controller.shards import shard_of
from controller.state import StateStore
from surgescale.events import Event

log = logging.getLogger(__name__)

Replay = Callable[[str, int], Awaitable[list[Event]]]
"""(model, since wall-clock ms) -> that model's events since then, oldest first."""


class ModelGate:
    """The admission of events by shard, and the rebuild of taken-over models."""

    def __init__(
        self,
        *,
        shards: int,
        store: StateStore,
        replay: Replay,
        window_s: float,
    ) -> None:
        self.shards = shards
        self._store = store
        self._replay = replay
        self._window_s = window_s
        self._shard_cache: dict[str, int] = {}
        self._mode: list[int] = [_OFF] * shards
        self._held: list[list[Event]] = [[] for _ in range(shards)]
        self._generation = [0] * shards
        self.dropped = 0
        """Events not applied because their shard is not ours."""
        self.replayed = 0
        """Events re-read from the streams by rebuilds."""

    def shard(self, model: str) -> int:
        shard = self._shard_cache.get(model)
        if shard is None:
            if len(self._shard_cache) > 100_000:
                self._shard_cache.clear()
            shard = self._shard_cache[model] = shard_of(model, self.shards)
        return shard

    def ready(self, shard: int) -> bool:
        """True when the shard is ours and its models' state is rebuilt (always with S = 1)."""
        return self.shards == 1 or self._mode[shard] == _ON

    def admit(self, events: list[Event]) -> list[Event]:
        """The events to fold in now (all with S = 1); a rebuilding shard's are held back."""
        if self.shards == 1:
            return events
        out: list[Event] = []
        mode = self._mode
        shard_of_model = self.shard
        for event in events:
            shard = shard_of_model(event.model)
            state = mode[shard]
            if state == _ON:
                out.append(event)
            elif state == _REBUILDING:
                self._held[shard].append(event)
            else:
                self.dropped += 1
        return out

    def lost(self, shard: int) -> None:
        """The shard's Lease is gone: stop applying its events and drop its models' state."""
        if self.shards == 1:
            return
        self._mode[shard] = _OFF
        self._generation[shard] += 1
        self._held[shard] = []
        for model in [m for m in self._store.models if self.shard(m) == shard]:
            del self._store.models[model]

    async def rebuild(self, shard: int, models: Iterable[str]) -> bool:
        """Rebuild the shard's `models` from their streams (the shard is being taken over);
        True if it is ready afterwards (False: lost again meanwhile)."""
        if self.shards == 1:
            return True
        self._mode[shard] = _REBUILDING
        self._generation[shard] += 1
        generation = self._generation[shard]
        self._held[shard] = []
        for model in [m for m in self._store.models if self.shard(m) == shard]:
            del self._store.models[model]
        since_ms = time.time_ns() // 1_000_000 - int(self._window_s * 1000)
        wanted = sorted({m for m in models if self.shard(m) == shard})
        results = await asyncio.gather(
            *(self._replay(m, since_ms) for m in wanted), return_exceptions=True
        )
        if self._generation[shard] != generation:
            return False  # lost (or rebuilt by a newer takeover) while reading
        loop = asyncio.get_running_loop()
        for model, result in zip(wanted, results, strict=True):
            if isinstance(result, BaseException):
                # The live events still arrive: the state fills from them (a cold start).
                log.warning("replaying %s for takeover failed: %r", model, result)
                continue
            if result:
                self._store.ingest(result, loop.time(), wall_ms=time.time_ns() // 1_000_000)
                self.replayed += len(result)
        held, self._held[shard] = self._held[shard], []
        if held:
            self._store.ingest(held, loop.time(), wall_ms=time.time_ns() // 1_000_000)
        self._mode[shard] = _ON
        log.info(
            "shard %d rebuilt: %d models, %d events replayed, %d held back",
            shard,
            len(wanted),
            sum(len(r) for r in results if isinstance(r, list)),
            len(held),
        )
        return True


_OFF, _REBUILDING, _ON = 0, 1, 2
