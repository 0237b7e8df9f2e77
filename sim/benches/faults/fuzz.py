"""Fault `fuzz`: hostile HTTP at the gateway (cases from `fuzzcases`), sent as raw bytes.

Each case goes on a fresh connection (`Connection: close`), so a malformed one cannot poison the
next; the answer's status line, headers and (for errors) body are read within 5 s. The gateway
runs with an API key, in front of the simulated pods (no controller needed).

Measured: `fuzz_cases` (at least 100), `fuzz_5xx` (answers with a 5xx status), and
`fuzz_non_openai_errors` (4xx/5xx answers whose body is not `{"error": {"message", "type"}}`),
all with target 0; `fuzz_bounds_passed` — requests asking for more than the gateway may pass on
(`n`, `best_of` or `max_tokens` in the millions and beyond) that the gateway admitted and sent
on to a pod (its `requests_admitted` counter moved), got a 200, or were still being served after
5 s (target 0); these are sent one at a time after the others. Context: no-answer and framing-layer breakdowns, and whether the gateway still
serves a normal request afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from sim.benches.faults.context import FaultContext
from sim.benches.faults.fuzzcases import Case, Layer, cases, is_openai_error
from sim.benches.faults.load import Load
from sim.benches.faults.observe import metric
from sim.benches.faults.report import Figure, at_least, at_most, info, measured
from sim.benches.faults.stack import MODEL, StackOptions, running_stack

NAME = "fuzz"
TEMPLATE = (
    at_least("fuzz_cases", None, 100, fault=NAME),
    at_most("fuzz_5xx", None, 0, fault=NAME),
    at_most("fuzz_non_openai_errors", None, 0, fault=NAME),
    at_most("fuzz_bounds_passed", None, 0, fault=NAME),
)
CASE_TIMEOUT_S = 5.0
ADMITTED = "surgescale_gateway_requests_admitted_total"


async def send(host: str, port: int, raw: bytes) -> tuple[int | None, bytes]:
    """Send raw bytes; (status or None if no answer in time, error body or b'')."""
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        async with asyncio.timeout(CASE_TIMEOUT_S):
            with contextlib.suppress(ConnectionError):
                writer.write(raw)
                await writer.drain()
            line = await reader.readline()
            if not line:
                return None, b""
            parts = line.split(b" ", 2)
            status = int(parts[1])
            headers: dict[bytes, bytes] = {}
            while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                k, _, v = h.partition(b":")
                headers[k.strip().lower()] = v.strip()
            if status < 400:
                return status, b""
            if b"content-length" in headers:
                body = await reader.readexactly(int(headers[b"content-length"]))
            elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                body = b""
                while size := int((await reader.readline()).strip() or b"0", 16):
                    body += await reader.readexactly(size)
                    await reader.readline()
            else:
                body = await reader.read(1 << 20)
            return status, body
    except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
        return None, b""
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def run(ctx: FaultContext) -> list[Figure]:
    count = int(ctx.scaled(120, 400))
    async with running_stack(StackOptions(controllers=0), ctx.work / NAME) as st:
        port = int(st.gateway_url.rsplit(":", 1)[1])
        batch: list[Case] = cases(model=MODEL, api_key=st.api_key, count=count, seed=ctx.seed)
        sem = asyncio.Semaphore(8)

        async def one(case: Case) -> tuple[Case, int | None, bytes]:
            async with sem:
                status, body = await send("127.0.0.1", port, case.raw)
                return case, status, body

        results = await asyncio.gather(*(one(c) for c in batch if not c.bound))
        # Bound cases one at a time: the gateway's admitted counter says whether each went on
        # to a pod, whatever the pod then answered.
        admitted_url = f"{st.gateway_url}/metrics"
        passed_on: list[str] = []
        for case in (c for c in batch if c.bound):
            before = await metric(admitted_url, ADMITTED)
            results.append(await one(case))
            await asyncio.sleep(0.2)
            after_n = await metric(admitted_url, ADMITTED)
            if before is not None and after_n is not None and after_n > before:
                passed_on.append(case.name)
        async with Load(url=st.gateway_url, model=MODEL, api_key=st.api_key) as load:
            after = await load.one(tag="after")
    five = [c.name for c, s, _ in results if s is not None and s >= 500]
    not_openai = [c for c, s, b in results if s is not None and s >= 400 and not is_openai_error(b)]
    bounds = sorted(
        {c.name for c, s, _ in results if c.bound and (s is None or s < 400)} | set(passed_on)
    )
    silent = [c.name for c, s, _ in results if s is None and not c.bound]
    for label, names in (
        ("5xx", five),
        ("non-OpenAI errors", [c.name for c in not_openai]),
        ("bounds passed", bounds),
        ("no answer", silent),
    ):
        if names:
            print(f"[fuzz] {label}: {', '.join(names[:12])}", file=sys.stderr, flush=True)
    return [
        *measured(
            TEMPLATE,
            {
                "fuzz_cases": len(results),
                "fuzz_5xx": len(five),
                "fuzz_non_openai_errors": len(not_openai),
                "fuzz_bounds_passed": len(bounds),
            },
        ),
        info(
            "fuzz_non_openai_http_layer",
            sum(1 for c in not_openai if c.layer is Layer.HTTP),
            fault=NAME,
        ),
        info("fuzz_no_answer", len(silent), fault=NAME),
        info("fuzz_gateway_serves_after", 1 if after.ok else 0, fault=NAME),
    ]
