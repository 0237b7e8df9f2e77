"""Names of the Redis keys the event transport uses.

One stream per model, so ordering holds per model and a consumer can spread models across
readers. The model name sits in a hash tag (`{...}`) so each model's keys map to one Redis Cluster
slot. A set lists the streams so that consumers discover new models while running (and, should the
set be lost with a Redis that restarted empty, `stream_pattern` finds them by SCAN); one
dead-letter stream holds entries that could not be processed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """Key names under one prefix (tests use a uuid prefix so they can share a server)."""

    prefix: str = "surgescale"

    def stream(self, model: str) -> str:
        """The event stream of one model."""
        return f"{self.prefix}:events:{{{model}}}"

    @property
    def stream_pattern(self) -> str:
        """A SCAN MATCH pattern for every event stream under this prefix."""
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        return f"{escaped}:events:{{*}}"

    @property
    def registry(self) -> str:
        """A set holding the names of all event streams."""
        return f"{self.prefix}:streams"

    @property
    def dead_letter(self) -> str:
        """The dead-letter stream: poison entries with the reason they were set aside."""
        return f"{self.prefix}:deadletter"

    def model_of(self, stream: str) -> str | None:
        """The model of a stream name made by `stream`, or None for any other key."""
        head = f"{self.prefix}:events:{{"
        if stream.startswith(head) and stream.endswith("}"):
            return stream[len(head) : -1]
        return None
