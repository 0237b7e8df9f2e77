"""Fault `redis-outage`: Redis stops answering under steady streaming load, then comes back.

Injection: the private redis-server is paused with SIGSTOP for the outage (6 s quick, 25 s full)
and resumed with SIGCONT, so every client's connection hangs, times out and reconnects, and the
data stays (the backlog the gateway buffered is flushed afterwards). Load: 3 streaming requests/s
of 128 tokens (about 70 % of the one Ready replica's 4 sequences).

Measured: `redis_outage_failed_requests` — requests sent from 1 s before the outage to the end of
the observation that did not stream to `[DONE]` (load generator's record);
`redis_outage_spurious_scale_ups` — scale PATCHes the API server accepted during the outage and
the observation after it that raised the replicas above their value before the outage (the
demand did not change, so any is spurious); `redis_outage_duplicate_events_in_stream` (context) —
events the gateway wrote twice (a resent batch), found by reading the stream back.
"""

from __future__ import annotations

import asyncio
import time

from sim.benches.faults.context import FaultContext, duplicate_count, stream_events
from sim.benches.faults.load import Load
from sim.benches.faults.report import Figure, at_most, info, measured
from sim.benches.faults.stack import MODEL, StackOptions, running_stack

NAME = "redis-outage"
TEMPLATE = (
    at_most("redis_outage_failed_requests", None, 0, fault=NAME),
    at_most("redis_outage_spurious_scale_ups", None, 0, fault=NAME),
)


async def run(ctx: FaultContext) -> list[Figure]:
    outage_s = ctx.scaled(6.0, 25.0)
    observe_s = ctx.scaled(8.0, 15.0)
    async with (
        running_stack(StackOptions(controllers=1), ctx.work / NAME) as st,
        Load(url=st.gateway_url, model=MODEL, api_key=st.api_key, max_tokens=128) as load,
    ):
        load.steady(3.0)
        await asyncio.sleep(4.0)
        base, _ = await st.replicas()
        t_pause = time.monotonic()
        st.redis.pause()
        try:
            await asyncio.sleep(outage_s)
        finally:
            st.redis.resume()
        t_resume = time.monotonic()
        await asyncio.sleep(observe_s)
        t_end = time.monotonic()
        load.stop_steady()
        await load.drain(30.0)
        window = load.between(t_pause - 1.0, t_end)
        failed = sum(1 for o in window if not o.ok)
        ups = [
            w
            for w in st.proxy.writes
            if w.is_scale and w.ok and t_pause <= w.at <= t_end and (w.replicas or 0) > base
        ]
        dups = duplicate_count(await stream_events(st.redis.url, st.prefix, MODEL))
        peak = max((w.replicas or 0 for w in ups), default=base)
    return [
        *measured(
            TEMPLATE,
            {"redis_outage_failed_requests": failed, "redis_outage_spurious_scale_ups": len(ups)},
        ),
        info("redis_outage_requests", len(window), fault=NAME),
        info("redis_outage_s", round(t_resume - t_pause, 1), "s", fault=NAME),
        info("redis_outage_peak_replicas", peak, fault=NAME),
        info("redis_outage_duplicate_events_in_stream", dups, fault=NAME),
    ]
