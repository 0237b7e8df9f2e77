"""The InferenceScaler schema: generated YAML matches the code, specs validate once, errors name fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from controller.crd import (
    CRD_PATH,
    SpecError,
    crd_manifest,
    parse_spec,
    render_yaml,
    spec_schema,
    status_schema,
    to_policy_spec,
)
from controller.objects import Condition
from controller.policy import Billing

ROOT = Path(__file__).resolve().parents[2]

EXAMPLE: dict[str, Any] = {
    "model": "llama3-8b",
    "scaleTargetRef": {"name": "llama3-8b"},
    "minReplicas": 0,
    "maxReplicas": 12,
    "slo": {"ttftP95Ms": 800, "tpotP95Ms": 60},
    "target": {"concurrencyPerReplica": 24},
    "scaleDown": {"delaySeconds": 120, "maxStep": 2, "periodSeconds": 15},
    "scaleToZero": {"idleSeconds": 900},
    "capacity": {
        "strategy": "StaticNodePool",
        "nodePoolRef": {"name": "gpu"},
        "gpusPerReplica": 2,
        "gpusPerNode": 8,
        "headroomReplicas": 1,
    },
}


def test_generated_yaml_matches_the_code() -> None:
    path = ROOT / CRD_PATH
    assert path.exists(), f"{CRD_PATH} missing: run `python -m controller.crd --write`"
    assert path.read_text() == render_yaml(), (
        f"{CRD_PATH} is out of date: run `python -m controller.crd --write`"
    )
    assert yaml.safe_load(path.read_text()) == crd_manifest()


def test_crd_is_a_valid_kubernetes_object() -> None:
    kubernetes_validate.validate(crd_manifest(), "1.30", strict=True)


def _walk(schema: dict[str, Any], path: str = "spec") -> list[str]:
    """Places where the schema is not structural (Kubernetes' rules that matter to us)."""
    bad = []
    for key in ("$ref", "anyOf", "oneOf", "allOf", "$defs", "additionalProperties", "title"):
        if key in schema:
            bad.append(f"{path}: has {key}")
    if "type" not in schema:
        bad.append(f"{path}: no type")
    for name, sub in schema.get("properties", {}).items():
        bad.extend(_walk(sub, f"{path}.{name}"))
    if "items" in schema:
        bad.extend(_walk(schema["items"], f"{path}[]"))
    return bad


def test_schema_is_structural() -> None:
    root = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(root, "root") == []


def test_example_passes_both_the_crd_schema_and_the_code() -> None:
    jsonschema.Draft4Validator(spec_schema()).validate(EXAMPLE)
    spec = parse_spec(EXAMPLE)
    policy = to_policy_spec(spec)
    assert policy.ttft_slo_s == pytest.approx(0.8)
    assert policy.tpot_slo_s == pytest.approx(0.06)
    assert policy.concurrency_per_replica == 24
    assert policy.scale_down_delay_s == 120
    assert policy.scale_down_max_step == 2
    assert policy.scale_to_zero_idle_s == 900
    assert (policy.gpus_per_replica, policy.gpus_per_node, policy.headroom_replicas) == (2, 8, 1)
    assert spec.capacity.node_pool_ref is not None
    assert spec.capacity.node_pool_ref.name == "gpu"


def test_defaults() -> None:
    spec = parse_spec({"model": "m", "scaleTargetRef": {"name": "d"}})
    policy = to_policy_spec(spec)
    assert policy.min_replicas == 0
    assert policy.max_replicas == 10
    assert policy.ttft_slo_s == 1.0
    assert policy.tpot_slo_s is None
    assert spec.capacity.strategy.value == "None"
    # Node billing; concurrency from the TPOT objective, else the engine's max_num_seqs.
    assert policy.billing is Billing.NODE
    assert policy.concurrency_per_replica is None
    assert policy.max_num_seqs == 256
    assert (policy.cold_start_s, policy.node_boot_s, policy.drain_horizon_s) == (60, 120, None)


def test_billing_and_horizon_reach_the_policy() -> None:
    raw = _with("capacity.billing", "GPU")
    raw["target"].update(drainHorizonSeconds=30, maxNumSeqs=128, coldStartSeconds=20)
    raw["capacity"]["nodeBootSeconds"] = 90
    jsonschema.Draft4Validator(spec_schema()).validate(raw)
    policy = to_policy_spec(parse_spec(raw))
    assert policy.billing is Billing.GPU
    assert (policy.drain_horizon_s, policy.max_num_seqs) == (30, 128)
    assert (policy.cold_start_s, policy.node_boot_s) == (20, 90)


def _with(path: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(EXAMPLE))
    node = out
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return out


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        pytest.param(
            _with("slo.ttftP95Ms", -5), "spec.slo.ttftP95Ms", "greater than 0", id="negative-slo"
        ),
        pytest.param(
            _with("maxReplicas", 0), "spec.maxReplicas", "greater than or equal to 1", id="max-zero"
        ),
        pytest.param(_with("minReplicas", 20), "spec", "exceeds maxReplicas", id="min-over-max"),
        pytest.param(_with("model", ""), "spec.model", "at least 1", id="empty-model"),
        pytest.param(
            _with("capacity.strategy", "Magic"),
            "spec.capacity.strategy",
            "StaticNodePool",
            id="bad-strategy",
        ),
        pytest.param(
            _with("capacity.nodePoolRef", None),
            "spec.capacity",
            "nodePoolRef is required",
            id="missing-nodepool",
        ),
        pytest.param(
            _with("target.concurrencyPerReplica", "lots"),
            "spec.target.concurrencyPerReplica",
            "integer",
            id="not-int",
        ),
        pytest.param(
            _with("scaleDown.delaySecs", 5),
            "spec.scaleDown.delaySecs",
            "not permitted",
            id="typo-field",
        ),
        pytest.param(
            _with("capacity.billing", "Spot"),
            "spec.capacity.billing",
            "'Node' or 'GPU'",
            id="bad-billing",
        ),
        pytest.param(
            _with("target.drainHorizonSeconds", -1),
            "spec.target.drainHorizonSeconds",
            "greater than or equal to 0",
            id="negative-horizon",
        ),
        pytest.param(
            _with("capacity.nodeBootSeconds", -30),
            "spec.capacity.nodeBootSeconds",
            "greater than or equal to 0",
            id="negative-node-boot",
        ),
        pytest.param({"model": "m"}, "spec.scaleTargetRef", "required", id="no-target"),
        pytest.param(None, "spec", "object", id="no-spec"),
    ],
)
def test_invalid_specs_name_the_field(raw: Any, field: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    assert info.value.field == field
    assert words in info.value.message
    assert str(info.value).startswith(field + ": ")


def test_pod_cap_disagreement_is_a_condition() -> None:
    from controller.policy import Observation
    from controller.scaler import CONCURRENCY_CONDITION, Scaler, concurrency_condition

    def seen(cap: int | None, wanted: int | None) -> Condition | None:
        scaler = Scaler(key=("ns", "isc"))
        o = Observation(
            now_data=0.0,
            queue_depth=0,
            in_flight=0,
            ready_replicas=1,
            starting_replicas=0,
            arrival_rate_short=0.0,
            arrival_rate_long=0.0,
            service_rate_per_replica=None,
            ttft_p95_s=None,
            tpot_p95_s=None,
            last_enqueue_at=None,
            pod_cap=cap,
            concurrency_per_replica=wanted,
        )
        concurrency_condition(scaler, o)
        return scaler.conditions.get(CONCURRENCY_CONDITION)

    assert seen(None, 64) is None  # no gateway said its cap yet
    ok = seen(64, 64)
    assert ok is not None
    assert ok["status"] == "True"
    bad = seen(32, 256)
    assert bad is not None
    assert (bad["status"], bad["reason"]) == ("False", "PodCapDiffers")
    assert "32" in bad["message"]
    assert "256" in bad["message"]


def test_the_status_written_is_the_status_in_the_crd() -> None:
    """`ScalerStatus` (what `status_of` writes) and the CRD's status schema list the same fields
    with the same JSON types, and a status built from a decision passes the schema."""
    from typing import get_type_hints

    from controller.objects import Condition, ScalerStatus
    from controller.policy import Decision, Observation, Reason
    from controller.scaler import Scaler, status_of

    schema = status_schema()
    kinds = {int: "integer", float: "number", str: "string", list[Condition]: "array"}
    hints = get_type_hints(ScalerStatus)
    assert {k: kinds[v] for k, v in hints.items()} == {
        k: v["type"] for k, v in schema["properties"].items()
    }
    scaler = Scaler(key=("ns", "isc"), spec=parse_spec(EXAMPLE), generation=3)
    scaler.observation = Observation(
        now_data=1.0,
        queue_depth=4,
        in_flight=2,
        ready_replicas=1,
        starting_replicas=1,
        arrival_rate_short=2.5,
        arrival_rate_long=2.0,
        service_rate_per_replica=None,
        ttft_p95_s=0.25,
        tpot_p95_s=None,
        last_enqueue_at=0.5,
    )
    scaler.decision = Decision(replicas=3, nodes=1, reason=Reason.SCALE_UP, valid=True)
    scaler.set_condition("Ready", True, "ScalingNormally", "fine")
    status = status_of(scaler)
    assert "tpotP95Ms" not in status  # unknown: left out, not null
    assert (status["ttftP95Ms"], status["desiredReplicas"]) == (250.0, 3)
    jsonschema.validate(status, schema)
