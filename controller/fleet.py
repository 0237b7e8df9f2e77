"""Keeping one controller's cost flat in the number of models it runs.

Three things grow with the number N of InferenceScalers, and each gets a budget here:

- **Evaluations.** Every event batch asks for an evaluation of the models it touched, and each
  model is rate-limited to one per `min_eval_interval_s`; with N models under steady traffic that
  is up to N / `min_eval_interval_s` evaluations a second (20,000/s for 1,000 models at 50 ms).
  `eval_interval(n, ...)` stretches the per-model interval so that the non-urgent evaluations of
  all models together stay under `max_evals_per_s`; a queue that grew (urgent) is still evaluated
  at once, so reaction time does not depend on N.
- **The periodic tick** (scale-down, idle, staleness) evaluated every scaler in one go: with N
  models that is one long stretch of the event loop during which nothing else runs (an urgent
  evaluation included). `tick_due` skips the scalers evaluated recently anyway, and the loop
  yields to other work every `TICK_CHUNK` scalers.
- **Status writes**: one PATCH per changed InferenceScaler per interval. `Rotation` hands the
  status writer at most `per_round` scalers a round, in turn, so status writes stay under a
  budget and every scaler still gets its turn (every N / per_round rounds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from controller.schedule import EvalGate

T = TypeVar("T")

TICK_CHUNK = 16
"""Scalers evaluated by the tick before it lets other work run."""


def eval_interval(n_scalers: int, min_interval_s: float, max_evals_per_s: float) -> float:
    """The per-scaler interval between non-urgent evaluations for `n_scalers` scalers."""
    if max_evals_per_s <= 0 or math.isinf(max_evals_per_s):
        return min_interval_s
    return max(min_interval_s, n_scalers / max_evals_per_s)


def tick_due(gate: EvalGate, now: float, *, tick_s: float, interval_s: float) -> bool:
    """Whether the tick should evaluate a scaler: not when a trailing evaluation is already
    scheduled, nor when it was evaluated within half a tick or within its interval."""
    if gate.timer is not None:
        return False
    return now - gate.last_eval >= max(tick_s / 2, interval_s)


class Rotation(Generic[T]):
    """Up to `per_round` items per call, taking turns over a changing collection."""

    def __init__(self, items: Callable[[], Iterable[T]], per_round: Callable[[], int]) -> None:
        self._items = items
        self._per_round = per_round
        self._offset = 0

    def __call__(self) -> list[T]:
        items = list(self._items())
        limit = max(self._per_round(), 1)
        if len(items) <= limit:
            self._offset = 0
            return items
        start = self._offset % len(items)
        chosen = (items[start:] + items[:start])[:limit]
        self._offset = start + limit
        return chosen
