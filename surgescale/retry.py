"""The one retry policy of the project: pure backoff strategies and a small error taxonomy.

`Backoff.compute(failures)` maps the number of consecutive failures to a delay in seconds; it does
no I/O and reads no clock, so the event producer, the controller's actuator and API watches and
the gateway's EndpointSlice watch share it and tests can check it directly. Errors are either `TemporaryError` (retry, optionally after a
delay the server asked for) or `PermanentError` (do not retry).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol


class Backoff(Protocol):
    """A retry schedule: seconds to wait after `failures` consecutive failures (>= 1)."""

    def compute(self, failures: int) -> float: ...


@dataclass(frozen=True, slots=True)
class ExponentialBackoff:
    """Capped exponential backoff with jitter.

    `base * 2**(failures-1)`, capped at `cap`, then scaled by a random factor in
    `[1 - jitter, 1]` so that many clients retrying at once spread out. The default (0.5) is
    "equal jitter": at least half the delay, never more than it; `jitter=1` is "full jitter".
    """

    base: float = 0.05
    """Delay after the first failure, in seconds."""
    cap: float = 5.0
    """Upper bound of any delay, in seconds."""
    jitter: float = 0.5
    """Fraction of the delay that is randomised (0 = deterministic)."""
    rng: random.Random = field(default_factory=random.Random, compare=False)
    """Source of jitter; pass a seeded one for reproducible schedules."""

    def compute(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        delay = min(self.cap, self.base * 2.0 ** min(failures - 1, 30))
        if self.jitter <= 0:
            return delay
        return float(delay * (1.0 - self.jitter * self.rng.random()))


@dataclass(frozen=True, slots=True)
class ConstantBackoff:
    """The same delay after every failure."""

    delay: float = 0.1

    def compute(self, failures: int) -> float:
        return self.delay if failures > 0 else 0.0


class TemporaryError(Exception):
    """A failure worth retrying; `delay` is a server-suggested wait (Retry-After), if any."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(Exception):
    """A failure that retrying cannot fix (bad request, forbidden, not found)."""
