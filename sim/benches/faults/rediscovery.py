"""Fault `rediscovery`: Redis restarts empty (a lost volume) under steady load.

Injection: the private redis-server is stopped and started again on the same port with no data:
the stream registry, the streams and the consumer groups are gone, while the gateway keeps
writing. Right after, a second controller (`late`, a fresh process, as after a rollout) starts.

Measured (controller `/metrics`, `surgescale_controller_events_total`): how long until the
running leader consumes events again (from Redis answering again), and how long until the fresh
controller consumes any (from its health endpoint answering). `empty_redis_rediscovery_s` is the
larger of the two; if either never happens within the bound (15 s quick, 30 s full) the figure is
the bound, marked as not reached.
"""

from __future__ import annotations

import asyncio
import time

from sim.benches.faults.context import FaultContext
from sim.benches.faults.load import Load
from sim.benches.faults.observe import metric
from sim.benches.faults.report import Figure, at_most, info, measured
from sim.benches.faults.stack import MODEL, StackOptions, running_stack

NAME = "rediscovery"
TEMPLATE = (at_most("empty_redis_rediscovery_s", None, 5.0, "s", fault=NAME),)
EVENTS = "surgescale_controller_events_total"


async def _until_more(url: str, than: float, bound_s: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < bound_s:
        value = await metric(url, EVENTS)
        if value is not None and value > than:
            return time.monotonic() - start
        await asyncio.sleep(0.1)
    return None


async def run(ctx: FaultContext) -> list[Figure]:
    bound_s = ctx.scaled(15.0, 30.0)
    async with (
        running_stack(StackOptions(controllers=1), ctx.work / NAME) as st,
        Load(url=st.gateway_url, model=MODEL, api_key=st.api_key, max_tokens=32) as load,
    ):
        load.steady(3.0)
        await asyncio.sleep(3.0)
        leader_url = st.controllers[st.leader].metrics_url
        await st.redis.restart_empty()
        before = await metric(leader_url, EVENTS) or 0.0
        leader_task = asyncio.create_task(_until_more(leader_url, before, bound_s))
        late = await st.start_controller("late")
        late_s = await _until_more(late.metrics_url, 0.0, bound_s)
        leader_s = await leader_task
        load.stop_steady()
        await load.drain(10.0)
    reached = leader_s is not None and late_s is not None
    worst = max(leader_s or bound_s, late_s or bound_s)
    return [
        *measured(
            TEMPLATE,
            {"empty_redis_rediscovery_s": round(worst, 2)},
            censored=() if reached else (TEMPLATE[0].key,),
        ),
        info("empty_redis_running_controller_s", _rounded(leader_s), "s", fault=NAME),
        info("empty_redis_new_controller_s", _rounded(late_s), "s", fault=NAME),
    ]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
