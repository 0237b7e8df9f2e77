"""Waiting for the thing, not for time: `wait_until` polls a condition until it holds.

Tests that must let something happen (a watch to start, a consumer to find a stream, a group to
go idle, a process to exit) wait for that condition with a bound, instead of sleeping a fixed
time that is too short on a loaded machine and wasted on an idle one. On time-out the failure
says what was awaited and the condition's last value.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def wait_until(
    condition: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,
    what: str,
    interval: float = ...,
) -> T: ...
@overload
async def wait_until(
    condition: Callable[[], T], *, timeout: float = ..., what: str, interval: float = ...
) -> T: ...
async def wait_until(
    condition: Callable[[], Any],
    *,
    timeout: float = 15.0,
    what: str,
    interval: float = 0.02,
) -> Any:
    """Call `condition` (plain or async) every `interval` s until it returns something truthy,
    and return that; fail after `timeout` s saying `what` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what} (last: {value!r})"
            )
        await asyncio.sleep(interval)


def wait_until_sync(
    condition: Callable[[], T], *, timeout: float = 15.0, what: str, interval: float = 0.02
) -> T:
    """`wait_until` for tests that run no event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what} (last: {value!r})"
            )
        time.sleep(interval)


def await_chain(task: asyncio.Task[Any]) -> str:
    """Where `task` is suspended, outermost first: every coroutine and async generator on its
    await chain (file:line function), ending with what it waits on. `Task.get_stack` gives only
    the outermost frame, which is not enough to say why a cancelled task did not stop."""
    obj: object = task.get_coro()
    parts: list[str] = []
    for _ in range(64):
        if obj is None:
            break
        frame = (
            getattr(obj, "cr_frame", None)
            or getattr(obj, "ag_frame", None)
            or getattr(obj, "gi_frame", None)
        )
        if frame is not None:
            where = frame.f_code.co_filename.rsplit("/", 2)[-2:]
            parts.append(f"{'/'.join(where)}:{frame.f_lineno} {frame.f_code.co_name}")
        step = (
            getattr(obj, "cr_await", None)
            or getattr(obj, "ag_await", None)
            or getattr(obj, "gi_yieldfrom", None)
        )
        if step is None and frame is None:
            # An `async for`'s pending __anext__ names its generator only among its referents.
            generators = [
                r for r in gc.get_referents(obj) if isinstance(r, types.AsyncGeneratorType)
            ]
            if not generators:
                parts.append(repr(obj)[:200])
                break
            step = generators[0]
        obj = step
    return " -> ".join(parts)
