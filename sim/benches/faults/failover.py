"""Fault `failover`: the leader dies, or freezes, while demand rises.

Two stacks, each with a leader and a standby controller behind the recording proxy:

1. **Leader killed.** Under steady load the leader gets SIGKILL and, at the same moment, 24
   streams open back to back (demand for several replicas). `failover_takeover_s`: from the kill
   to the standby's first Lease write naming itself that the API server accepted.
   `failover_to_target_s`: from that takeover to the new leader's first accepted scale PATCH that
   reaches the highest replica count it writes within the observation window after takeover
   (going straight to target: one PATCH; climbing one replica per second: several seconds).
2. **Leader paused.** The leader gets SIGSTOP (a long GC pause, a frozen VM) while 16 streams
   open; once the standby holds the Lease and 2 s more have passed, the old leader gets SIGCONT.
   `writes_after_lease_loss`: scale and status writes of the old leader that the API server
   accepted after the standby's takeover (each is a write by a controller that no longer held
   the Lease; target 0).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from sim.benches.faults.apiproxy import Write
from sim.benches.faults.context import FaultContext
from sim.benches.faults.load import Load
from sim.benches.faults.report import Figure, at_most, info, measured
from sim.benches.faults.stack import MODEL, Stack, StackOptions, running_stack

NAME = "failover"
TEMPLATE = (
    at_most("failover_takeover_s", None, 4.0, "s", fault=NAME),
    at_most("failover_to_target_s", None, 1.0, "s", fault=NAME),
    at_most("writes_after_lease_loss", None, 0, fault=NAME),
)


async def _takeover(st: Stack, identity: str, since: float, bound_s: float) -> Write | None:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        for w in st.proxy.writes_of(identity):
            if w.at >= since and w.is_lease and w.ok and w.lease_holder == identity:
                return w
        await asyncio.sleep(0.05)
    return None


def _signal(st: Stack, identity: str, sig: signal.Signals) -> None:
    pid = st.controllers[identity].child.pid
    if pid is not None:
        os.killpg(pid, sig)


async def _killed(ctx: FaultContext) -> dict[str, float | None]:
    window_s = ctx.scaled(6.0, 10.0)
    async with (
        running_stack(StackOptions(controllers=2), ctx.work / f"{NAME}-kill") as st,
        Load(url=st.gateway_url, model=MODEL, api_key=st.api_key, max_tokens=128) as load,
    ):
        load.steady(2.0)
        await asyncio.sleep(3.0)
        t0 = time.monotonic()
        _signal(st, st.leader, signal.SIGKILL)
        load.burst(24, max_tokens=256)
        took = await _takeover(st, st.standby, t0, 20.0)
        out: dict[str, float | None] = {"failover_takeover_s": None, "failover_to_target_s": None}
        if took is None:
            return out
        out["failover_takeover_s"] = round(took.at - t0, 2)
        await asyncio.sleep(window_s)
        scales = [
            w
            for w in st.proxy.writes_of(st.standby)
            if w.is_scale
            and w.ok
            and took.at <= w.at <= took.at + window_s
            and w.path.endswith(f"/deployments/{MODEL}/scale")
        ]
        await load.stop_burst()
        load.stop_steady()
        if scales:
            target = max(w.replicas or 0 for w in scales)
            first = next(w for w in scales if (w.replicas or 0) >= target)
            out["failover_to_target_s"] = round(max(0.0, first.at - took.at), 2)
            out["failover_target_replicas"] = target
            out["failover_scale_writes"] = len(scales)
        else:  # no scale-up within the window: the figure is the window, not reached
            out["failover_to_target_s"] = window_s
            out["failover_to_target_s_not_reached"] = 1
        return out


async def _paused(ctx: FaultContext) -> dict[str, float | None]:
    async with (
        running_stack(StackOptions(controllers=2), ctx.work / f"{NAME}-pause") as st,
        Load(url=st.gateway_url, model=MODEL, api_key=st.api_key, max_tokens=128) as load,
    ):
        load.steady(2.0)
        await asyncio.sleep(3.0)
        t0 = time.monotonic()
        _signal(st, st.leader, signal.SIGSTOP)
        try:
            load.burst(16, max_tokens=256)
            took = await _takeover(st, st.standby, t0, 20.0)
            await asyncio.sleep(2.0)
        finally:
            _signal(st, st.leader, signal.SIGCONT)
        t_resume = time.monotonic()
        await asyncio.sleep(ctx.scaled(6.0, 10.0))
        await load.stop_burst()
        load.stop_steady()
        if took is None:
            return {"writes_after_lease_loss": None}
        late = [
            w
            for w in st.proxy.writes_of(st.leader)
            if w.at >= took.at and (w.is_scale or w.is_status)
        ]
        return {
            "writes_after_lease_loss": sum(1 for w in late if w.ok),
            "writes_attempted_after_lease_loss": len(late),
            "failover_pause_s": round(t_resume - t0, 1),
        }


async def run(ctx: FaultContext) -> list[Figure]:
    values: dict[str, float | None] = {}
    for part in (_killed, _paused):  # one part failing to start leaves the other's figures
        try:
            values.update(await part(ctx))
        except Exception as exc:
            where = part.__name__.strip("_")
            print(f"[{NAME}] {where} part did not complete: {exc}", file=sys.stderr, flush=True)
    main = {f.key for f in TEMPLATE}
    cut = [k for k in main if values.pop(f"{k}_not_reached", None)]
    return [
        *measured(TEMPLATE, values, censored=cut),
        *(info(k, v, fault=NAME) for k, v in values.items() if k not in main),
    ]
