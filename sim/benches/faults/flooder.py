"""The `redis-flood` group's event flood: a process writing events as fast as it can.

It builds its producer with the gateway's own factory (`gateway.reporting.event_producer`, with
the gateway's default buffer), so whatever bounds the gateway puts on its streams are the ones
flooded. Events are full request lifecycles (enqueue, dispatch, first_token, complete) with
uuid request ids over `--models` models. It stops on SIGTERM or after `--seconds`, and prints one
JSON line with the producer's counters (emitted, flushed, dropped, refused when known).

Run by the bench: `python -m sim.benches.faults.flooder --redis-url URL --prefix P`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
import uuid
from typing import Any

from gateway.reporting import event_producer
from gateway.settings import GatewaySettings
from surgescale.events import Event, EventType


def _lifecycle(model: str, gateway: str, now_ms: int) -> list[Event]:
    rid = uuid.uuid4().hex
    common: dict[str, Any] = {
        "model": model,
        "gateway": gateway,
        "ts_ms": now_ms,
        "request_id": rid,
    }
    return [
        Event(type=EventType.ENQUEUE, prompt_tokens=812, api_key="tenant-7f3a", **common),
        Event(type=EventType.DISPATCH, queue_ms=3.2, pod="10.1.7.23:8000", **common),
        Event(type=EventType.FIRST_TOKEN, ttft_ms=182.5, **common),
        Event(
            type=EventType.COMPLETE,
            status=200,
            output_tokens=241,
            ttft_ms=182.5,
            tpot_ms=11.8,
            e2e_ms=3020.4,
            queue_ms=3.2,
            **common,
        ),
    ]


async def flood(
    *, redis_url: str, prefix: str, models: list[str], seconds: float
) -> dict[str, int]:
    limit = GatewaySettings.model_fields["event_buffer_limit"].default
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    gateway = f"flood-{uuid.uuid4().hex[:6]}"
    async with event_producer(redis_url, prefix=prefix, buffer_limit=limit) as producer:
        assert producer is not None
        deadline = time.monotonic() + seconds
        n = 0
        while not stop.is_set() and time.monotonic() < deadline:
            if producer.stats.buffered < limit // 2:
                now_ms = int(time.time() * 1000)
                for _ in range(50):
                    n += 1
                    for event in _lifecycle(models[n % len(models)], gateway, now_ms):
                        producer.emit(event)
            await asyncio.sleep(0)
        stats = producer.stats
        out = {
            "emitted": stats.emitted,
            "flushed": stats.flushed,
            "dropped": stats.dropped,
            "refused": int(getattr(stats, "refused", -1)),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m sim.benches.faults.flooder")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args()
    result = asyncio.run(
        flood(redis_url=args.redis_url, prefix=args.prefix, models=args.model, seconds=args.seconds)
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
