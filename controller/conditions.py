"""The standard conditions of an InferenceScaler, in the HorizontalPodAutoscaler's vocabulary.

`refresh(scaler, now=..., failure=...)` derives, from what the loop already knows about a scaler
(its spec or spec error, the `TargetFound` / `TargetAllowed` / `DataAvailable` conditions, the
last observation and decision) and from the actuator's last write errors:

| type | True | False |
|---|---|---|
| `AbleToScale` | `ReadyForNewScale`, `ScaleDownStabilized` | `InvalidSpec`, `FailedGetScale`, `TargetNotOptedIn`, `FailedUpdateScale` |
| `ScalingActive` | `ValidMetricFound` | `InvalidSpec`, `NoEventData`, `StaleEventData` |
| `ScalingLimited` | `TooManyReplicas`, `TooFewReplicas` | `DesiredWithinRange` |
| `CapacityUnavailable` | `ReplicasNotReady`, `NodesNotReady`, `CapacityBufferCRDMissing`, `CapacityBufferNotFound`, `TargetNotOptedIn` | `CapacityAvailable` |
| `Ready` | `ScalingNormally` | the first failing condition's reason |

`ScalingLimited` follows the policy's recommendation, which is already clamped: at the bound it
says the bound holds the count (`TooManyReplicas` at `maxReplicas` while scaling up would be
wanted). `CapacityUnavailable` turns True when replicas stayed not Ready (Pending: unschedulable,
or loading) or nodes stayed on their way, without a break, for longer than
`capacity.unavailableAfterSeconds` (default: cold start + node boot + 60 s), or when the capacity
target cannot be written for a reason retrying will not fix (`controller.buffer`).

Pure: time is the `now` argument (the controller's clock). Transitions become Events in
`controller.report`; `lastTransitionTime` changes only with the status (`Scaler.set_condition`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from controller import crd
from controller.actuator import RecheckableError, ScaleTarget
from controller.policy import Reason
from controller.scaler import Scaler
from surgescale.retry import PermanentError

ABLE_TO_SCALE: Final = "AbleToScale"
SCALING_ACTIVE: Final = "ScalingActive"
SCALING_LIMITED: Final = "ScalingLimited"
CAPACITY_UNAVAILABLE: Final = "CapacityUnavailable"
READY: Final = "Ready"

GRACE_S: Final = 60.0
"""Slack past cold start + node boot before missing capacity is reported."""

Failure = Callable[[ScaleTarget], "PermanentError | None"]

_STABILIZING = {Reason.HOLD_STABILIZING, Reason.HOLD_RATE_LIMIT, Reason.KEEP_NODE}


def unavailable_after(spec: crd.InferenceScalerSpec) -> float:
    """Seconds replicas or nodes may stay on their way before capacity counts as unavailable."""
    cap = spec.capacity
    if cap.unavailable_after_seconds is not None:
        return cap.unavailable_after_seconds
    boot = 0.0 if cap.strategy is crd.CapacityStrategy.NONE else cap.node_boot_seconds
    return spec.target.cold_start_seconds + boot + GRACE_S


def refresh(scaler: Scaler, *, now: float, failure: Failure) -> None:
    """Bring the standard conditions of `scaler` up to date (see the module docstring)."""
    blocked = _able_to_scale(scaler, failure)
    inactive = _scaling_active(scaler)
    _scaling_limited(scaler)
    short = _capacity(scaler, now, failure)
    first = next((r for r in (blocked, inactive, short) if r is not None), None)
    if first is None:
        scaler.set_condition(
            READY, True, "ScalingNormally", "scaling on current events", notify=True
        )
    else:
        scaler.set_condition(READY, False, first[0], first[1], notify=True)


def _condition(scaler: Scaler, kind: str) -> tuple[bool, str, str] | None:
    cond = scaler.conditions.get(kind)
    if cond is None:
        return None
    return cond["status"] == "True", cond["reason"], cond["message"]


def _able_to_scale(scaler: Scaler, failure: Failure) -> tuple[str, str] | None:
    problem: tuple[str, str] | None = None
    if scaler.error is not None:
        problem = ("InvalidSpec", str(scaler.error))
    else:
        found = _condition(scaler, "TargetFound")
        allowed = _condition(scaler, "TargetAllowed")
        target = scaler.deployment()
        error = None if target is None else failure(target)
        if found is not None and not found[0]:
            problem = ("FailedGetScale", found[2])
        elif allowed is not None and not allowed[0]:
            problem = ("TargetNotOptedIn", allowed[2])
        elif error is not None:
            problem = ("FailedUpdateScale", f"the last scale write failed: {error}")
    if problem is not None:
        scaler.set_condition(ABLE_TO_SCALE, False, *problem, notify=True)
        return problem
    decision = scaler.decision
    if decision is not None and decision.valid and decision.reason in _STABILIZING:
        scaler.set_condition(
            ABLE_TO_SCALE,
            True,
            "ScaleDownStabilized",
            f"recent recommendations were higher than the current one: {decision.describe()}",
            notify=True,
        )
    else:
        scaler.set_condition(
            ABLE_TO_SCALE,
            True,
            "ReadyForNewScale",
            "recommended size matches the current size, or a new one can be written",
            notify=True,
        )
    return None


def _scaling_active(scaler: Scaler) -> tuple[str, str] | None:
    decision = scaler.decision
    problem: tuple[str, str] | None = None
    if scaler.error is not None:
        problem = ("InvalidSpec", str(scaler.error))
    elif decision is None:
        problem = ("NoEventData", "no evaluation yet")
    elif not decision.valid:
        reason = "StaleEventData" if decision.reason is Reason.STALE_DATA else "NoEventData"
        problem = (reason, f"cannot decide, holding the size: {decision.describe()}")
    if problem is not None:
        scaler.set_condition(SCALING_ACTIVE, False, *problem, notify=True)
        return problem
    assert decision is not None
    obs = scaler.observation
    inputs = "" if obs is None else f" (queue {obs.queue_depth}, in flight {obs.in_flight})"
    scaler.set_condition(
        SCALING_ACTIVE,
        True,
        "ValidMetricFound",
        f"the replica count is computed from the gateway's events{inputs}",
        notify=True,
    )
    return None


def _scaling_limited(scaler: Scaler) -> None:
    spec, decision = scaler.spec, scaler.decision
    if spec is None or decision is None or not decision.valid:
        return
    if decision.recommended >= spec.max_replicas and decision.replicas >= spec.max_replicas:
        scaler.set_condition(
            SCALING_LIMITED,
            True,
            "TooManyReplicas",
            f"the desired replica count is capped at maxReplicas ({spec.max_replicas})",
            notify=True,
        )
    elif spec.min_replicas > 0 and decision.recommended <= spec.min_replicas == decision.replicas:
        scaler.set_condition(
            SCALING_LIMITED,
            True,
            "TooFewReplicas",
            f"the desired replica count is held at minReplicas ({spec.min_replicas})",
            notify=True,
        )
    else:
        scaler.set_condition(
            SCALING_LIMITED,
            False,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
            notify=True,
        )


def _capacity(scaler: Scaler, now: float, failure: Failure) -> tuple[str, str] | None:
    spec = scaler.spec
    if spec is None:
        return None
    node_target = scaler.node_target()
    error = None if node_target is None else failure(node_target)
    problem: tuple[str, str] | None = None
    if isinstance(error, RecheckableError):
        problem = (error.reason, str(error))
    obs = scaler.observation
    bound = unavailable_after(spec)
    if obs is not None:
        scaler.starting_since = (
            (scaler.starting_since if scaler.starting_since is not None else now)
            if obs.starting_replicas > 0
            else None
        )
        scaler.nodes_starting_since = (
            (scaler.nodes_starting_since if scaler.nodes_starting_since is not None else now)
            if obs.starting_nodes > 0
            else None
        )
        if problem is None and scaler.starting_since is not None:
            waited = now - scaler.starting_since
            if waited > bound:
                problem = (
                    "ReplicasNotReady",
                    f"{obs.starting_replicas} replica(s) not Ready for {waited:.0f}s (over "
                    f"{bound:.0f}s): Pending pods find no GPU, or nodes do not come",
                )
        if problem is None and scaler.nodes_starting_since is not None:
            waited = now - scaler.nodes_starting_since
            node_bound = spec.capacity.node_boot_seconds + GRACE_S
            if spec.capacity.unavailable_after_seconds is not None:
                node_bound = spec.capacity.unavailable_after_seconds
            if waited > node_bound:
                problem = (
                    "NodesNotReady",
                    f"{obs.starting_nodes} node(s) on their way for {waited:.0f}s (over "
                    f"{node_bound:.0f}s): NodeClaims do not launch or register",
                )
    if problem is not None:
        scaler.set_condition(CAPACITY_UNAVAILABLE, True, *problem, notify=True)
        return problem
    if obs is None:
        return None
    scaler.set_condition(
        CAPACITY_UNAVAILABLE,
        False,
        "CapacityAvailable",
        f"{obs.ready_replicas} replica(s) Ready, {obs.starting_replicas} starting "
        f"(reported after {bound:.0f}s)",
        notify=True,
    )
    return None
