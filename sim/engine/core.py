"""The continuous-batching engine: vLLM's scheduler and KV-cache accounting, minus the GPU.

State: a FIFO `waiting` queue and a `running` list (schedule order, oldest first). Each step,
planned at a time passed in:

1. running requests first, in order: each gets the tokens it still needs (1 for a decode, the
   rest of its prompt, capped by what is left of `max_num_batched_tokens`: chunked prefill).
   Blocks for those tokens come from the KV cache (16 tokens per block); when none are free, the
   NEWEST running request is preempted (blocks freed, progress dropped: recompute) and put back at
   the head of the waiting queue, until the allocation fits or the request preempts itself.
2. if nothing was preempted, waiting requests that have arrived by the step's start join in FIFO
   order while there are seats (`max_num_seqs`), token budget and blocks for their first chunk.
3. the step's duration comes from `sim.engine.steptime`; every request whose known tokens are
   all in the KV cache after the step samples one new token at the step's end (the first one is
   its first token); a request with `max_tokens` tokens finishes and frees its blocks.

State changes are committed when a step is planned; the outputs belong to the step's end time.
Two drivers use this one model (see the package docstring): `step(now)` for the live pod, and
`advance(until)` for virtual time, which skips runs of steps in which the batch cannot change.
"""

from __future__ import annotations

import enum
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from sim.engine.profiles import Profile


class RequestRejected(ValueError):
    """The request can never be served (too long for the model or the cache, or bad sizes)."""


class EventKind(enum.Enum):
    FIRST_TOKEN = "first_token"
    FINISHED = "finished"
    PREEMPTED = "preempted"


@dataclass(frozen=True, slots=True)
class EngineEvent:
    """Something that happened to one request at an exact (model) time."""

    time: float
    request_id: str
    kind: EventKind
    output_tokens: int


class TokenOutput(NamedTuple):
    """One request's output of one step: one new token (`total` so far). A NamedTuple: a big
    batch makes thousands per step, and a frozen dataclass costs several times more to build."""

    request_id: str
    total: int
    first: bool
    finished: bool


@dataclass(frozen=True, slots=True)
class StepResult:
    """A planned step: when it starts and ends, what it emits at its end, whom it preempted."""

    start: float
    end: float
    outputs: tuple[TokenOutput, ...]
    preempted: tuple[str, ...]
    admitted: tuple[str, ...]  # requests that left the waiting queue for the first time
    num_decode: int
    num_prefill_tokens: int

    @property
    def duration(self) -> float:
        return self.end - self.start


class _Req:
    __slots__ = ("arrival", "blocks", "computed", "generated", "id", "max_tokens", "prompt")

    def __init__(self, request_id: str, prompt: int, max_tokens: int, arrival: float) -> None:
        self.id = request_id
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.arrival = arrival
        self.computed = 0  # tokens whose KV is in the cache
        self.generated = 0  # output tokens sampled so far
        self.blocks = 0


class _Jump:
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


class Engine:
    """One vLLM engine (one pod). Not thread-safe; one driver at a time."""

    def __init__(
        self,
        profile: Profile,
        *,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        num_kv_blocks: int | None = None,
    ) -> None:
        self.profile = profile
        self.max_num_seqs = max_num_seqs or profile.max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens or profile.max_num_batched_tokens
        self.num_kv_blocks = profile.num_kv_blocks if num_kv_blocks is None else num_kv_blocks
        self.block_size = profile.block_size
        self.slowdown = 1.0  # step-time multiplier (fault injection)
        self._free = self.num_kv_blocks
        self._running: list[_Req] = []
        self._waiting: deque[_Req] = deque()
        self._by_id: dict[str, _Req] = {}
        self._clock = 0.0  # end of the last planned step (no step may start before it)
        self._pending: StepResult | None = None  # advance(): planned, not yet delivered
        self._jump: _Jump | None = None  # advance(): skipped steps not yet applied to requests
        self._jump_cache: _Jump | None = None  # the run planned to follow the pending step
        self._curves: dict[int, Callable[[int], float]] = {}
        self.preemptions = 0
        self.generation_tokens = 0
        self.prompt_tokens = 0
        self.steps = 0
        self.skipped_steps = 0  # of `steps`, those advance() ran without planning them one by one

    # ---- gauges -------------------------------------------------------------------------------
    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def kv_usage(self) -> float:
        """Fraction of KV-cache blocks in use (vLLM's `kv_cache_usage_perc`, 0..1)."""
        if self.num_kv_blocks == 0:
            return 0.0
        if self._jump is not None:
            self._end_jump()
        return 1.0 - self._free / self.num_kv_blocks

    @property
    def has_work(self) -> bool:
        return bool(self._running or self._waiting)

    @property
    def busy_until(self) -> float:
        """End of the last planned step."""
        return self._clock

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._by_id

    # ---- requests -----------------------------------------------------------------------------
    def add(self, request_id: str, prompt_tokens: int, max_tokens: int, now: float) -> None:
        """Queue a request that arrived at `now` (it can join the first step starting after)."""
        if request_id in self._by_id:
            raise RequestRejected(f"duplicate request id {request_id!r}")
        if self._jump is not None:
            self._end_jump()
        self._jump_cache = None
        if prompt_tokens < 1 or max_tokens < 1:
            raise RequestRejected("prompt_tokens and max_tokens must be at least 1")
        total = prompt_tokens + max_tokens
        if total > self.profile.max_model_len:
            raise RequestRejected(
                f"This model's maximum context length is {self.profile.max_model_len} tokens. "
                f"However, you requested {total} tokens ({prompt_tokens} in the messages, "
                f"{max_tokens} in the completion)."
            )
        if math.ceil(total / self.block_size) > self.num_kv_blocks:
            raise RequestRejected(
                f"request needs {total} tokens of KV cache; the cache holds "
                f"{self.num_kv_blocks * self.block_size}"
            )
        req = _Req(request_id, prompt_tokens, max_tokens, now)
        self._by_id[request_id] = req
        self._waiting.append(req)
        self.prompt_tokens += prompt_tokens

    def abort(self, request_id: str) -> bool:
        """Drop a request (client gone); frees its blocks. False if unknown or already done."""
        if self._jump is not None:
            self._end_jump()
        self._jump_cache = None
        req = self._by_id.pop(request_id, None)
        if req is None:
            return False
        if req in self._running:
            self._running.remove(req)
        else:
            self._waiting.remove(req)
        self._free += req.blocks
        req.blocks = 0
        return True

    # ---- live driver --------------------------------------------------------------------------
    def step(self, now: float) -> StepResult | None:
        """Plan and commit the step starting at `now`; None if nothing can run at `now`.

        Its outputs happen at `result.end`; call `step(result.end)` (or later) next.
        """
        if self._pending is not None or self._jump is not None:
            raise RuntimeError("step() and advance() cannot drive the same engine")
        if now < self._clock - 1e-9:
            raise ValueError(f"step at {now} starts before the previous step ends ({self._clock})")
        result = self._plan(now)
        if result is not None:
            self._clock = result.end
        return result

    # ---- virtual-time driver ------------------------------------------------------------------
    def advance(self, until: float) -> list[EngineEvent]:
        """Run every step that ends by `until`; return first-token/finish/preemption events.

        Protocol: call `advance(t)` before `add(..., now=t)`, with non-decreasing `t`. A step that
        starts by `until` but ends after it is planned (committed) and delivered by a later call.
        Runs of pure-decode steps in which no request can finish, join or run out of blocks are
        skipped with scalar arithmetic only (no per-request work per step).
        """
        events: list[EngineEvent] = []
        while True:
            jump = self._jump
            if jump is not None:
                if not self._run_jump(jump, until):
                    break
                self._end_jump()
            pending = self._pending
            if pending is not None:
                if pending.end > until:
                    break
                self._pending = None
                self._deliver(pending, events)
                cached, self._jump_cache = self._jump_cache, None
                if cached is not None and cached.start == self._clock:
                    self._jump = cached
                else:
                    self._jump = self._plan_jump(self._clock)
                if self._jump is not None:
                    continue
            start = self._next_start()
            if start is None or start > until:
                break
            self._pending = self._plan(start)
            if self._pending is None:
                break
            self._clock = self._pending.end
        return events

    def next_change_time(self) -> float | None:
        """Earliest time at which `advance` may report an event or move a request between the
        queues, assuming no further `add`; None when idle. Conservative: nothing observable
        happens before it, something may not happen exactly at it."""
        jump = self._jump
        if jump is None:
            pending = self._pending
            if pending is None:
                return self._next_start()
            if pending.preempted or any(o.first or o.finished for o in pending.outputs):
                return pending.end
            jump = self._jump_cache
            if jump is None or jump.start != pending.end:
                jump = self._jump_cache = self._plan_jump(pending.end)
            if jump is None:
                return pending.end
        self._extend(jump, math.inf)
        t = jump.ends[-1] if jump.ends else jump.start
        if jump.reason == "finish" and not jump.cut_hit:
            t += jump.curve(jump.context0 + len(jump.ends) * jump.batch) * self.slowdown
        return t

    # ---- internals ----------------------------------------------------------------------------
    def _next_start(self) -> float | None:
        if self._running:
            return self._clock
        if self._waiting:
            return max(self._clock, self._waiting[0].arrival)
        return None

    def _curve(self, batch: int) -> Callable[[int], float]:
        curve = self._curves.get(batch)
        if curve is None:
            curve = self._curves[batch] = self.profile.step.decode_curve(batch)
        return curve

    def _decode_seconds(self, batch: int, context: int) -> float:
        return self._curve(batch)(context) * self.slowdown

    def _deliver(self, step: StepResult, events: list[EngineEvent]) -> None:
        for rid in step.preempted:
            events.append(EngineEvent(step.start, rid, EventKind.PREEMPTED, 0))
        for out in step.outputs:
            if out.first:
                events.append(
                    EngineEvent(step.end, out.request_id, EventKind.FIRST_TOKEN, out.total)
                )
            if out.finished:
                events.append(EngineEvent(step.end, out.request_id, EventKind.FINISHED, out.total))

    def _plan(self, start: float) -> StepResult | None:
        bs = self.block_size
        budget = self.max_num_batched_tokens
        running = self._running
        scheduled: list[tuple[_Req, int]] = []
        preempted: list[str] = []
        admitted: list[str] = []
        n_dec = dctx = ptok = kvread = 0
        pairs = 0.0
        free = self._free
        i = 0
        nrun = len(running)
        while i < nrun and budget > 0:
            req = running[i]
            c = req.computed
            left = req.prompt + req.generated - c
            n = left if left < budget else budget
            need = -(-(c + n) // bs) - req.blocks
            if need > free:
                self._free = free
                while need > self._free and running[-1] is not req:
                    preempted.append(self._preempt(running.pop()))
                if need > self._free:
                    preempted.append(self._preempt(running.pop()))
                    free = self._free
                    break
                free = self._free
                nrun = len(running)
            free -= need
            req.blocks += need
            scheduled.append((req, n))
            budget -= n
            i += 1
            if left == 1:  # a decode: the last sampled token
                n_dec += 1
                dctx += c + 1
            else:
                ptok += n
                pairs += n * c + n * (n + 1) / 2
                kvread += c + n
        if not preempted:
            waiting = self._waiting
            while waiting and budget > 0 and len(running) < self.max_num_seqs:
                req = waiting[0]
                if req.arrival > start:
                    break
                c = req.computed
                left = req.prompt + req.generated - c
                n = left if left < budget else budget
                need = -(-(c + n) // bs) - req.blocks
                if need > free:
                    break
                waiting.popleft()
                if req.generated == 0 and c == 0:
                    admitted.append(req.id)
                free -= need
                req.blocks += need
                running.append(req)
                scheduled.append((req, n))
                budget -= n
                if left == 1:
                    n_dec += 1
                    dctx += c + 1
                else:
                    ptok += n
                    pairs += n * c + n * (n + 1) / 2
                    kvread += c + n
        self._free = free
        if not scheduled:
            return None
        if ptok == 0:
            duration = self._decode_seconds(n_dec, dctx)
        else:
            duration = (
                self.profile.step.seconds(
                    n_decode=n_dec,
                    decode_context=dctx,
                    prefill_tokens=ptok,
                    prefill_pairs=pairs,
                    prefill_kv_read=kvread,
                )
                * self.slowdown
            )
        outputs: list[TokenOutput] = []
        finished = False
        for req, n in scheduled:
            req.computed += n
            if req.computed == req.prompt + req.generated:
                req.generated += 1
                done = req.generated >= req.max_tokens
                outputs.append(TokenOutput(req.id, req.generated, req.generated == 1, done))
                if done:
                    finished = True
                    self._free += req.blocks
                    req.blocks = 0
                    del self._by_id[req.id]
        if finished:
            self._running = [r for r in running if r.id in self._by_id]
        self.generation_tokens += len(outputs)
        self.steps += 1
        return StepResult(
            start, start + duration, tuple(outputs), tuple(preempted), tuple(admitted), n_dec, ptok
        )

    def _preempt(self, req: _Req) -> str:
        self._free += req.blocks
        req.blocks = 0
        req.computed = 0
        self._waiting.appendleft(req)
        self.preemptions += 1
        return req.id

    def _extra_blocks(self, steps: int) -> int:
        bs = self.block_size
        return sum(-(-(r.computed + steps) // bs) - r.blocks for r in self._running)

    def _plan_jump(self, start: float) -> _Jump | None:
        """The run of uneventful pure-decode steps that can start at `start`, if any."""
        running = self._running
        batch = len(running)
        if batch == 0 or self.max_num_batched_tokens < batch:
            return None
        context = 0
        remaining = 1 << 62
        for r in running:
            if r.prompt + r.generated - r.computed != 1:
                return None
            context += r.computed + 1
            remaining = min(remaining, r.max_tokens - r.generated)
        limit = remaining - 1  # the step in which a request finishes is planned normally
        if limit <= 0:
            return None
        cut_arrival = math.inf
        if self._waiting and batch < self.max_num_seqs and self.max_num_batched_tokens > batch:
            head = self._waiting[0]
            if head.arrival <= start:
                first_chunk = min(head.prompt + head.generated, self.max_num_batched_tokens - batch)
                if -(-first_chunk // self.block_size) <= self._free - self._extra_blocks(1):
                    return None  # it joins in the next step
            else:
                cut_arrival = head.arrival
        reason = "finish"
        if self._extra_blocks(limit) > self._free:
            lo, hi = 0, limit  # largest m with extra(m) <= free
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self._extra_blocks(mid) <= self._free:
                    lo = mid
                else:
                    hi = mid - 1
            limit, reason = lo, "blocks"
            if limit == 0:
                return None
        return _Jump(
            batch=batch,
            limit=limit,
            reason=reason,
            cut_arrival=cut_arrival,
            start=start,
            context=context,
            curve=self._curve(batch),
        )

    def _extend(self, jump: _Jump, until: float) -> None:
        """Compute the jump's step end times up to the first one past `until` (or its end)."""
        ends = jump.ends
        n = len(ends)
        t = ends[-1] if n else jump.start
        if jump.cut_hit or n >= jump.limit or t > until:
            return
        batch, limit, cut = jump.batch, jump.limit, jump.cut_arrival
        context = jump.context0 + n * batch
        curve, slow = jump.curve, self.slowdown
        append = ends.append
        while n < limit and t <= until:
            t += curve(context) * slow
            append(t)
            n += 1
            context += batch
            if t >= cut:
                jump.cut_hit = True
                break

    def _run_jump(self, jump: _Jump, until: float) -> bool:
        """Run the jump's steps that end by `until`; True once the jump is over."""
        self._extend(jump, until)
        ends = jump.ends
        k = bisect_right(ends, until, jump.done)
        new = k - jump.done
        if new:
            self.generation_tokens += new * jump.batch
            self.steps += new
            self.skipped_steps += new
            self._clock = ends[k - 1]
            jump.done = k
        return k == len(ends) and (jump.cut_hit or k >= jump.limit)

    def _end_jump(self) -> None:
        """Apply a jump's steps to the requests and the KV cache (O(batch), once per jump)."""
        jump = self._jump
        if jump is None:
            return
        self._jump = None
        k = jump.done
        if k == 0:
            return
        bs = self.block_size
        used = 0
        for r in self._running:
            r.computed += k
            r.generated += k
            blocks = -(-r.computed // bs)
            used += blocks - r.blocks
            r.blocks = blocks
        self._free -= used
