"""Fault `retry-after`: the API server answers scale PATCHes with 429 and a `Retry-After`.

Injection: the recording proxy answers chosen scale PATCHes of the leader with `429 Too Many
Requests` and a `Kubernetes Status` body, as API priority and fairness sends, in three steps on
one stack (scale-down delay 2 s, a 5 s long arrival window, up to 16 replicas (room for three
steps up) and a 60 s TTFT objective so the scale-down of step 3 is not held back by the bursts' queueing):

1. `Retry-After: 30` on the PATCH of a first load step (6 streams); 1 s later a larger step (18
   more streams) needs a newer, larger decision. `retry_after_blocked_s`: from the larger step to
   the leader's next scale PATCH reaching the API server (target 1 s: a newer decision interrupts
   the wait; a controller obeying the 30 s holds it back ~29 s).
2. `Retry-After: -5` on every scale PATCH for 3 s after a third step (8 more streams).
   `retry_after_negative_tries_per_s`: the PATCHes the leader sent in that window per second
   (target 5: a negative value must not make it spin).
3. `Retry-After: inf` on the scale-down PATCH once the load stops. `retry_after_inf_wait_s`: from
   that answer to the leader's next try (target 10 s: the value is capped, not obeyed forever).

Waits are bounded at 12 s (quick) or 40 s (full): a figure at the bound was not reached.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

from sim.benches.faults.apiproxy import Injection
from sim.benches.faults.context import FaultContext
from sim.benches.faults.load import Load
from sim.benches.faults.observe import wait_for
from sim.benches.faults.report import Figure, at_most, info, measured
from sim.benches.faults.stack import MODEL, Stack, StackOptions, running_stack

NAME = "retry-after"
TEMPLATE = (
    at_most("retry_after_blocked_s", None, 1.0, "s", fault=NAME),
    at_most("retry_after_inf_wait_s", None, 10.0, "s", fault=NAME),
    at_most("retry_after_negative_tries_per_s", None, 5.0, "/s", fault=NAME),
)
NEGATIVE_WINDOW_S = 3.0
RETRY_AFTER_S = 30


def _hit(injection: Injection) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(injection.hits)

    return check


def _is_model_scale(method: str, path: str) -> bool:
    return method == "PATCH" and path.endswith(f"/deployments/{MODEL}/scale")


async def _next_patch(st: Stack, since: float, bound_s: float) -> float | None:
    """Seconds from `since` to the leader's next scale PATCH reaching the proxy (None: none)."""
    while time.monotonic() - since < bound_s:
        for w in st.proxy.writes_of(st.leader):
            if w.sent_at > since and _is_model_scale(w.method, w.path):
                return w.sent_at - since
        await asyncio.sleep(0.05)
    return None


async def _refuse(st: Stack, retry_after: str, count: int = 1) -> Injection:
    return st.proxy.inject(
        identity=st.leader,
        match=_is_model_scale,
        status=429,
        headers={"Retry-After": retry_after},
        count=count,
    )


async def _first_hit(injection: Injection, what: str, timeout_s: float = 40.0) -> float | None:
    if await wait_for(_hit(injection), timeout_s=timeout_s, every_s=0.05) is None:
        print(f"[{NAME}] {what} caused no scale PATCH to refuse", file=sys.stderr, flush=True)
        return None
    return injection.hits[0]


async def run(ctx: FaultContext) -> list[Figure]:
    bound_s = ctx.scaled(12.0, 40.0)
    options = StackOptions(
        controllers=1,
        scale_down_delay_s=2.0,
        ttft_slo_ms=60_000.0,
        max_replicas=16,
        controller_args=("--long-window-s", "5"),
    )
    async with (
        running_stack(options, ctx.work / NAME) as st,
        Load(url=st.gateway_url, model=MODEL, api_key=st.api_key, max_tokens=64) as load,
    ):
        load.steady(1.0)
        await asyncio.sleep(2.0)
        # 1. Retry-After: 30, then a newer, larger decision.
        thirty = await _refuse(st, str(RETRY_AFTER_S))
        load.burst(6, max_tokens=512)
        if await _first_hit(thirty, "the first step") is None:
            raise RuntimeError("the first load step caused no scale PATCH")
        await asyncio.sleep(1.0)
        t_step = time.monotonic()
        load.burst(18, max_tokens=512)
        blocked = await _next_patch(st, t_step, bound_s)
        # 2. Retry-After: -5 on every scale PATCH for 3 s: how often does the leader try?
        negative = await _refuse(st, "-5", count=1_000_000)
        load.burst(8, max_tokens=512)
        t_neg = await _first_hit(negative, "the third step")
        per_s: float | None = None
        if t_neg is not None:
            await asyncio.sleep(NEGATIVE_WINDOW_S)
            tries = [h for h in negative.hits if h - t_neg <= NEGATIVE_WINDOW_S]
            per_s = round((len(tries) - 1) / NEGATIVE_WINDOW_S, 1)
        negative.count = 0
        # 3. Retry-After: inf on the scale-down once the load stops: when is the next try?
        await asyncio.sleep(1.0)
        infinite = await _refuse(st, "inf")
        await load.stop_burst()
        t_inf = await _first_hit(infinite, "the scale-down")
        inf_wait = None if t_inf is None else await _next_patch(st, t_inf, bound_s)
        load.stop_steady()

    def figure(value: float | None, reached: bool) -> float | None:
        if not reached:
            return None  # the fault could not be set up: missing
        return round(value, 2) if value is not None else bound_s

    cut = [
        key
        for key, value, reached in (
            ("retry_after_blocked_s", blocked, True),
            ("retry_after_inf_wait_s", inf_wait, t_inf is not None),
        )
        if value is None and reached
    ]
    return [
        *measured(
            TEMPLATE,
            {
                "retry_after_blocked_s": figure(blocked, True),
                "retry_after_inf_wait_s": figure(inf_wait, t_inf is not None),
                "retry_after_negative_tries_per_s": per_s,
            },
            censored=cut,
        ),
        info("retry_after_header_s", RETRY_AFTER_S, "s", fault=NAME),
    ]
