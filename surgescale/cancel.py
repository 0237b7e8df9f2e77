"""Cancellation that Python 3.11 can lose, kept: a loop checkpoint and a `wait_for` that keeps it.

On Python 3.11 `asyncio.wait_for` returns the inner result when the cancel of the waiting task
arrives in the same loop step as the inner awaitable finishes (CPython gh-86296; 3.12 rewrote
`wait_for` on `asyncio.timeout`, which counts cancels and does not lose them). redis-py 8 sends
every command through `wait_for(write, socket_timeout)`, and that write finishes in one step, so
a task cancelled while it talks to Redis can carry on as if it had not been: an event consumer
cancelled at random moments against a local Redis went on reading in 15 of its first 20 cancels
(the controller's `consume` task then outlived a controller stopped as a crash, in one CI run).

- `checkpoint()`: at the top of every long-running loop, raises `CancelledError` if the task
  has a cancel request pending that no `CancelledError` delivered (`Task.cancelling()` counts
  the requests; `asyncio.timeout` and `TaskGroup` take theirs back with `uncancel`).
- `wait_for(aw, timeout)`: `asyncio.wait_for` on `asyncio.timeout`, as 3.12 has it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


def checkpoint() -> None:
    """Raise `CancelledError` if the current task was asked to stop and the request was lost."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError("a cancel request lost by an await is honoured here")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """`aw`'s result, or `TimeoutError` after `timeout` s (None: no limit); a cancel of the
    calling task is never turned into a result."""
    async with asyncio.timeout(timeout):
        return await aw
