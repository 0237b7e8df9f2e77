"""Fault `scale-down`: replicas go away while streams are still running on them.

Injection: none from outside; the controller's own scale-down is the event. 15 long streams
(600 tokens each) run back to back until the model has scaled up to at least 4 Ready
replicas; then 12 of them finish their current stream and stop while 3 keep going, so demand
falls to one replica's worth and the controller (scale-down delay 2 s, one step a second, a
5 s long arrival window, a TTFT objective of 60 s so the burst's queueing does not hold the
replicas) removes
replicas while streams are in flight on them.

Measured: `scale_down_streams_lost` — requests sent since the load started that did not stream
to `[DONE]` (the load generator's record; a stream cut by a deleted pod or refused by one that is
terminating counts), target 0. Context: the replicas before and after, how many scale-down
PATCHes the API server accepted after the load fell, and how many scale-ups followed them (a
fleet that goes down and up again while demand is flat is thrashing). If no scale-down happened
within the bound the figure is missing (the fault was not exercised).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

from sim.benches.faults.context import FaultContext
from sim.benches.faults.load import Load
from sim.benches.faults.observe import wait_for
from sim.benches.faults.report import Figure, at_most, info, measured
from sim.benches.faults.stack import MODEL, Stack, StackOptions, running_stack

NAME = "scale-down"
TEMPLATE = (at_most("scale_down_streams_lost", None, 0, fault=NAME),)


def _ready_at_least(st: Stack, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await st.replicas())[1] >= n

    return check


async def run(ctx: FaultContext) -> list[Figure]:
    options = StackOptions(
        controllers=1,
        scale_down_delay_s=2.0,
        scale_down_period_s=1.0,
        ttft_slo_ms=60_000.0,
        controller_args=("--long-window-s", "5"),
    )
    bound_s = ctx.scaled(30.0, 60.0)
    async with (
        running_stack(options, ctx.work / NAME) as st,
        Load(url=st.gateway_url, model=MODEL, api_key=st.api_key, max_tokens=600) as load,
    ):
        t0 = time.monotonic()
        load.burst(12, tag="many")
        load.burst(3, tag="few")
        await wait_for(_ready_at_least(st, 4), timeout_s=40.0, every_s=0.2)
        peak_ready = (await st.replicas())[1]
        await asyncio.sleep(3.0)
        t_down = time.monotonic()
        load.release_burst("many")
        while time.monotonic() - t_down < bound_s:
            spec, _ = await st.replicas()
            if spec <= 1:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(3.0)
        load.release_burst("few")
        await load.stop_burst(wait_s=20.0)
        final, _ = await st.replicas()
        writes = [
            w
            for w in st.proxy.writes
            if w.is_scale and w.ok and w.path.endswith(f"/{MODEL}/scale") and w.replicas is not None
        ]
        sent = [o for o in load.outcomes if o.sent >= t0]
        lost = sum(1 for o in sent if not o.ok)
    # A scale-down is an accepted PATCH below the value written before it, after the load fell.
    downs = ups = 0
    for before, after in itertools.pairwise(writes):
        if after.at >= t_down and after.replicas is not None and before.replicas is not None:
            downs += after.replicas < before.replicas
            ups += after.replicas > before.replicas
    return [
        *measured(TEMPLATE, {"scale_down_streams_lost": lost if downs else None}),
        info("scale_down_streams", len(sent), fault=NAME),
        info("scale_down_ready_before", peak_ready, fault=NAME),
        info("scale_down_replicas_after", final, fault=NAME),
        info("scale_down_patches", downs, fault=NAME),
        info("scale_down_then_up_patches", ups, fault=NAME),
    ]
