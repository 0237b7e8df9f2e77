"""The evaluator's gateway under a published per-pod cap (`gateway.podcap`, `ours-tpotcap<N>`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from gateway.admission import DispatchPolicy
from gateway.podcap import applied_cap
from gateway.settings import ModelSlo
from sim.evaluate.ingress import Request
from sim.evaluate.oracle import Fixed
from sim.evaluate.ours import Ours, OursConfig
from sim.evaluate.pods import engine_factory
from sim.evaluate.runner import run_one
from sim.evaluate.trace import poisson, step
from sim.evaluate.world import Scenario, World
from surgescale.slo import Slo


class _CapWatch:
    """Counts requests per pod at every dispatch and remembers the worst excess over the cap."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.at_pod: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.over = 0
        self.cap_seen: set[int] = set()

    def on_enqueue(self, req: Request, now: float) -> None:
        pass

    def on_dispatch(self, req: Request, now: float) -> None:
        assert req.pod is not None
        self.at_pod[req.pod] += 1
        self.peak[req.pod] = max(self.peak[req.pod], self.at_pod[req.pod])
        cap = self.world.gateway.pod_concurrency
        self.cap_seen.add(cap)
        self.over = max(self.over, self.at_pod[req.pod] - cap)

    def on_first_token(self, req: Request, now: float) -> None:
        pass

    def on_complete(self, req: Request, now: float) -> None:
        if req.pod is not None:
            self.at_pod[req.pod] -= 1


class _CappedAt(Fixed):
    """Two warm replicas; the per-pod cap is lowered to `low` at `at_s`, raised back later."""

    def __init__(self, low: int, at_s: float, back_s: float) -> None:
        super().__init__(2, name="capped")
        self.low, self.at_s, self.back_s = low, at_s, back_s

    def attach(self, world: World) -> None:
        self.watch = _CapWatch(world)
        world.gateway.listeners.append(self.watch)
        high = world.gateway.pod_concurrency
        world.clock.at(self.at_s, lambda _: world.gateway.set_pod_cap(self.low))
        world.clock.at(self.back_s, lambda _: world.gateway.set_pod_cap(high))


@pytest.mark.parametrize(
    ("published", "configured", "floor", "cap"),
    [
        (None, 256, 8, 256),  # nothing published: the configured cap
        (0, 256, 8, 256),  # a non-answer is not a cap of zero
        (3, 256, 8, 8),  # the floor holds
        (40, 256, 8, 40),  # the learned value
        (400, 256, 8, 256),  # never above the operator's cap
        (3, 256, 1, 3),
        (5, 4, 8, 4),  # a configured cap below the floor still wins
        (5, 0, 1, 1),  # at least one slot
    ],
)
def test_applied_cap_is_the_published_value_between_floor_and_configured_cap(
    published: int | None, configured: int, floor: int, cap: int
) -> None:
    assert applied_cap(published=published, configured=configured, floor=floor) == cap


def test_a_lowered_cap_bounds_new_dispatches_and_a_raised_one_releases_the_queue() -> None:
    requests = poisson(
        rate=30.0, duration_s=40.0, prompt_tokens=400, output_tokens=300, seed=3
    ).requests
    # the cap alone (no prefill gate: it would hold the queue back at the raise too)
    sc = Scenario(
        name="cap", requests=requests, pod_concurrency=64, tail_s=0.0, dispatch=DispatchPolicy()
    )
    scaler = _CappedAt(low=3, at_s=10.0, back_s=25.0)
    result = run_one(sc, scaler)
    watch = scaler.watch
    assert all(r.finish is not None for r in result.requests)
    # requests dispatched while the cap was 3 never found more than 3 at their pod ... once the
    # ones sent under the old cap had drained: the excess at any dispatch is never positive
    assert watch.over <= 0
    assert watch.cap_seen == {64, 3}
    # under the low cap requests waited in the gateway (the load needs more than 2 x 3 slots)
    waited = [
        r
        for r in result.requests
        if 10.0 <= r.arrival < 25.0 and r.dispatch is not None and r.dispatch - r.arrival > 1.0
    ]
    assert waited
    # and were sent at once when the cap went back up
    dispatched_at_raise = [
        r for r in result.requests if r.dispatch is not None and r.dispatch == pytest.approx(25.0)
    ]
    assert len(dispatched_at_raise) > 2 * 3


def test_ours_tpotcap_applies_the_learned_concurrency_and_reports_it_in_snapshots() -> None:
    # a TPOT objective an 8B replica meets up to a batch of a few dozen, and load that crosses it
    requests = step(
        low_rate=10.0,
        high_rate=60.0,
        step_at_s=60.0,
        duration_s=150.0,
        prompt_tokens=300,
        output_tokens=200,
        seed=5,
    ).requests
    sc = Scenario(
        name="tpotcap",
        requests=requests,
        slo=Slo(tpot_s=0.012),
        pod_concurrency=256,
        fixed_concurrency=False,
        initial_replicas=2,
        max_replicas=4,
        tail_s=0.0,
    )
    floor = 4
    ours = Ours(OursConfig(pod_cap_floor=floor), name="ours-tpotcap4")
    caps: list[tuple[int, int]] = []
    original = ours._sample

    def sample(now: float) -> tuple[()]:
        out = original(now)
        spec = ours.spec
        conc = ours.state.concurrency(
            fixed=spec.concurrency_per_replica,
            max_num_seqs=spec.max_num_seqs,
            tpot_slo_s=spec.tpot_slo_s,
        )
        caps.append((conc, ours.world.gateway.pod_concurrency))
        return out

    ours._sample = sample  # type: ignore[method-assign]
    run_one(sc, ours)
    assert caps
    for conc, applied in caps:
        assert applied == applied_cap(published=conc, configured=256, floor=floor)
    # the learner found a TPOT-meeting batch below the engine's limit at some point
    assert any(applied < 256 for _, applied in caps)
    # and the controller's state heard an applied cap from the gateway's snapshots
    assert ours.state.pod_cap in {a for _, a in caps}


class _PrefillWatch:
    """Per pod: requests (and their prompt tokens) dispatched and without a first token."""

    def __init__(self) -> None:
        self.waiting: dict[str, list[int]] = {}
        self.worst_count = 0
        self.worst_tokens_before = 0
        self.dispatched = 0

    def on_enqueue(self, req: Request, now: float) -> None:
        pass

    def on_dispatch(self, req: Request, now: float) -> None:
        assert req.pod is not None
        w = self.waiting.setdefault(req.pod, [0, 0])
        self.worst_tokens_before = max(self.worst_tokens_before, w[1])
        w[0] += 1
        w[1] += req.prompt_tokens
        self.worst_count = max(self.worst_count, w[0])
        self.dispatched += 1

    def _done(self, req: Request) -> None:
        assert req.pod is not None
        w = self.waiting[req.pod]
        w[0] -= 1
        w[1] -= req.prompt_tokens

    def on_first_token(self, req: Request, now: float) -> None:
        self._done(req)

    def on_complete(self, req: Request, now: float) -> None:
        if req.first_token is None:  # pragma: no cover - every request here gets a token
            self._done(req)


class _Gated(Fixed):
    def __init__(self, *, limit: int | None, budget: int | None) -> None:
        super().__init__(3, name="gated")
        self.limit, self.budget = limit, budget
        self.watch = _PrefillWatch()

    def attach(self, world: World) -> None:
        world.gateway.listeners.append(self.watch)
        policy = world.gateway.admission.policy
        world.gateway.set_dispatch(
            replace(policy, prefill_limit=self.limit, prefill_token_budget=self.budget)
        )


def _prefill_heavy() -> Scenario:
    requests = poisson(
        rate=12.0, duration_s=30.0, prompt_tokens=3000, output_tokens=30, seed=7
    ).requests
    return Scenario(name="prefill", requests=requests, pod_concurrency=256, tail_s=0.0)


@pytest.mark.parametrize("limit", [1, 2])
def test_a_prefill_limit_bounds_the_requests_a_pod_holds_before_their_first_token(
    limit: int,
) -> None:
    ungated = _Gated(limit=None, budget=None)
    run_one(_prefill_heavy(), ungated)
    assert ungated.watch.worst_count > limit  # the load would pile prompts up without the gate
    gated = _Gated(limit=limit, budget=None)
    result = run_one(_prefill_heavy(), gated)
    assert gated.watch.dispatched == len(result.requests)
    assert gated.watch.worst_count == limit


def test_a_prefill_token_budget_sends_nothing_to_a_pod_at_or_over_it() -> None:
    budget = 5000
    gated = _Gated(limit=None, budget=budget)
    result = run_one(_prefill_heavy(), gated)
    assert all(r.finish is not None for r in result.requests)
    # a new request went to a pod only while the prompts there before it were under the budget
    assert 0 < gated.watch.worst_tokens_before < budget


def test_the_issue_14_variants_are_named_policies_outside_the_default_sweep() -> None:
    from sim.evaluate.runner import EXPERIMENTS, POLICIES, UnknownPolicyError, check_names

    assert check_names(["ours", *EXPERIMENTS]) == ["ours", *EXPERIMENTS]
    assert not set(EXPERIMENTS) & set(POLICIES)
    for name, make in EXPERIMENTS.items():
        scaler = make()
        assert isinstance(scaler, Ours)
        assert scaler.name == name
    capped = EXPERIMENTS["ours-tpotcap4"]()
    assert isinstance(capped, Ours)
    assert capped.config.pod_cap_floor == 4
    with pytest.raises(UnknownPolicyError):
        check_names(["ours-tpotcap3"])


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("ours", ModelSlo().prefill_limit),  # the live gateway's default
        ("ours-prefill0", None),
        ("ours-prefill2", 2),
        ("static-peak", None),  # the reference arms: the admission core without the gate
        ("kpa", None),  # Knative's activator
        ("hpa-memory", None),  # no gateway cap in front
    ],
)
def test_each_policy_runs_the_gate_of_what_sits_in_front_of_its_pods(
    name: str, limit: int | None
) -> None:
    from sim.evaluate.runner import _SIMPLE

    requests = poisson(rate=2.0, duration_s=3.0, prompt_tokens=100, output_tokens=5).requests
    sc = Scenario(name="gate", requests=requests, tail_s=0.0)
    scaler = Fixed(1) if name == "static-peak" else _SIMPLE[name]()
    world = World(sc, engine_factory=engine_factory(sc.profile), autoscaler=scaler)
    world.run()
    policy = world.gateway.admission.policy
    assert (policy.prefill_limit or None) == limit  # 0 is no gate, as None
    assert policy.prefill_gated is (limit is not None)
