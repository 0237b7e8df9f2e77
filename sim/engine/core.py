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
`advance(until)` for virtual time, which skips runs of steps in which the batch cannot change
(`sim.engine.decoderun`). Value types live in `sim.engine.types`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable

from sim.engine.decoderun import DecodeRun, apply_run, extend, plan_run, projected_change
from sim.engine.profiles import Profile
from sim.engine.types import (
    EngineEvent,
    EventKind,
    Req,
    RequestRejected,
    StepResult,
    TokenOutput,
)

__all__ = [
    "Engine",
    "EngineEvent",
    "EventKind",
    "RequestRejected",
    "StepResult",
    "TokenOutput",
]


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
        self._running: list[Req] = []
        self._waiting: deque[Req] = deque()
        self._by_id: dict[str, Req] = {}
        self._clock = 0.0  # end of the last planned step (no step may start before it)
        self._pending: StepResult | None = None  # advance(): planned, not yet delivered
        self._jump: DecodeRun | None = None  # advance(): skipped steps not yet applied to requests
        self._jump_cache: DecodeRun | None = None  # the run planned to follow the pending step
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
        if -(-total // self.block_size) > self.num_kv_blocks:
            raise RequestRejected(
                f"request needs {total} tokens of KV cache; the cache holds "
                f"{self.num_kv_blocks * self.block_size}"
            )
        req = Req(request_id, prompt_tokens, max_tokens, now)
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
            self._pending = self._plan(start, every_token=False)
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
        return projected_change(jump, self.slowdown)

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

    def _plan(self, start: float, *, every_token: bool = True) -> StepResult | None:
        """Plan and commit the step starting at `start`. Its `outputs` hold every sampled token
        (the live pod streams them) or, with `every_token=False` (virtual time, which reports
        only first tokens and finishes), only the first and last tokens of requests."""
        bs = self.block_size
        budget = self.max_num_batched_tokens
        running = self._running
        scheduled: list[tuple[Req, int]] = []
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
        sampled = 0
        for req, n in scheduled:
            req.computed += n
            if req.computed == req.prompt + req.generated:
                req.generated += 1
                sampled += 1
                done = req.generated >= req.max_tokens
                if every_token or done or req.generated == 1:
                    outputs.append(TokenOutput(req.id, req.generated, req.generated == 1, done))
                if done:
                    finished = True
                    self._free += req.blocks
                    req.blocks = 0
                    del self._by_id[req.id]
        if finished:
            self._running = [r for r in running if r.id in self._by_id]
        self.generation_tokens += sampled
        self.steps += 1
        return StepResult(
            start, start + duration, tuple(outputs), tuple(preempted), tuple(admitted), n_dec, ptok
        )

    def _preempt(self, req: Req) -> str:
        self._free += req.blocks
        req.blocks = 0
        req.computed = 0
        self._waiting.appendleft(req)
        self.preemptions += 1
        return req.id

    def _plan_jump(self, start: float) -> DecodeRun | None:
        return plan_run(
            start=start,
            running=self._running,
            waiting=self._waiting,
            free_blocks=self._free,
            block_size=self.block_size,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            curve=self._curve,
        )

    def _run_jump(self, jump: DecodeRun, until: float) -> bool:
        """Run the jump's steps that end by `until`; True once the jump is over."""
        extend(jump, until, self.slowdown)
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
        self._free -= apply_run(jump, self._running, self.block_size)
