"""Replay requests against an OpenAI-compatible endpoint on their schedule (library API).

`run_load(requests, target_url=..., model=...)` sends each `TraceRequest` at `at / time_scale`
seconds after the start, streaming, with at most `concurrency` in flight (a full house delays the
next sends; the lateness is recorded), and returns a `LoadReport` with one `RequestResult` per
request sent. Every request ends with a terminal status ("ok", "http_<code>", "timeout",
"connection_error", "protocol_error", "cancelled"), also on errors and at the end of the run.
The command line (`sim.load.cli`) and the demo both call this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from sim.load.prompts import request_body
from sim.load.records import OK, RequestResult, TraceRequest
from sim.load.summary import CsvRecorder, summarize

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadReport:
    results: tuple[RequestResult, ...]  # in schedule order
    figures: dict[str, Any]
    wall_s: float
    beyond_duration: int  # requests of the input past the duration cap (not sent)


@dataclass(slots=True)
class _Outcome:
    status: str = "cancelled"
    http_status: int | None = None
    first: float | None = None
    last: float | None = None
    tokens: int = 0
    usage_tokens: int | None = None
    error: str = ""


async def _send(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    out: _Outcome,
    clock: Callable[[], float],
) -> None:
    async with session.post(url, json=body) as resp:
        out.http_status = resp.status
        if resp.status != 200:
            text = await resp.text()
            out.status = f"http_{resp.status}"
            try:
                out.error = str(orjson.loads(text)["error"]["message"])[:200]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                out.error = text[:200]
            return
        done = False
        async for line in resp.content:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                break
            obj = orjson.loads(payload)
            if "error" in obj:
                out.status, out.error = "http_500", str(obj["error"])[:200]
                return
            for choice in obj.get("choices") or ():
                piece = (
                    (choice.get("delta") or {}).get("content")
                    if "delta" in choice
                    else choice.get("text")
                )
                if piece:
                    now = clock()
                    if out.first is None:
                        out.first = now
                    out.last = now
                    out.tokens += 1
            usage = obj.get("usage")
            if usage:
                out.usage_tokens = int(usage.get("completion_tokens", 0))
        if done:
            out.status = OK
        else:
            out.status, out.error = "protocol_error", "stream ended without [DONE]"


async def run_load(
    requests: Iterable[TraceRequest],
    *,
    target_url: str,
    model: str,
    time_scale: float = 1.0,
    concurrency: int = 512,
    duration: float | None = None,
    api: str = "chat",
    request_timeout: float = 600.0,
    drain_timeout: float = 60.0,
    ttft_slo_s: float = 1.0,
    recorder: CsvRecorder | None = None,
    on_result: Callable[[RequestResult], None] | None = None,
    progress: bool = False,
    session: aiohttp.ClientSession | None = None,
) -> LoadReport:
    """Replay `requests`; see the module docstring. `duration` caps the send window (wall
    seconds after scaling); in-flight requests then get `drain_timeout` more seconds."""
    if time_scale <= 0:
        raise ValueError("time_scale must be > 0")
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
    url = target_url.rstrip("/") + path
    ordered = sorted(requests, key=lambda r: r.arrival_s)
    plan = [(r.arrival_s / time_scale, r) for r in ordered]
    beyond = 0
    if duration is not None:
        kept = [p for p in plan if p[0] <= duration]
        beyond = len(plan) - len(kept)
        plan = kept
    loop = asyncio.get_running_loop()
    clock = loop.time
    own_session = session is None
    http = session or aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=False),
        timeout=aiohttp.ClientTimeout(total=None),
    )
    results: list[RequestResult | None] = [None] * len(plan)
    sem = asyncio.Semaphore(concurrency)
    bar = _Progress.start(len(plan)) if progress else None
    t0 = clock()

    def finish(i: int, r: TraceRequest, due: float, sent: float | None, o: _Outcome) -> None:
        ttft = (o.first - t0 - sent) if (o.first is not None and sent is not None) else None
        e2e = (o.last - t0 - sent) if (o.last is not None and sent is not None) else None
        n = o.usage_tokens if o.usage_tokens is not None else o.tokens
        tpot = (o.last - o.first) / (o.tokens - 1) if o.tokens > 1 and o.first and o.last else None
        res = RequestResult(
            index=i,
            request_id=r.request_id or str(i),
            scheduled_s=round(due, 6),
            sent_s=None if sent is None else round(sent, 6),
            status=o.status,
            http_status=o.http_status,
            ttft_s=ttft,
            tpot_s=tpot,
            e2e_s=e2e if o.status == OK else None,
            prompt_tokens=r.prompt_tokens,
            output_tokens_requested=r.output_tokens,
            output_tokens=n,
            error=o.error,
        )
        results[i] = res
        if recorder is not None:
            recorder.write(res)
        if on_result is not None:
            on_result(res)
        if bar is not None:
            bar.advance(res)

    async def one(i: int, r: TraceRequest, due: float) -> None:
        sent = clock() - t0
        out = _Outcome()
        body = request_body(
            api=api,
            model=model,
            input_tokens=r.prompt_tokens,
            output_tokens=r.output_tokens,
            salt=i,
        )
        try:
            async with asyncio.timeout(request_timeout):
                await _send(http, url, body, out, clock)
        except TimeoutError:
            out.status, out.error = "timeout", f"no completion within {request_timeout} s"
        except (aiohttp.ClientError, ConnectionError) as exc:
            out.status, out.error = "connection_error", repr(exc)[:200]
        except (orjson.JSONDecodeError, ValueError) as exc:
            out.status, out.error = "protocol_error", repr(exc)[:200]
        except asyncio.CancelledError:
            out.status, out.error = "cancelled", "the run ended first"
            raise
        finally:
            sem.release()
            finish(i, r, due, sent, out)

    tasks: set[asyncio.Task[None]] = set()
    try:
        for i, (due, r) in enumerate(plan):
            delay = t0 + due - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            await sem.acquire()
            task = loop.create_task(one(i, r, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            end = None if duration is None else t0 + duration + drain_timeout
            timeout = None if end is None else max(end - clock(), 0.0)
            await asyncio.wait(set(tasks), timeout=timeout)
    finally:
        for task in list(tasks):
            task.cancel()
        for task in list(tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for i, (due, r) in enumerate(plan):  # never started (interrupted run)
            if results[i] is None:
                finish(i, r, due, None, _Outcome(status="cancelled", error="never sent"))
        if own_session:
            await http.close()
        if bar is not None:
            bar.close()
    wall = clock() - t0
    done = tuple(r for r in results if r is not None)
    figures = summarize(done, wall_s=wall, ttft_slo_s=ttft_slo_s)
    figures["beyond_duration"] = beyond
    return LoadReport(results=done, figures=figures, wall_s=wall, beyond_duration=beyond)


class _Progress:
    """A rich progress bar on stderr (only used for long runs / when asked)."""

    @classmethod
    def start(cls, total: int) -> _Progress | None:
        """The bar, or None with a warning where rich (the `sim` extra) is not installed, as in
        the container image: the load runs the same without it."""
        try:
            return cls(total)
        except ImportError as exc:
            log.warning("no progress bar (%s): pip install 'surgescale[sim]'", exc)
            return None

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("load"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[failed]} failed"),
            console=Console(file=sys.stderr),
            transient=True,
        )
        self._task = self._progress.add_task("load", total=total, failed=0)
        self._failed = 0
        self._progress.start()

    def advance(self, result: RequestResult) -> None:
        if result.status != OK:
            self._failed += 1
        self._progress.update(self._task, advance=1, failed=self._failed)

    def close(self) -> None:
        self._progress.stop()
