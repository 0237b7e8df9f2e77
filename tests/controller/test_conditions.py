"""The standard (HPA-style) conditions: pure table-driven checks of `controller.conditions`, and
against the simulated cluster: Events on transitions, `kubectl get -o wide` and `describe`."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller import conditions, crd
from controller.actuator import RecheckableError, ScaleTarget, TargetKind
from controller.conditions import refresh, unavailable_after
from controller.objects import Condition
from controller.policy import Decision, Observation, Reason
from controller.scaler import STANDARD_CONDITIONS, Scaler, ordered_conditions
from surgescale.retry import PermanentError
from tests.controller.conftest import Gateway, Sim, eventually
from tests.controller.test_integration import _ready_leader

SPEC = crd.parse_spec(
    {
        "model": "m",
        "scaleTargetRef": {"name": "m"},
        "minReplicas": 1,
        "maxReplicas": 6,
        "target": {"coldStartSeconds": 60},
        "capacity": {
            "strategy": "CapacityBuffer",
            "capacityBufferRef": {"name": "warm"},
            "nodeBootSeconds": 120,
            "gpusPerNode": 2,
        },
    }
)


def _obs(*, ready: int = 2, starting: int = 0, nodes_starting: int = 0) -> Observation:
    return Observation(
        now_data=0.0,
        queue_depth=3,
        in_flight=5,
        ready_replicas=ready,
        starting_replicas=starting,
        arrival_rate_short=1.0,
        arrival_rate_long=1.0,
        service_rate_per_replica=1.0,
        ttft_p95_s=0.5,
        tpot_p95_s=None,
        last_enqueue_at=None,
        starting_nodes=nodes_starting,
    )


def _scaler(
    *, replicas: int = 3, recommended: int = 3, valid: bool = True, reason: Reason = Reason.STEADY
) -> Scaler:
    scaler = Scaler(key=("ns", "m"), spec=SPEC)
    scaler.decision = Decision(
        valid=valid, replicas=replicas, nodes=2, reason=reason, recommended=recommended
    )
    scaler.observation = _obs()
    scaler.set_condition("TargetFound", True, "Found", "scale target found")
    scaler.set_condition("TargetAllowed", True, "OptedIn", "every scale target opted in")
    return scaler


def _no_failure(_: ScaleTarget) -> PermanentError | None:
    return None


def _state(scaler: Scaler) -> dict[str, tuple[str, str]]:
    return {k: (c["status"], c["reason"]) for k, c in scaler.conditions.items()}


@pytest.mark.parametrize(
    ("replicas", "recommended", "expected"),
    [
        pytest.param(6, 6, ("True", "TooManyReplicas"), id="capped-at-max"),
        pytest.param(1, 1, ("True", "TooFewReplicas"), id="held-at-min"),
        pytest.param(3, 3, ("False", "DesiredWithinRange"), id="within"),
        pytest.param(6, 4, ("False", "DesiredWithinRange"), id="filled-nodes-not-capped"),
    ],
)
def test_scaling_limited(replicas: int, recommended: int, expected: tuple[str, str]) -> None:
    scaler = _scaler(replicas=replicas, recommended=recommended)
    refresh(scaler, now=0.0, failure=_no_failure)
    assert _state(scaler)["ScalingLimited"] == expected


def test_healthy_scaler_is_ready_and_every_standard_condition_is_set() -> None:
    scaler = _scaler()
    refresh(scaler, now=0.0, failure=_no_failure)
    state = _state(scaler)
    assert state["AbleToScale"] == ("True", "ReadyForNewScale")
    assert state["ScalingActive"] == ("True", "ValidMetricFound")
    assert state["CapacityUnavailable"] == ("False", "CapacityAvailable")
    assert state["Ready"] == ("True", "ScalingNormally")
    # Nothing abnormal on the first refresh: no Event-worthy transition.
    assert list(scaler.transitions) == []


@pytest.mark.parametrize(
    ("setup", "kind", "reason"),
    [
        pytest.param(
            lambda s: s.set_condition("TargetFound", False, "DeploymentNotFound", "gone"),
            "AbleToScale",
            "FailedGetScale",
            id="target-missing",
        ),
        pytest.param(
            lambda s: s.set_condition("TargetAllowed", False, "TargetNotOptedIn", "no label"),
            "AbleToScale",
            "TargetNotOptedIn",
            id="not-opted-in",
        ),
        pytest.param(
            lambda s: setattr(
                s, "decision", Decision(valid=False, replicas=3, nodes=2, reason=Reason.STALE_DATA)
            ),
            "ScalingActive",
            "StaleEventData",
            id="stale-events",
        ),
    ],
)
def test_a_failing_condition_makes_ready_false_with_its_reason(
    setup: Callable[[Scaler], None], kind: str, reason: str
) -> None:
    scaler = _scaler()
    refresh(scaler, now=0.0, failure=_no_failure)
    ready_since = scaler.conditions["Ready"]["lastTransitionTime"]
    setup(scaler)
    refresh(scaler, now=1.0, failure=_no_failure)
    assert _state(scaler)[kind] == ("False", reason)
    assert _state(scaler)["Ready"] == ("False", reason)
    assert {t["type"] for t in scaler.transitions} >= {kind, "Ready"}
    assert all(t["abnormal"] for t in scaler.transitions)
    assert scaler.conditions["Ready"]["lastTransitionTime"] >= ready_since


def test_a_failed_scale_write_says_failed_update_scale() -> None:
    scaler = _scaler()
    target = scaler.deployment()

    def failure(t: ScaleTarget) -> PermanentError | None:
        return PermanentError("HTTP 403: forbidden") if t == target else None

    refresh(scaler, now=0.0, failure=failure)
    assert _state(scaler)["AbleToScale"] == ("False", "FailedUpdateScale")
    assert "403" in scaler.conditions["AbleToScale"]["message"]


def test_missing_buffer_crd_is_capacity_unavailable() -> None:
    scaler = _scaler()

    def failure(t: ScaleTarget) -> PermanentError | None:
        if t.kind is TargetKind.CAPACITY_BUFFER:
            return RecheckableError("not served", reason="CapacityBufferCRDMissing")
        return None

    refresh(scaler, now=0.0, failure=failure)
    assert _state(scaler)["CapacityUnavailable"] == ("True", "CapacityBufferCRDMissing")
    assert _state(scaler)["Ready"] == ("False", "CapacityBufferCRDMissing")
    assert [t["type"] for t in scaler.transitions] == ["CapacityUnavailable", "Ready"]


def test_replicas_not_ready_past_the_bound_then_recovering() -> None:
    bound = unavailable_after(SPEC)
    assert bound == 60 + 120 + 60
    scaler = _scaler()
    scaler.observation = _obs(starting=2)
    refresh(scaler, now=100.0, failure=_no_failure)
    assert _state(scaler)["CapacityUnavailable"] == ("False", "CapacityAvailable")
    refresh(scaler, now=100.0 + bound - 1, failure=_no_failure)
    assert _state(scaler)["CapacityUnavailable"] == ("False", "CapacityAvailable")
    refresh(scaler, now=100.0 + bound + 1, failure=_no_failure)
    assert _state(scaler)["CapacityUnavailable"] == ("True", "ReplicasNotReady")
    since = scaler.conditions["CapacityUnavailable"]["lastTransitionTime"]
    refresh(scaler, now=100.0 + bound + 30, failure=_no_failure)  # message changes, status holds
    assert scaler.conditions["CapacityUnavailable"]["lastTransitionTime"] == since
    assert "not Ready for 270s" in scaler.conditions["CapacityUnavailable"]["message"]
    scaler.observation = _obs(ready=4)
    refresh(scaler, now=400.0, failure=_no_failure)
    assert _state(scaler)["CapacityUnavailable"] == ("False", "CapacityAvailable")
    assert _state(scaler)["Ready"] == ("True", "ScalingNormally")
    kinds = [(t["type"], t["status"]) for t in scaler.transitions]
    assert kinds == [
        ("CapacityUnavailable", "True"),
        ("Ready", "False"),
        ("CapacityUnavailable", "False"),
        ("Ready", "True"),
    ]


def test_nodes_not_ready_past_the_bound() -> None:
    scaler = _scaler()
    scaler.observation = _obs(nodes_starting=1)
    refresh(scaler, now=0.0, failure=_no_failure)
    refresh(scaler, now=181.0, failure=_no_failure)
    assert _state(scaler)["CapacityUnavailable"] == ("True", "NodesNotReady")


# --- against the simulated cluster ------------------------------------------------------------


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed: install Debian's kubernetes-client (.ci/run does)")
    return found


async def _run_kubectl(sim: Sim, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        _kubectl(),
        "--kubeconfig",
        str(sim.kubeconfig),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(Path(sim.kubeconfig).parent), "PATH": os.environ.get("PATH", "")},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_pods_that_never_get_a_gpu_say_capacity_unavailable_in_status_events_and_kubectl(
    sim: Sim, gateway_factory: Callable[[], Gateway]
) -> None:
    # No capacity strategy and a NodePool kept at 0 nodes: the replicas stay Pending.
    await sim.create_model(
        "llama",
        replicas=1,
        capacity={"strategy": "None", "unavailableAfterSeconds": 1},
    )
    ctl = await sim.controller("solo")
    async with gateway_factory() as gw:
        await _ready_leader(ctl, gw)

        async def unavailable() -> dict[str, Any] | None:
            status = await sim.scaler_status("llama")
            conds = {c["type"]: c for c in status.get("conditions") or []}
            cond = conds.get("CapacityUnavailable") or {}
            return conds if cond.get("reason") == "ReplicasNotReady" else None

        conds = await eventually(unavailable, what="CapacityUnavailable: ReplicasNotReady")
        assert conds["CapacityUnavailable"]["status"] == "True"
        assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "ReplicasNotReady")
        assert conds["AbleToScale"]["status"] == "True"
        assert conds["ScalingActive"]["reason"] == "ValidMetricFound"
        assert conds["SpecValid"]["status"] == "True"  # the project's own conditions stay

        async def warned() -> bool:
            return any(r == "ReplicasNotReady" for r, _ in await sim.events("llama"))

        await eventually(warned, what="a Warning Event for the transition")
        wide = await _run_kubectl(sim, "get", "inferencescalers", "-o", "wide")
        header, row = wide.splitlines()[:2]
        assert header.split()[:4] == ["NAME", "TARGET", "MODEL", "MIN"], wide
        assert row.split()[0] == "llama"
        assert "ReplicasNotReady" in row.split(), wide
        described = await _run_kubectl(sim, "describe", "inferencescaler", "llama")
        status_part, events_part = described.split("\nEvents:")
        types = [line.split()[-1] for line in status_part.splitlines() if "Type:" in line]
        assert types[-5:] == [
            "AbleToScale",
            "ScalingActive",
            "ScalingLimited",
            "CapacityUnavailable",
            "Ready",
        ], described
        warnings = [line.split()[:2] for line in events_part.splitlines() if "Warning" in line]
        assert ["Warning", "ReplicasNotReady"] in warnings, described
        # One Event per cause: Ready's echo of ReplicasNotReady is not a second one. (A start
        # that has no gateway data yet may add its own NoEventData warning first; that is another cause.)
        assert warnings.count(["Warning", "ReplicasNotReady"]) == 1, described


def test_status_lists_the_standard_conditions_in_one_order_whichever_came_first() -> None:
    standard = (
        conditions.ABLE_TO_SCALE,
        conditions.SCALING_ACTIVE,
        conditions.SCALING_LIMITED,
        conditions.CAPACITY_UNAVAILABLE,
        conditions.READY,
    )
    assert standard == STANDARD_CONDITIONS
    # CapacityUnavailable set first (e.g. by the CapacityBuffer writer), a project condition between
    kinds = ["CapacityUnavailable", "SpecValid", "Ready", "AbleToScale", "ScalingLimited"]
    kinds += ["ConcurrencyMatchesGateway", "ScalingActive"]
    seen: list[Condition] = [
        {
            "type": kind,
            "status": "True",
            "reason": "Test",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 1,
        }
        for kind in kinds
    ]
    assert [c["type"] for c in ordered_conditions(seen)] == [
        "SpecValid",
        "ConcurrencyMatchesGateway",
        *standard,
    ]


@pytest.mark.parametrize(
    ("section", "field", "value", "named"),
    [
        pytest.param("capacity", "billing", "Spot", "spec.capacity.billing", id="unknown-billing"),
        pytest.param(
            "target",
            "drainHorizonSeconds",
            -5,
            "spec.target.drainHorizonSeconds",
            id="negative-horizon",
        ),
    ],
)
def test_unknown_billing_or_negative_horizon_is_a_condition_naming_the_field(
    section: str, field: str, value: object, named: str
) -> None:
    """Bad input (issue 14): the spec error the loop keeps for the scaler (`Scaler.error`, from
    `crd.parse_spec`) becomes InvalidSpec on AbleToScale, ScalingActive and Ready, its message
    starting with the field's path."""
    raw: dict[str, Any] = {
        "model": "m",
        "scaleTargetRef": {"name": "m"},
        "maxReplicas": 4,
        section: {field: value},
    }
    with pytest.raises(crd.SpecError) as info:
        crd.parse_spec(raw)
    scaler = Scaler(key=("ns", "m"))
    scaler.error = info.value
    refresh(scaler, now=0.0, failure=_no_failure)
    for kind in ("AbleToScale", "ScalingActive", "Ready"):
        cond = scaler.conditions[kind]
        assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec"), kind
        assert cond["message"].startswith(named + ": "), cond["message"]
