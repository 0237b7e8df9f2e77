"""Fault `flood`: idle and slowloris connections pile up on the gateway under steady load.

Injection: 900 idle connections (connect, send nothing) and 100 slowloris connections (a request
line, then one header line a second, never the end of the head) — 9,000 and 1,000 in full mode —
opened at once against a gateway serving 4 streaming requests/s. The gateway is told its client
keep-alive / header timeout through its environment (`SURGESCALE_GATEWAY_KEEPALIVE_TIMEOUT_S`,
5 s quick, 10 s full; a gateway without such a setting ignores it).

Measured: `idle_connections_shed_pct` — the share of flood connections the gateway closed (or
refused) within that timeout plus 3 s of slack for a loaded machine, counted from the moment each
connection opened (the bench watches until the last one has had that long; target at least 99 %);
`normal_requests_failed_during_flood` — steady requests sent while the flood was open that did
not stream to `[DONE]` (target 0); the gateway's open file descriptors (`/proc/<pid>/fd`) before,
at the peak and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from sim.benches.faults.context import FaultContext
from sim.benches.faults.load import Load
from sim.benches.faults.observe import open_fds
from sim.benches.faults.report import Figure, at_least, at_most, info, measured
from sim.benches.faults.stack import MODEL, StackOptions, running_stack

NAME = "flood"
TEMPLATE = (
    at_least("idle_connections_shed_pct", None, 99.0, "%", fault=NAME),
    at_most("normal_requests_failed_during_flood", None, 0, fault=NAME),
)
SLACK_S = 3.0


@dataclass(slots=True)
class Conn:
    slow: bool
    opened: float = 0.0
    shed_at: float | None = None
    refused: bool = False


async def _hold(conn: Conn, port: int, stop: asyncio.Event, gate: asyncio.Semaphore) -> None:
    try:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        conn.refused = True
        conn.opened = conn.shed_at = time.monotonic()
        return
    conn.opened = time.monotonic()
    try:
        closed = asyncio.ensure_future(reader.read(4096))
        if conn.slow:
            writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        n = 0
        while not stop.is_set():
            done, _ = await asyncio.wait({closed}, timeout=1.0)
            if done:
                conn.shed_at = time.monotonic()
                return
            if conn.slow:
                n += 1
                writer.write(f"X-Slow-{n}: {n}\r\n".encode())
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
        closed.cancel()
    except (ConnectionError, OSError):
        conn.shed_at = time.monotonic()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def run(ctx: FaultContext) -> list[Figure]:
    n_idle = int(ctx.scaled(900, 9000))
    n_slow = int(ctx.scaled(100, 1000))
    timeout_s = ctx.scaled(5.0, 10.0)
    options = StackOptions(
        controllers=0, gateway_env={"SURGESCALE_GATEWAY_KEEPALIVE_TIMEOUT_S": f"{timeout_s:g}"}
    )
    async with (
        running_stack(options, ctx.work / NAME) as st,
        Load(url=st.gateway_url, model=MODEL, api_key=st.api_key, max_tokens=32) as load,
    ):
        assert st.gateway is not None
        assert st.gateway.pid is not None
        pid = st.gateway.pid
        port = int(st.gateway_url.rsplit(":", 1)[1])
        load.steady(4.0)
        await asyncio.sleep(2.0)
        fds_before = open_fds(pid)
        conns = [Conn(slow=i < n_slow) for i in range(n_idle + n_slow)]
        stop = asyncio.Event()
        gate = asyncio.Semaphore(200)
        t0 = time.monotonic()
        tasks = [asyncio.create_task(_hold(c, port, stop, gate)) for c in conns]
        peak = fds_before
        # Watch until the last connection opened has had its timeout, the slack and 1 s more
        # (bounded: connections still opening after 30 s count as not shed).
        cap = t0 + 30.0 + timeout_s + SLACK_S
        while True:
            peak = max(peak, open_fds(pid))
            now = time.monotonic()
            opening = any(c.opened == 0.0 for c in conns)
            last = max((c.opened for c in conns), default=t0)
            if now >= cap or (not opening and now >= last + timeout_s + SLACK_S + 1.0):
                break
            await asyncio.sleep(0.25)
        t_end = time.monotonic()
        stop.set()
        await asyncio.wait(tasks, timeout=10.0)
        for task in tasks:
            task.cancel()
        load.stop_steady()
        await load.drain(20.0)
        await asyncio.sleep(1.0)
        fds_after = open_fds(pid)
        failed = sum(1 for o in load.between(t0, t_end) if not o.ok)
        normal = len(load.between(t0, t_end))
    shed = sum(
        1 for c in conns if c.shed_at is not None and c.shed_at - c.opened <= timeout_s + SLACK_S
    )
    pct = 100.0 * shed / len(conns) if conns else 0.0
    return [
        *measured(
            TEMPLATE,
            {
                "idle_connections_shed_pct": round(pct, 2),
                "normal_requests_failed_during_flood": failed,
            },
        ),
        info("flood_connections", len(conns), fault=NAME),
        info("flood_refused_at_connect", sum(1 for c in conns if c.refused), fault=NAME),
        info("flood_timeout_s", timeout_s, "s", fault=NAME),
        info("flood_normal_requests", normal, fault=NAME),
        info("gateway_fds_before", fds_before, fault=NAME),
        info("gateway_fds_peak", peak, fault=NAME),
        info("gateway_fds_after", fds_after, fault=NAME),
    ]
