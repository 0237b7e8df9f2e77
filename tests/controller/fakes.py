"""Test doubles of the controller's own seams (not of anything it talks to)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class FakeTimer:
    """A timer handle as `call_at` returns it, on a fake clock the test advances."""

    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True
