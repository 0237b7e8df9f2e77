"""Waiting for the thing, not for time: `wait_until` polls a condition until it holds.

Tests that must let something happen (a watch to start, a consumer to find a stream, a group to
go idle, a process to exit) wait for that condition with a bound, instead of sleeping a fixed
time that is too short on a loaded machine and wasted on an idle one. On time-out the failure
says what was awaited and the condition's last value.
"""

from __future__ import annotations

import asyncio
import inspect
import time
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
