"""The evaluation scheduler on a fake clock: what the live loop and the evaluator both run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from controller.fleet import TICK_CHUNK
from controller.schedule import EvalGate
from controller.scheduler import EvalScheduler
from tests.controller.fakes import FakeTimer


@dataclass
class Item:
    name: str
    gate: EvalGate = field(default_factory=EvalGate)


@dataclass
class Clock:
    now: float = 0.0
    timers: list[FakeTimer] = field(default_factory=list)

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def advance(self, to: float) -> None:
        while due := [t for t in self.timers if not t.cancelled and t.when <= to]:
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            self.now = timer.when
            timer.callback()
        self.now = to


@dataclass
class Harness:
    clock: Clock = field(default_factory=Clock)
    evaluated: list[tuple[str, float]] = field(default_factory=list)
    allowed: set[str] | None = None
    gone: set[str] = field(default_factory=set)

    def scheduler(self, **kw: float) -> EvalScheduler[Item]:
        def evaluate(item: Item, now: float) -> None:
            item.gate.begin(now)
            self.evaluated.append((item.name, now))
            item.gate.done(0)

        return EvalScheduler(
            clock=lambda: self.clock.now,
            call_at=self.clock.call_at,
            evaluate=evaluate,
            evaluates=lambda i: self.allowed is None or i.name in self.allowed,
            current=lambda i: i.name not in self.gone,
            min_interval_s=kw.get("min_interval_s", 0.05),
            max_evals_per_s=kw.get("max_evals_per_s", 1_000.0),
            tick_s=kw.get("tick_s", 1.0),
        )


def test_a_burst_costs_one_evaluation_now_and_one_trailing() -> None:
    h = Harness()
    s = h.scheduler()
    a = Item("a")
    for t in (0.0, 0.01, 0.02, 0.03):
        h.clock.now = t
        s.consumed(a, 0, t)
    h.clock.advance(1.0)
    assert h.evaluated == [("a", 0.0), ("a", 0.05)]


def test_a_growing_queue_bypasses_the_rate_limit() -> None:
    h = Harness()
    s = h.scheduler()
    a = Item("a")
    s.consumed(a, 0, 0.0)
    h.clock.now = 0.01
    s.consumed(a, 5, 0.01)  # the queue grew since the last evaluation saw 0
    h.clock.now = 0.02
    s.consumed(a, 0, 0.02)  # not urgent: trailing
    h.clock.advance(1.0)
    assert h.evaluated == [("a", 0.0), ("a", 0.01), ("a", pytest.approx(0.06))]


def test_the_budget_stretches_the_interval_with_the_number_of_items() -> None:
    h = Harness()
    s = h.scheduler(max_evals_per_s=100.0)
    s.resize(50)  # 50 items at 100/s: each at most every 0.5 s
    assert s.interval_s == 0.5
    a = Item("a")
    s.consumed(a, 0, 0.0)
    h.clock.now = 0.1
    s.consumed(a, 0, 0.1)
    h.clock.advance(2.0)
    assert h.evaluated == [("a", 0.0), ("a", 0.5)]
    s.resize(1)
    assert s.interval_s == 0.05


def test_a_trailing_evaluation_of_an_item_gone_or_not_ours_does_not_run() -> None:
    h = Harness()
    s = h.scheduler()
    a, b = Item("a"), Item("b")
    for item in (a, b):
        s.consumed(item, 0, 0.0)
        h.clock.now = 0.01
        s.consumed(item, 0, 0.01)
        h.clock.now = 0.0
    h.gone.add("a")
    h.allowed = {"a"}  # b: another replica's shard now
    h.clock.advance(1.0)
    assert h.evaluated == [("a", 0.0), ("b", 0.0)]
    assert a.gate.timer is None
    assert b.gate.timer is None


def test_the_tick_skips_items_evaluated_lately_pauses_every_chunk_then_samples() -> None:
    h = Harness()
    s = h.scheduler(tick_s=1.0)
    items = [Item(f"m{i}") for i in range(TICK_CHUNK + 3)]
    h.clock.now = 9.8
    s.consumed(items[0], 0, 9.8)  # evaluated 0.2 s before the tick: skipped
    h.clock.now = 9.99
    s.consumed(items[1], 0, 9.99)
    s.consumed(items[1], 0, 9.99)  # a trailing evaluation scheduled: skipped
    h.evaluated.clear()
    h.clock.now = 10.0
    samples: list[float] = []

    def sample(now: float) -> list[None]:
        samples.append(now)
        return [None]  # the sampling step pauses once too

    pauses = sum(1 for _ in s.tick_round(items, after=sample))
    assert pauses == 2
    assert [n for n, _ in h.evaluated] == [i.name for i in items[2:]]
    assert samples == [10.0]
