"""The demo's live view: what the autoscaler sees and does, redrawn a few times a second (rich).

Sources: the gateway's events, read through `surgescale.events` in a consumer group of the view's
own (`EventTally`: queue depth from the gateways' snapshots, arrival rate from `enqueue`, TTFT p95
from `first_token`), the cluster as watched by `sim.demo.observe.ClusterObserver` (replicas
desired / starting / ready, nodes desired / ready), and the autoscaler's last decision and reason
(the InferenceScaler's status for ours, the loop's own status for the KEDA baseline). `render`
is a pure function of a `ViewState`; `LiveView` owns the rich `Live` and the refresh task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from controller.dedupe import SeqTracker
from surgescale.events import Event, EventConsumer, EventType, RedisClient, StreamKeys
from surgescale.stats import percentile

log = logging.getLogger(__name__)


class EventTally:
    """Running figures from the gateway's events (times: wall-clock ms of the events)."""

    def __init__(
        self,
        *,
        model: str,
        window_s: float = 5.0,
        ttft_window_s: float = 10.0,
        ignore: set[str] | None = None,
    ) -> None:
        self.model = model
        self.ignore = frozenset(ignore or ())
        """Request ids whose events are not counted (the demo's warm-up request)."""
        self.window_ms = window_s * 1000.0
        self.ttft_window_ms = ttft_window_s * 1000.0
        self._enqueues: deque[int] = deque()
        self._ttfts: deque[tuple[int, float]] = deque()
        self._snapshots: dict[str, tuple[int, int, int]] = {}
        """gateway -> (ts_ms, queue_depth, in_flight)."""
        self.enqueued = 0
        self.first_tokens = 0
        self.completed = 0
        self.rejected = 0
        self.cancelled = 0
        self.changed = asyncio.Event()
        self._seen: dict[str, SeqTracker] = {}
        """origin -> the `eseq` counted: delivery is at least once (a producer's write retried
        after a lost reply, an entry reclaimed), the tally counts each event once."""

    def add(self, event: Event) -> None:
        if event.model != self.model or (event.request_id and event.request_id in self.ignore):
            return
        if event.origin is not None and event.eseq is not None:
            seen = self._seen.get(event.origin)
            if seen is None:
                seen = self._seen[event.origin] = SeqTracker(max_gaps=64)
            if not seen.first_time(event.eseq):
                return
        self.changed.set()
        kind = event.type
        if kind is EventType.ENQUEUE:
            self._enqueues.append(event.ts_ms)
            self.enqueued += 1
        elif kind is EventType.FIRST_TOKEN:
            self.first_tokens += 1
            if event.ttft_ms is not None:
                self._ttfts.append((event.ts_ms, event.ttft_ms / 1000.0))
        elif kind is EventType.COMPLETE:
            self.completed += 1
        elif kind is EventType.REJECT:
            self.rejected += 1
        elif kind is EventType.CANCEL:
            self.cancelled += 1
        elif kind is EventType.SNAPSHOT:
            self._snapshots[event.gateway] = (
                event.ts_ms,
                event.queue_depth or 0,
                event.in_flight or 0,
            )

    def accounted(self, requests: int) -> bool:
        """Every one of `requests` was enqueued and has ended (complete, reject or cancel)."""
        ended = self.completed + self.rejected + self.cancelled
        return self.enqueued >= requests and ended >= self.enqueued

    async def settled(self, requests: int, *, timeout_s: float) -> bool:
        """Wait (bounded) until the events account for `requests`; say whether they did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self.accounted(requests):
            self.changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return True

    def waiting(self) -> int:
        """Admitted requests without a first token yet (gateway queue and engine queues)."""
        return max(0, self.enqueued - self.first_tokens - self.rejected - self.cancelled)

    def _trim(self, now_ms: float) -> None:
        while self._enqueues and self._enqueues[0] < now_ms - self.window_ms:
            self._enqueues.popleft()
        while self._ttfts and self._ttfts[0][0] < now_ms - self.ttft_window_ms:
            self._ttfts.popleft()

    def arrival_rate(self, now_ms: float) -> float:
        self._trim(now_ms)
        return len(self._enqueues) / (self.window_ms / 1000.0)

    def ttft_p95(self, now_ms: float) -> float | None:
        self._trim(now_ms)
        return percentile((v for _, v in self._ttfts), 95)

    def queue_depth(self, now_ms: float, stale_ms: float = 1000.0) -> tuple[int, int]:
        """Sum of (queue depth, in flight) over gateways that reported within `stale_ms`."""
        queue = flight = 0
        for ts, q, f in self._snapshots.values():
            if ts >= now_ms - stale_ms:
                queue += q
                flight += f
        return queue, flight


async def events_from_now(
    redis: RedisClient, *, keys: StreamKeys, group: str = "demo-view"
) -> EventConsumer:
    """A consumer in a group of the view's own that starts at the streams' current ends."""
    consumer = EventConsumer(
        redis, group=group, keys=keys, block_ms=100, discover_interval_s=0.5, start_id="$"
    )
    await consumer.discover()  # groups exist from here on: nothing after this is missed
    return consumer


async def stop_following(consumer: EventConsumer, follower: asyncio.Task[None]) -> None:
    """End `follow_events`: ask the consumer to return after its current read (a short block),
    and cancel only if that has not ended it within a second."""
    consumer.stop()
    done, _ = await asyncio.wait({follower}, timeout=1.0)
    if not done:
        follower.cancel()
        await asyncio.wait({follower}, timeout=1.0)


async def follow_events(consumer: EventConsumer, tally: EventTally) -> None:
    """Feed `tally` from the consumer until cancelled (acks as it goes)."""
    try:
        async for batch in consumer.batches():
            for event in batch.events:
                tally.add(event)
            await batch.ack()
    finally:
        consumer.stop()


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewState:
    """One frame of the live view."""

    title: str
    elapsed_s: float
    duration_s: float
    phase: str
    slo_s: float
    arrival_rate: float
    queue_depth: int
    in_flight: int
    waiting: int
    """Requests sent without a first token yet (client side: gateway and engine queues)."""
    ttft_p95_s: float | None
    replicas_desired: int
    replicas_starting: int
    replicas_ready: int
    nodes_desired: int
    nodes_ready: int
    sent: int
    finished: int
    decision: str


def render(state: ViewState) -> Panel:
    """The frame as a rich renderable (pure)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style="bold")
    table.add_column()
    ttft = "—" if state.ttft_p95_s is None else f"{state.ttft_p95_s:.2f} s"
    ttft_style = (
        "green" if state.ttft_p95_s is not None and state.ttft_p95_s <= state.slo_s else "red"
    )
    if state.ttft_p95_s is None:
        ttft_style = "dim"
    table.add_row("phase", f"{state.phase}  ({state.elapsed_s:.0f} / {state.duration_s:.0f} s)")
    table.add_row("arrival rate", f"{state.arrival_rate:.1f} req/s")
    table.add_row(
        "queue depth",
        f"{state.queue_depth} queued at the gateway, {state.in_flight} in flight; "
        f"{state.waiting} waiting for a first token",
    )
    table.add_row(
        "TTFT p95",
        Text.assemble((ttft, ttft_style), f"   (SLO {state.slo_s:g} s)"),
    )
    table.add_row(
        "replicas",
        f"{state.replicas_desired} desired, {state.replicas_starting} starting, "
        f"{state.replicas_ready} ready",
    )
    table.add_row("GPU nodes", f"{state.nodes_desired} desired, {state.nodes_ready} ready")
    table.add_row("requests", f"{state.sent} sent, {state.finished} finished")
    table.add_row("last decision", Text(state.decision or "—", overflow="fold"))
    bar = _bar(state.elapsed_s / state.duration_s if state.duration_s > 0 else 0.0)
    return Panel(Group(table, Text(bar, style="cyan")), title=state.title, expand=False)


def _bar(fraction: float, width: int = 50) -> str:
    filled = int(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def line(state: ViewState) -> str:
    """The frame as one log line (for `--no-live` and non-terminal output)."""
    ttft = "-" if state.ttft_p95_s is None else f"{state.ttft_p95_s:.2f}s"
    return (
        f"[{state.title}] t={state.elapsed_s:5.1f}s {state.phase:<6} "
        f"rate={state.arrival_rate:5.1f}/s queue={state.queue_depth:<4} waiting={state.waiting:<4} "
        f"ttft_p95={ttft:<6} replicas={state.replicas_desired}/{state.replicas_starting}/"
        f"{state.replicas_ready} nodes={state.nodes_desired}/{state.nodes_ready} "
        f"sent={state.sent} | {state.decision}"
    )


class LiveView:
    """Redraws `frame()` every `period_s` in a rich Live (or logs a line every `log_every_s`)."""

    def __init__(
        self,
        frame: Callable[[], ViewState],
        *,
        live: bool,
        console: Console | None = None,
        period_s: float = 0.25,
        log_every_s: float = 5.0,
    ) -> None:
        self._frame = frame
        self._console = console or Console()
        self._live = live and self._console.is_terminal
        self._period = period_s
        self._log_every = log_every_s

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._run(), name="live-view")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        if self._live:
            with Live(
                render(self._frame()),
                console=self._console,
                refresh_per_second=max(1, int(1 / self._period)),
                transient=False,
            ) as live:
                while True:
                    await asyncio.sleep(self._period)
                    try:
                        live.update(render(self._frame()))
                    except Exception as exc:  # a view glitch never stops the demo
                        log.debug("live view frame failed: %s", exc)
        else:
            next_log = time.monotonic()
            while True:
                now = time.monotonic()
                if now >= next_log:
                    next_log = now + self._log_every
                    with contextlib.suppress(Exception):
                        self._console.print(line(self._frame()), highlight=False, soft_wrap=True)
                await asyncio.sleep(self._period)
