"""Fault `retry-after`: the API server answers a scale PATCH with 429 and `Retry-After: 30`.

Injection: the recording proxy answers the leader's next scale PATCH with `429 Too Many
Requests`, `Retry-After: 30` (a Kubernetes `Status` body, as API priority and fairness sends).
Load: a first step (6 streams) that needs a second replica, whose PATCH gets the 429; 1 s later a
larger step (18 more streams) that needs a newer, larger decision.

Measured: `retry_after_blocked_s` — from the larger step to the leader's next scale PATCH reaching
the API server (through the proxy). A controller that lets a newer decision interrupt the wait
(and caps `Retry-After`) sends it within its reaction time; one that obeys the 30 s blindly holds
it back for ~29 s. Bounded at 12 s (quick) or 40 s (full): a figure at the bound was not reached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from sim.benches.faults.apiproxy import Injection
from sim.benches.faults.context import FaultContext
from sim.benches.faults.load import Load
from sim.benches.faults.observe import wait_for
from sim.benches.faults.report import Figure, at_most, info, measured
from sim.benches.faults.stack import MODEL, StackOptions, running_stack

NAME = "retry-after"
TEMPLATE = (at_most("retry_after_blocked_s", None, 1.0, "s", fault=NAME),)
RETRY_AFTER_S = 30


def _hit(injection: Injection) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(injection.hits)

    return check


def _is_model_scale(method: str, path: str) -> bool:
    return method == "PATCH" and path.endswith(f"/deployments/{MODEL}/scale")


async def run(ctx: FaultContext) -> list[Figure]:
    bound_s = ctx.scaled(12.0, 40.0)
    async with (
        running_stack(StackOptions(controllers=1), ctx.work / NAME) as st,
        Load(url=st.gateway_url, model=MODEL, api_key=st.api_key, max_tokens=64) as load,
    ):
        load.steady(1.0)
        await asyncio.sleep(2.0)
        injection = st.proxy.inject(
            identity=st.leader,
            match=_is_model_scale,
            status=429,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
        load.burst(6, max_tokens=512)
        refused = await wait_for(_hit(injection), timeout_s=15.0, every_s=0.05)
        if refused is None:
            raise RuntimeError("the first step caused no scale PATCH to refuse")
        await asyncio.sleep(1.0)
        t_step = time.monotonic()
        load.burst(18, max_tokens=512)
        blocked: float | None = None
        while time.monotonic() - t_step < bound_s:
            later = [
                w
                for w in st.proxy.writes_of(st.leader)
                if w.sent_at >= t_step and _is_model_scale(w.method, w.path)
            ]
            if later:
                blocked = later[0].sent_at - t_step
                break
            await asyncio.sleep(0.05)
        await load.stop_burst()
        load.stop_steady()
    value = round(blocked, 2) if blocked is not None else bound_s
    return [
        *measured(
            TEMPLATE,
            {"retry_after_blocked_s": value},
            censored=() if blocked is not None else (TEMPLATE[0].key,),
        ),
        info("retry_after_header_s", RETRY_AFTER_S, "s", fault=NAME),
    ]
