"""Fault injection for reliability tests: crash, hang, error rate, slowdown.

Set at start (`PodOptions.faults`, `surgescale sim pod --error-rate ...`) or at run time
(`RunningPod.set_faults(...)`, or `POST /admin/faults` with a JSON object of the fields to change).

- `crash`: the pod dies: listening socket closed, open connections aborted, engine stopped.
  There is no coming back (as with a dead process); start a new pod.
- `hang`: the pod freezes: the engine stops stepping and every non-admin request (including
  `/health`) waits until the hang is cleared.
- `error_rate`: this fraction of completion requests is answered with a 500 error.
- `slowdown`: step times are multiplied by this factor (a throttled or sick GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    crash: bool = False
    hang: bool = False
    error_rate: float = 0.0
    slowdown: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be within [0, 1], got {self.error_rate}")
        if self.slowdown <= 0.0:
            raise ValueError(f"slowdown must be > 0, got {self.slowdown}")

    def as_dict(self) -> dict[str, float | bool]:
        return {
            "crash": self.crash,
            "hang": self.hang,
            "error_rate": self.error_rate,
            "slowdown": self.slowdown,
        }


class FaultsUpdate(BaseModel):
    """The admin endpoint's body: only the fields given change."""

    model_config = ConfigDict(extra="forbid")
    crash: bool | None = None
    hang: bool | None = None
    error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    slowdown: float | None = Field(default=None, gt=0.0)

    def apply(self, faults: Faults) -> Faults:
        changes = self.model_dump(exclude_none=True)
        return replace(faults, **changes)
