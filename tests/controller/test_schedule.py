"""The evaluation schedule with a fake `now` and a list of timers: rate limit, trailing, urgent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from controller.schedule import EvalGate
from tests.controller.fakes import FakeTimer

INTERVAL = 0.05


@dataclass
class Driver:
    """What `controller.loop` does around the gate, on a fake clock."""

    gate: EvalGate = field(default_factory=EvalGate)
    now: float = 0.0
    timers: list[FakeTimer] = field(default_factory=list)
    evaluations: list[tuple[float, float | None]] = field(default_factory=list)
    queue: int = 0

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def request(self, *, trigger: float | None, urgent: bool = False) -> None:
        if self.gate.request(
            now=self.now,
            trigger=trigger,
            urgent=urgent,
            min_interval_s=INTERVAL,
            call_at=self.call_at,
            deferred=self.deferred,
        ):
            self.evaluate()

    def deferred(self) -> None:
        self.gate.fired()
        self.evaluate()

    def evaluate(self) -> None:
        self.evaluations.append((self.now, self.gate.begin(self.now)))
        self.gate.done(self.queue)

    def advance(self, to: float) -> None:
        """Run the timers due by `to` in time order, like an event loop."""
        while True:
            due = [t for t in self.timers if not t.cancelled and t.when <= to]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            self.now = timer.when
            timer.callback()
        self.now = to


def test_first_request_runs_at_once() -> None:
    d = Driver()
    d.request(trigger=0.0)
    assert d.evaluations == [(0.0, 0.0)]
    assert d.timers == []


def test_requests_within_the_interval_fold_into_one_trailing_evaluation_with_the_oldest_trigger() -> (
    None
):
    d = Driver()
    d.request(trigger=0.0)
    for t in (0.01, 0.02, 0.03):
        d.advance(t)
        d.request(trigger=t)
    assert len(d.timers) == 1  # one trailing evaluation, not three
    assert d.timers[0].when == pytest.approx(INTERVAL)
    d.advance(0.2)
    assert d.evaluations == [(0.0, 0.0), (pytest.approx(INTERVAL), 0.01)]


def test_urgent_request_skips_the_rate_limit_and_cancels_the_trailing_one() -> None:
    d = Driver()
    d.request(trigger=0.0)
    d.advance(0.01)
    d.request(trigger=0.01)
    timer = d.timers[0]
    d.advance(0.02)
    d.queue = 5
    assert d.gate.is_urgent(5)
    d.request(trigger=0.02, urgent=True)
    assert d.evaluations[-1] == (0.02, 0.02)
    assert timer.cancelled
    assert not d.gate.is_urgent(5)  # the evaluation saw that queue
    d.advance(1.0)
    assert len(d.evaluations) == 2


def test_tick_without_trigger_after_the_interval_runs_at_once_with_no_trigger() -> None:
    d = Driver()
    d.request(trigger=0.0)
    d.advance(1.0)
    d.request(trigger=None)
    assert d.evaluations[-1] == (1.0, None)


def test_reset_lets_the_next_request_run_at_once() -> None:
    d = Driver()
    d.request(trigger=0.0)
    d.advance(0.01)
    d.gate.reset()
    d.request(trigger=None)
    assert [t for t, _ in d.evaluations] == [0.0, 0.01]


def test_cancel_drops_the_trailing_evaluation() -> None:
    d = Driver()
    d.request(trigger=0.0)
    d.advance(0.01)
    d.request(trigger=0.01)
    d.gate.cancel()
    d.advance(1.0)
    assert len(d.evaluations) == 1
