"""Replay the demo's request schedule against the gateway, in the demo's own process.

Each scheduled request is sent at its time (relative to `t0` on the event loop's clock) as a
streaming `/v1/completions` call with a prompt of about the scheduled size and `max_tokens` =
the scheduled output; the client-side TTFT is the time to the first content chunk. Every request
ends with a recorded status: "ok", the HTTP status of a refusal, "error" or "timeout" — nothing is
dropped. Running in-process keeps `t0` exact for the reaction-time figures (a subprocess would
add its start-up time to every one of them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import orjson

from sim.demo.record import RequestResult
from sim.demo.scenario import Arrival

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LoadProgress:
    """Counters the live view reads while the load runs."""

    scheduled: int = 0
    sent: int = 0
    finished: int = 0
    waiting: int = 0
    """Sent and without a first token yet (wherever they wait: gateway or engine queue)."""
    results: list[RequestResult] = field(default_factory=list)


def _prompt(tokens: int) -> str:
    return "lorem ipsum dolor sit amet " * (tokens * 4 // 27) + "x" * (tokens * 4 % 27)


async def _one(
    session: aiohttp.ClientSession,
    *,
    url: str,
    model: str,
    arrival: Arrival,
    sent_at: float,
    now: Callable[[], float],
    timeout_s: float,
    progress: LoadProgress,
) -> RequestResult:
    waiting = [True]

    def first_token() -> None:
        if waiting[0]:
            waiting[0] = False
            progress.waiting -= 1

    progress.waiting += 1
    try:
        return await _send(
            session,
            url=url,
            model=model,
            arrival=arrival,
            sent_at=sent_at,
            now=now,
            timeout_s=timeout_s,
            first_token=first_token,
        )
    finally:
        first_token()


async def _send(
    session: aiohttp.ClientSession,
    *,
    url: str,
    model: str,
    arrival: Arrival,
    sent_at: float,
    now: Callable[[], float],
    timeout_s: float,
    first_token: Callable[[], None],
) -> RequestResult:
    body = orjson.dumps(
        {
            "model": model,
            "prompt": _prompt(arrival.prompt_tokens),
            "max_tokens": arrival.output_tokens,
            "stream": True,
        }
    )
    start = now()
    ttft: float | None = None
    tokens = 0
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                if resp.status != 200:
                    await resp.read()
                    return RequestResult(
                        sent_at=sent_at, status=str(resp.status), e2e_s=now() - start
                    )
                async for raw in resp.content:
                    if not raw.startswith(b"data:"):
                        continue
                    payload = raw[5:].strip()
                    if payload == b"[DONE]":
                        break
                    try:
                        chunk = orjson.loads(payload)
                    except orjson.JSONDecodeError:
                        continue
                    if "error" in chunk:
                        return RequestResult(
                            sent_at=sent_at, status="error", ttft_s=ttft, e2e_s=now() - start
                        )
                    if chunk.get("choices"):
                        if ttft is None:
                            ttft = now() - start
                            first_token()
                        tokens += 1
    except TimeoutError:
        return RequestResult(sent_at=sent_at, status="timeout", ttft_s=ttft, e2e_s=now() - start)
    except (aiohttp.ClientError, OSError) as exc:
        log.debug("request failed: %s", exc)
        return RequestResult(sent_at=sent_at, status="error", ttft_s=ttft, e2e_s=now() - start)
    status = "ok" if ttft is not None else "error"
    return RequestResult(
        sent_at=sent_at, status=status, ttft_s=ttft, e2e_s=now() - start, output_tokens=tokens
    )


async def replay(
    schedule: Sequence[Arrival],
    *,
    base_url: str,
    model: str,
    t0: float,
    progress: LoadProgress,
    timeout_s: float = 300.0,
) -> list[RequestResult]:
    """Send every scheduled request at `t0 + at_s`; return when all have a terminal status."""
    loop = asyncio.get_running_loop()
    now = loop.time
    url = base_url.rstrip("/") + "/v1/completions"
    progress.scheduled = len(schedule)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    tasks: list[asyncio.Task[RequestResult]] = []

    def done(task: asyncio.Task[RequestResult]) -> None:
        progress.finished += 1
        if not task.cancelled() and task.exception() is None:
            progress.results.append(task.result())

    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as session:
        try:
            for arrival in schedule:
                delay = t0 + arrival.at_s - now()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_at = now() - t0
                task = asyncio.create_task(
                    _one(
                        session,
                        url=url,
                        model=model,
                        arrival=arrival,
                        sent_at=sent_at,
                        now=now,
                        timeout_s=timeout_s,
                        progress=progress,
                    )
                )
                task.add_done_callback(done)
                tasks.append(task)
                progress.sent += 1
            results = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
    return sorted(results, key=lambda r: r.sent_at)
