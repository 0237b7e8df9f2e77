"""Keeping the garbage collector's pauses short in the long-running controller process.

CPython's cyclic collector stops the event loop while it runs, and a full (generation 2)
collection walks every tracked object that survived two younger collections. At 1,000 models the
controller's state is ~170,000 such objects (windows, sketches, metric children, scalers) and a
full collection took 130-200 ms of CPU (300-800 ms of wall time on a loaded machine), about
every 3 s at 10,000 events/s: the slowest reactions of the 1,000-model bench (docs/scale-out.md,
"Fourth round").

`gc.freeze()` moves every object alive now to the permanent generation, which no collection
walks, and costs O(1). Done every `freeze_interval_s`, it keeps the objects a full collection
walks to those promoted since the last freeze, so each pause stays a few milliseconds whatever
the number of models. Reference counting still frees frozen objects; what a frozen object
cannot be is *cyclic* garbage found by the collector, so a cycle that was alive at a freeze and
dies later stays until the next `full_collect_interval_s`, which unfreezes, collects everything
(one long pause, e.g. once an hour) and freezes again. `0` turns either off.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)


def freeze_round() -> None:
    """Move every object alive now out of the collector's view (O(1))."""
    gc.freeze()


def full_round() -> tuple[int, float]:
    """Unfreeze, collect every generation, freeze again: reclaims the cycles that died while
    frozen. Returns (objects collected, seconds it took) (the loop is blocked that long)."""
    start = time.perf_counter()
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    return collected, time.perf_counter() - start


async def run(freeze_interval_s: float, full_collect_interval_s: float) -> None:
    """Freeze every `freeze_interval_s` and collect in full every `full_collect_interval_s`
    (either 0 = never) until cancelled."""
    if freeze_interval_s <= 0 and full_collect_interval_s <= 0:
        return
    loop = asyncio.get_running_loop()
    step = min(x for x in (freeze_interval_s, full_collect_interval_s) if x > 0)
    next_full = loop.time() + full_collect_interval_s
    while True:
        await asyncio.sleep(step)
        if full_collect_interval_s > 0 and loop.time() >= next_full:
            collected, took = full_round()
            next_full = loop.time() + full_collect_interval_s
            log.info("full collection: %d objects collected in %.0f ms", collected, took * 1000)
        elif freeze_interval_s > 0:
            freeze_round()
