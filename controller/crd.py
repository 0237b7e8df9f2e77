"""The InferenceScaler custom resource: one schema in code, the CRD YAML generated from it.

`InferenceScalerSpec` (pydantic, camelCase on the wire) is the only definition of the spec. It is
validated once, where a resource enters the controller (`parse_spec`), and a bad spec raises
`SpecError` naming the field (`spec.slo.ttftP95Ms: ...`) so the controller can report it in a
condition instead of crashing. `crd_manifest()` turns the same models into the
`apiextensions.k8s.io/v1` CustomResourceDefinition (a structural OpenAPI v3 schema with printer
columns and a status subresource); `python -m controller.crd --write` regenerates
`manifests/base/crd/inferencescalers.surgescale.io.yaml`, and a test proves the two agree.
`to_policy_spec` maps a spec to the pure policy's `PolicySpec`.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from controller.policy import Billing, PolicySpec

GROUP: Final = "surgescale.io"
VERSION: Final = "v1alpha1"
KIND: Final = "InferenceScaler"
PLURAL: Final = "inferencescalers"
SINGULAR: Final = "inferencescaler"
SHORT_NAMES: Final = ["isc"]
CRD_PATH: Final = Path("manifests/base/crd/inferencescalers.surgescale.io.yaml")


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ScaleTargetRef(_Model):
    """The Deployment whose `scale` subresource the controller sets."""

    api_version: str = Field("apps/v1", description="API version of the target.")
    kind: str = Field("Deployment", pattern="^Deployment$", description="Kind of the target.")
    name: str = Field(min_length=1, description="Name of the Deployment, same namespace.")


class Slo(_Model):
    """Latency objectives the replica count is sized for."""

    ttft_p95_ms: float = Field(1000.0, gt=0, description="Time to first token, p95, in ms.")
    tpot_p95_ms: float | None = Field(
        None, gt=0, description="Time per output token, p95, in ms (optional)."
    )


class Target(_Model):
    """How much work one replica takes."""

    concurrency_per_replica: int | None = Field(
        None,
        ge=1,
        description="Requests one replica serves at once, fixed. Unset: the largest batch whose "
        "TPOT p95 meets slo.tpotP95Ms (learned from the events), or maxNumSeqs without one.",
    )
    max_num_seqs: int = Field(
        256, ge=1, description="The engine's batch limit (vLLM --max-num-seqs)."
    )
    cold_start_seconds: float = Field(
        60.0, ge=0, description="Pod creation to Ready (model load) on a node with a free GPU."
    )
    drain_horizon_seconds: float | None = Field(
        None,
        ge=0,
        description="Seconds to drain a queue in. Unset: when new capacity can arrive (cold "
        "start, plus node boot when new nodes are needed), at least the TTFT SLO.",
    )
    prior_request_seconds: float = Field(
        4.0,
        gt=0,
        description="Typical in-pod request time assumed before a service rate is observed.",
    )
    utilization: float = Field(
        0.9, gt=0, le=1, description="Fraction of a replica's service rate to plan for."
    )


class ScaleDown(_Model):
    """Stabilization and rate limit of scale-down."""

    delay_seconds: float = Field(
        300.0,
        ge=0,
        description="Stabilization window: scale down only to the highest recommendation seen in it.",
    )
    max_step: int = Field(1, ge=1, description="At most this many replicas removed per period.")
    period_seconds: float = Field(30.0, ge=0, description="Rate-limit period, in seconds.")


class ScaleToZero(_Model):
    """Scale to zero after an idle period (needs minReplicas 0)."""

    idle_seconds: float | None = Field(
        600.0, ge=0, description="Idle time before scaling to zero; null disables it."
    )


class CapacityStrategy(enum.StrEnum):
    """How GPU nodes are brought up with the replicas."""

    STATIC_NODE_POOL = "StaticNodePool"
    HEADROOM = "Headroom"
    CAPACITY_BUFFER = "CapacityBuffer"
    NONE = "None"


class NameRef(_Model):
    """A reference by name."""

    name: str = Field(min_length=1, description="Object name.")


class Capacity(_Model):
    """GPU nodes for the replicas."""

    strategy: CapacityStrategy = Field(
        CapacityStrategy.NONE,
        description="StaticNodePool: PATCH nodepools/{name}/scale; Headroom: size a placeholder "
        "Deployment; CapacityBuffer: size a CapacityBuffer (autoscaling.x-k8s.io) whose chunks "
        "are one replica's GPUs; None: leave nodes to the cluster.",
    )
    node_pool_ref: NameRef | None = Field(
        None, description="Karpenter NodePool (cluster-scoped) for StaticNodePool."
    )
    headroom_deployment_ref: NameRef | None = Field(
        None, description="Deployment of low-priority placeholder pods, for Headroom."
    )
    capacity_buffer_ref: NameRef | None = Field(
        None,
        description="CapacityBuffer (autoscaling.x-k8s.io, same namespace) for CapacityBuffer: "
        "the controller sets its spec.replicas to the spare replicas' worth of GPUs to keep warm.",
    )
    gpus_per_replica: int = Field(1, ge=1, description="GPUs one replica uses.")
    gpus_per_node: int = Field(8, ge=1, description="GPUs one node has.")
    headroom_replicas: int = Field(0, ge=0, description="Spare replicas' worth of nodes to keep.")
    billing: Billing = Field(
        Billing.NODE,
        description="Node: whole nodes are billed, so replicas fill the nodes kept and go only "
        "with a node; GPU: GPU-seconds are billed (GPUs shared with other workloads).",
    )
    node_boot_seconds: float = Field(120.0, ge=0, description="Node launch to Ready.")
    unavailable_after_seconds: float | None = Field(
        None,
        ge=0,
        description="Replicas not Ready (or nodes not Ready) this long set the condition "
        "CapacityUnavailable. Unset: cold start + node boot + 60 s.",
    )

    @model_validator(mode="after")
    def _refs(self) -> Capacity:
        if self.strategy is CapacityStrategy.STATIC_NODE_POOL and self.node_pool_ref is None:
            raise ValueError("nodePoolRef is required when strategy is StaticNodePool")
        if self.strategy is CapacityStrategy.HEADROOM and self.headroom_deployment_ref is None:
            raise ValueError("headroomDeploymentRef is required when strategy is Headroom")
        if self.strategy is CapacityStrategy.CAPACITY_BUFFER and self.capacity_buffer_ref is None:
            raise ValueError("capacityBufferRef is required when strategy is CapacityBuffer")
        return self


class InferenceScalerSpec(_Model):
    """What one InferenceScaler asks for."""

    model: str = Field(min_length=1, description="Served model name the gateway routes on.")
    scale_target_ref: ScaleTargetRef = Field(description="The model's Deployment.")
    min_replicas: int = Field(0, ge=0, description="Lower bound (0 allows scale to zero).")
    max_replicas: int = Field(10, ge=1, description="Upper bound.")
    slo: Slo = Field(default_factory=Slo, description="Latency objectives.")
    target: Target = Field(default_factory=Target, description="Per-replica load.")
    scale_down: ScaleDown = Field(default_factory=ScaleDown, description="Scale-down behaviour.")
    scale_to_zero: ScaleToZero = Field(
        default_factory=ScaleToZero, description="Scale-to-zero behaviour."
    )
    capacity: Capacity = Field(default_factory=Capacity, description="GPU node capacity.")
    stale_after_seconds: float = Field(
        5.0, gt=0, description="Older data means 'cannot decide': hold, never scale down."
    )

    @model_validator(mode="after")
    def _bounds(self) -> InferenceScalerSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) exceeds maxReplicas ({self.max_replicas})"
            )
        return self


class SpecError(ValueError):
    """An invalid InferenceScaler spec; `field` is the dotted path of the first bad field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_spec(raw: Mapping[str, Any] | None) -> InferenceScalerSpec:
    """Validate `spec` of an InferenceScaler object; raise `SpecError` naming the bad field."""
    if not isinstance(raw, Mapping):
        raise SpecError("spec", "must be an object")
    try:
        return InferenceScalerSpec.model_validate(dict(raw))
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        path = ".".join(str(p) for p in ("spec", *first["loc"]))
        message = str(first["msg"]).removeprefix("Value error, ")
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        raise SpecError(path, message) from exc


def to_policy_spec(spec: InferenceScalerSpec) -> PolicySpec:
    """The pure policy's view of a spec."""
    return PolicySpec(
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        ttft_slo_s=spec.slo.ttft_p95_ms / 1000.0,
        tpot_slo_s=None if spec.slo.tpot_p95_ms is None else spec.slo.tpot_p95_ms / 1000.0,
        concurrency_per_replica=spec.target.concurrency_per_replica,
        scale_down_delay_s=spec.scale_down.delay_seconds,
        scale_down_max_step=spec.scale_down.max_step,
        scale_down_period_s=spec.scale_down.period_seconds,
        scale_to_zero_idle_s=spec.scale_to_zero.idle_seconds,
        gpus_per_replica=spec.capacity.gpus_per_replica,
        gpus_per_node=spec.capacity.gpus_per_node,
        headroom_replicas=spec.capacity.headroom_replicas,
        billing=spec.capacity.billing,
        node_boot_s=spec.capacity.node_boot_seconds,
        cold_start_s=spec.target.cold_start_seconds,
        drain_horizon_s=spec.target.drain_horizon_seconds,
        max_num_seqs=spec.target.max_num_seqs,
        stale_after_s=spec.stale_after_seconds,
        prior_request_seconds=spec.target.prior_request_seconds,
        target_utilization=spec.target.utilization,
    )


# --- CRD generation ------------------------------------------------------------------------

_DROP: Final = {"title", "additionalProperties", "$defs"}


def structural(schema: Mapping[str, Any], defs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pydantic JSON schema -> Kubernetes structural schema: refs inlined, nullables marked."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        target = dict(defs[schema["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        return structural({**target, **extra}, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {schema['anyOf']!r} structurally")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        out = structural({**options[0], **rest}, defs)
        if nullable:
            out["nullable"] = True
        return out
    if "allOf" in schema and len(schema["allOf"]) == 1:
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return structural({**schema["allOf"][0], **rest}, defs)
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP:
            continue
        if key == "properties":
            result[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            result[key] = structural(value, defs)
        elif key == "exclusiveMinimum":
            result["minimum"] = value
            result["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum":
            result["maximum"] = value
            result["exclusiveMaximum"] = True
        else:
            result[key] = value
    if result.get("default", 0) is None:
        del result["default"]  # "absent" and "null" mean the same to us
    if "enum" in result and "type" not in result:
        result["type"] = "string"
    if result.get("type") == "object" and "properties" in result and "default" in result:
        del result["default"]  # object defaults come from their fields' own defaults
    return result


def _condition_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer"},
        },
    }


def status_schema() -> dict[str, Any]:
    """The status the controller writes back (see `controller.scaler.status_of`)."""
    num = {"type": "number"}
    integer = {"type": "integer"}
    return {
        "type": "object",
        "properties": {
            "observedGeneration": integer,
            "queueDepth": integer,
            "inFlight": integer,
            "arrivalRate": num,
            "ttftP95Ms": num,
            "tpotP95Ms": num,
            "desiredReplicas": integer,
            "currentReplicas": integer,
            "readyReplicas": integer,
            "startingReplicas": integer,
            "desiredNodes": integer,
            "readyNodes": integer,
            "warmReplicas": integer,
            "lastScaleTime": {"type": "string", "format": "date-time"},
            "lastScaleReason": {"type": "string"},
            "conditions": {
                "type": "array",
                "items": _condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    }


def _column(
    name: str, kind: str, path: str, description: str, *, wide: bool = False
) -> dict[str, Any]:
    column: dict[str, Any] = {
        "name": name,
        "type": kind,
        "jsonPath": path,
        "description": description,
    }
    if wide:
        column["priority"] = 1  # `kubectl get -o wide` only
    return column


def _condition_path(kind: str, field: str = "status") -> str:
    return f'.status.conditions[?(@.type=="{kind}")].{field}'


PRINTER_COLUMNS: Final = [
    _column("Target", "string", ".spec.scaleTargetRef.name", "The scaled Deployment."),
    _column("Model", "string", ".spec.model", "Served model name.", wide=True),
    _column("Min", "integer", ".spec.minReplicas", "Lower bound.", wide=True),
    _column("Max", "integer", ".spec.maxReplicas", "Upper bound.", wide=True),
    _column("Desired", "integer", ".status.desiredReplicas", "Replicas the policy wants."),
    _column("Current", "integer", ".status.currentReplicas", "Replicas the Deployment has."),
    _column("Starting", "integer", ".status.startingReplicas", "Not Ready yet.", wide=True),
    _column("Queue", "integer", ".status.queueDepth", "Requests waiting at the gateway."),
    _column("TTFT-P95-ms", "number", ".status.ttftP95Ms", "Time to first token, p95."),
    _column("Nodes", "integer", ".status.desiredNodes", "GPU nodes wanted.", wide=True),
    _column("Warm", "integer", ".status.warmReplicas", "Spare replicas kept warm.", wide=True),
    _column("Ready", "string", _condition_path("Ready"), "Scaling and capacity are fine."),
    _column("Reason", "string", _condition_path("Ready", "reason"), "Why not.", wide=True),
    _column("Age", "date", ".metadata.creationTimestamp", "Age."),
]


def spec_schema() -> dict[str, Any]:
    """The structural OpenAPI v3 schema of `spec`, derived from `InferenceScalerSpec`."""
    return structural(InferenceScalerSpec.model_json_schema(by_alias=True, mode="validation"))


def crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Autoscales one model's Deployment (and GPU nodes) "
                            "from the gateway's request events.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_yaml() -> str:
    """The CRD as the YAML text kept in `manifests/`."""
    header = (
        "# Generated by `python -m controller.crd --write` from controller/crd.py. Do not edit.\n"
    )
    return header + yaml.safe_dump(crd_manifest(), sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    """Print the CRD YAML, or `--write` it to the manifests path (relative to `--root`)."""
    parser = argparse.ArgumentParser(prog="python -m controller.crd", description=main.__doc__)
    parser.add_argument("--write", action="store_true", help=f"write {CRD_PATH}")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root")
    args = parser.parse_args(argv)
    text = render_yaml()
    if args.write:
        path = args.root / CRD_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
