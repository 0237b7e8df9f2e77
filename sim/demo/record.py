"""What one demo run recorded: requests as the client saw them, the cluster over time, decisions.

Frozen dataclasses (requests are the load generator's `sim.load.records.RequestResult`, the one
request-result type), filled by the live run (`sim.demo.stack`) and read by the summary
(`sim.demo.summary`) and the report (`sim.demo.report`). Times are seconds since the run's start
(the moment the load generator began), on the machine's monotonic clock. `to_json` / `from_json`
keep a run on disk next to its report so a report can be rebuilt without running again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from sim.load.records import RequestResult
from surgescale.slo import Slo


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSample:
    """The model's Deployment and the GPU NodePool at time `t`."""

    t: float
    replicas_desired: int
    replicas_starting: int
    """Pods created but not Ready (Pending, or loading the model)."""
    replicas_ready: int
    nodes_desired: int
    nodes_ready: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleChange:
    """A change of a desired size seen on the API server (the effect of a scale PATCH)."""

    t: float
    target: str
    """"replicas" or "nodes"."""
    old: int
    new: int
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """Everything one run of the scenario produced."""

    name: str
    """Short id of the autoscaler: "surgescale" or "keda"."""
    label: str
    """Human label for the report."""
    slo_s: float
    speed: float
    duration_s: float
    load_step_at: float | None
    """When the burst started (None for trace replays without a designated step)."""
    burst_end_at: float | None
    gpus_per_replica: int
    gpus_per_node: int
    requests: tuple[RequestResult, ...] = ()
    cluster: tuple[ClusterSample, ...] = ()
    changes: tuple[ScaleChange, ...] = ()
    pod_ready_at: tuple[float, ...] = ()
    """Times at which a pod became Ready (pods Ready at the start are not listed)."""
    node_ready_at: tuple[float, ...] = ()
    notes: tuple[str, ...] = field(default=())
    event_counts: tuple[tuple[str, int], ...] = ()
    """Counts of the gateway's events seen during the run (enqueued, completed, rejected)."""
    slo_per_input_token_s: float = 0.0
    """The SLO's TTFT allowance per prompt token (0: a flat `slo_s`)."""

    def objective(self) -> Slo:
        """The run's SLO: what "within SLO" means in its summary (`surgescale.slo.Slo`)."""
        return Slo(ttft_base_s=self.slo_s, ttft_per_input_token_s=self.slo_per_input_token_s)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @staticmethod
    def from_json(raw: bytes | str) -> RunRecord:
        data: dict[str, Any] = orjson.loads(raw)
        return RunRecord(
            name=data["name"],
            label=data["label"],
            slo_s=data["slo_s"],
            speed=data["speed"],
            duration_s=data["duration_s"],
            load_step_at=data["load_step_at"],
            burst_end_at=data["burst_end_at"],
            gpus_per_replica=data["gpus_per_replica"],
            gpus_per_node=data["gpus_per_node"],
            requests=tuple(_request(r) for r in data["requests"]),
            cluster=tuple(ClusterSample(**c) for c in data["cluster"]),
            changes=tuple(ScaleChange(**c) for c in data["changes"]),
            pod_ready_at=tuple(data["pod_ready_at"]),
            node_ready_at=tuple(data["node_ready_at"]),
            notes=tuple(data.get("notes", ())),
            event_counts=tuple((str(k), int(v)) for k, v in data.get("event_counts", ())),
            slo_per_input_token_s=float(data.get("slo_per_input_token_s", 0.0)),
        )


def _request(data: dict[str, Any]) -> RequestResult:
    """A request of a run file; files written before the one request-result type kept
    `sent_at`, an HTTP status as bare digits and `prompt_tokens` (possibly null)."""
    if "sent_at" not in data:
        return RequestResult(**data)
    status = str(data["status"])
    return RequestResult(
        scheduled_s=data["sent_at"],
        sent_s=data["sent_at"],
        status=f"http_{status}" if status.isdigit() else status,
        ttft_s=data.get("ttft_s"),
        e2e_s=data.get("e2e_s"),
        output_tokens=data.get("output_tokens", 0),
        prompt_tokens=data.get("prompt_tokens") or 0,
    )
