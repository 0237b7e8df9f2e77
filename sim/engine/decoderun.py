"""Virtual time's shortcut: a run of pure-decode steps in which the batch cannot change.

While every running request is decoding (one token per step), none can finish, no waiting
request can join and no block allocation can fail, each step's duration depends only on the
batch size and the growing context sum, so `sim.engine.core.Engine.advance` computes the steps'
end times as scalars (`extend`), reports nothing in between, and applies the whole run to the
requests and the KV cache once at its end (`apply_run`). `plan_run` decides whether such a run
starts at a given time and how long it may last.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from sim.engine.types import Req


class DecodeRun:
    """A run of pure-decode steps: their end times are computed lazily (scalars only) and applied
    to the requests once, when the run ends."""

    __slots__ = (
        "batch",
        "context0",
        "curve",
        "cut_arrival",
        "cut_hit",
        "done",
        "ends",
        "limit",
        "reason",
        "start",
    )

    def __init__(
        self,
        *,
        batch: int,
        limit: int,
        reason: str,
        cut_arrival: float,
        start: float,
        context: int,
        curve: Callable[[int], float],
    ) -> None:
        self.batch = batch
        self.limit = limit  # steps it may run
        self.reason = reason  # what ends it at `limit`: "finish" | "blocks"
        self.cut_arrival = cut_arrival  # it ends early once a step ends at or after this
        self.cut_hit = False
        self.start = start
        self.context0 = context  # context sum of its first step
        self.curve = curve
        self.ends: list[float] = []  # end time of each step computed so far
        self.done = 0  # steps already applied to the clock and counters


def extra_blocks(running: list[Req], steps: int, block_size: int) -> int:
    """KV blocks the running requests need for `steps` more decode steps."""
    bs = block_size
    return sum(-(-(r.computed + steps) // bs) - r.blocks for r in running)


def plan_run(
    *,
    start: float,
    running: list[Req],
    waiting: deque[Req],
    free_blocks: int,
    block_size: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    curve: Callable[[int], Callable[[int], float]],
) -> DecodeRun | None:
    """The run of uneventful pure-decode steps that can start at `start`, if any."""
    batch = len(running)
    if batch == 0 or max_num_batched_tokens < batch:
        return None
    last = running[-1]  # the newest: the one still in prefill, if any (checked first, cheaply)
    if last.prompt + last.generated - last.computed != 1:
        return None
    context = 0
    remaining = 1 << 62
    for r in running:
        if r.prompt + r.generated - r.computed != 1:
            return None
        context += r.computed + 1
        left = r.max_tokens - r.generated
        if left < remaining:
            remaining = left
    limit = remaining - 1  # the step in which a request finishes is planned normally
    if limit <= 0:
        return None
    cut_arrival = math.inf
    if waiting and batch < max_num_seqs and max_num_batched_tokens > batch:
        head = waiting[0]
        if head.arrival <= start:
            first_chunk = min(head.prompt + head.generated, max_num_batched_tokens - batch)
            need = -(-first_chunk // block_size)
            if need <= free_blocks - extra_blocks(running, 1, block_size):
                return None  # it joins in the next step
        else:
            cut_arrival = head.arrival
    reason = "finish"
    if extra_blocks(running, limit, block_size) > free_blocks:
        lo, hi = 0, limit  # largest m with extra(m) <= free
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if extra_blocks(running, mid, block_size) <= free_blocks:
                lo = mid
            else:
                hi = mid - 1
        limit, reason = lo, "blocks"
        if limit == 0:
            return None
    return DecodeRun(
        batch=batch,
        limit=limit,
        reason=reason,
        cut_arrival=cut_arrival,
        start=start,
        context=context,
        curve=curve(batch),
    )


CHECKPOINT_STEPS = 32
"""`projected_change` computes at least this many more steps, and at least as many as it has
computed so far (doubling), before it settles for a checkpoint."""


def extend(run: DecodeRun, until: float, slowdown: float, max_steps: int | None = None) -> None:
    """Compute the run's step end times up to the first one past `until` (or its end), at most
    `max_steps` more."""
    ends = run.ends
    n = len(ends)
    t = ends[-1] if n else run.start
    if run.cut_hit or n >= run.limit or t > until:
        return
    batch, limit, cut = run.batch, run.limit, run.cut_arrival
    if max_steps is not None:
        limit = min(limit, n + max_steps)
    context = run.context0 + n * batch
    curve = run.curve
    append = ends.append
    while n < limit and t <= until:
        t += curve(context) * slowdown
        append(t)
        n += 1
        context += batch
        if t >= cut:
            run.cut_hit = True
            break


def projected_change(run: DecodeRun, slowdown: float) -> float:
    """When the run ends in something observable: the finishing step's end, or the run's end;
    or, while more steps remain than `CHECKPOINT_STEPS` (or than were computed so far), the end
    of the last step computed: a checkpoint at which nothing observable happens, where the
    driver asks again. A run cut short by a new request (most of them, under load) then wastes
    at most that many computed steps instead of all the steps to its end; the steps and their
    end times are the same floats either way."""
    done = len(run.ends)
    extend(run, math.inf, slowdown, max(CHECKPOINT_STEPS, done))
    if not run.cut_hit and len(run.ends) < run.limit:
        return run.ends[-1]
    t = run.ends[-1] if run.ends else run.start
    if run.reason == "finish" and not run.cut_hit:
        t += run.curve(run.context0 + len(run.ends) * run.batch) * slowdown
    return t


def apply_run(run: DecodeRun, running: list[Req], block_size: int) -> int:
    """Apply the run's completed steps to the requests; returns the KV blocks they took."""
    k = run.done
    if k == 0:
        return 0
    used = 0
    for r in running:
        r.computed += k
        r.generated += k
        blocks = -(-r.computed // block_size)
        used += blocks - r.blocks
        r.blocks = blocks
    return used
