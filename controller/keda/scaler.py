"""KEDA's external scaler API over the gateway's events: queue depth, in-flight, activation.

`QueueSignal` reads every model's event stream with a consumer group of its own (so it takes
nothing from the controller's) and folds the events into the controller's per-model state
(`controller.state.StateStore`: per-gateway queue depth and in-flight, moved by each event and
set absolutely by the gateways' snapshots every ~100 ms). `ExternalScaler` answers KEDA:

- `IsActive` / `StreamIsActive`: the model has load (queued + in flight) above the trigger's
  `activationLoad` (default 0). The stream sends the current state at once and then every
  change as soon as the event that caused it is read: the `enqueue` of a request at zero
  replicas activates the ScaledObject without waiting for KEDA's polling interval.
- `GetMetricSpec`: one metric, `surgescale-<model>`, with the trigger's `targetPerReplica`
  (default 32: the queued + in-flight requests one replica should carry; KEDA's HPA divides).
- `GetMetrics`: the model's load (`metric: load`, default) or queue depth (`metric: queue`).

Trigger metadata is checked on every call: a missing `model`, a model this scaler was not
started for, an unknown `metric` or a bad number is a gRPC INVALID_ARGUMENT naming the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from controller.keda import externalscaler_pb2 as pb
from controller.keda import externalscaler_pb2_grpc as pb_grpc
from controller.state import StateSettings, StateStore
from surgescale.events import EventConsumer, RedisClient, StreamKeys

log = logging.getLogger(__name__)

DEFAULT_TARGET = 32.0
METRICS = ("load", "queue")
GROUP_PREFIX = "surgescale-keda-"


class BadMetadata(ValueError):
    """Trigger metadata this scaler cannot serve (answered as INVALID_ARGUMENT)."""


@dataclass(frozen=True, slots=True)
class Trigger:
    """A ScaledObject trigger's metadata, validated."""

    model: str
    metric: str = "load"
    target: float = DEFAULT_TARGET
    activation: float = 0.0

    @property
    def metric_name(self) -> str:
        return f"surgescale-{self.model}"

    @classmethod
    def parse(cls, metadata: Mapping[str, str], models: Collection[str]) -> Trigger:
        model = metadata.get("model", "").strip()
        if not model:
            raise BadMetadata("trigger metadata needs `model` (the served model name)")
        if model not in models:
            known = ", ".join(sorted(models))
            raise BadMetadata(f"model {model!r} is not served by this scaler (known: {known})")
        metric = metadata.get("metric", "load").strip()
        if metric not in METRICS:
            raise BadMetadata(f"metric {metric!r} is not one of {', '.join(METRICS)}")
        return cls(
            model=model,
            metric=metric,
            target=_number(metadata, "targetPerReplica", DEFAULT_TARGET, positive=True),
            activation=_number(metadata, "activationLoad", 0.0, positive=False),
        )


def _number(metadata: Mapping[str, str], key: str, default: float, *, positive: bool) -> float:
    text = metadata.get(key)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadMetadata(f"{key} must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise BadMetadata(f"{key} must be a finite number {bound}, got {text!r}")
    return value


class QueueSignal:
    """Per-model queue depth and in-flight from the event streams, with change notification."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        models: Collection[str],
        keys: StreamKeys,
        identity: str,
        block_ms: int = 50,
    ) -> None:
        self.models = frozenset(models)
        self.store = StateStore(StateSettings())
        self._changed: dict[str, asyncio.Event] = {}
        self.consumer = EventConsumer(
            redis,
            group=GROUP_PREFIX + identity,
            consumer=identity,
            keys=keys,
            start_id="$",
            block_ms=block_ms,
            discover_interval_s=0.5,
            stale_group_prefix=GROUP_PREFIX,
        )
        self.reading = asyncio.Event()

    def load(self, model: str) -> tuple[int, int]:
        """(queued, in flight) of `model` as last heard (0, 0 before any event)."""
        state = self.store.models.get(model)
        return (0, 0) if state is None else (state.queue_depth, state.in_flight)

    def changed(self, model: str) -> asyncio.Event:
        """Set whenever `model`'s events were folded in (the waiter clears it)."""
        event = self._changed.get(model)
        if event is None:
            event = self._changed[model] = asyncio.Event()
        return event

    async def run(self, forget_every_s: float = 1.0) -> None:
        """Read and fold events until cancelled (Redis trouble is retried by the consumer);
        every `forget_every_s`, gateways silent for several snapshot intervals are dropped
        (their requests went with them), even when no event comes at all."""
        loop = asyncio.get_running_loop()
        await self.consumer.discover()
        self.reading.set()
        forgetting = asyncio.create_task(self._forget(forget_every_s), name="keda-forget")
        try:
            async for batch in self.consumer.batches():
                now = loop.time()
                events = [e for e in batch.events if e.model in self.models]
                for model in self.store.ingest(events, now, wall_ms=time.time_ns() // 1_000_000):
                    self.changed(model).set()
                try:
                    await batch.ack()
                except Exception as exc:  # kept by the consumer, retried before its next read
                    log.warning("ack failed (will retry): %r", exc)
        finally:
            forgetting.cancel()

    async def _forget(self, every_s: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every_s)
            now = loop.time()
            for name, state in self.store.models.items():
                if state.forget_silent(now):
                    self.changed(name).set()

    def stop(self) -> None:
        """Make `run` return after its current read. Call it before cancelling `run`'s task: a
        cancellation that lands inside the Redis client's read can be lost, the stop flag not."""
        self.consumer.stop()

    async def close(self) -> None:
        self.consumer.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.consumer.remove_group(), 2.0)


class ExternalScaler(pb_grpc.ExternalScalerServicer):
    """The `externalscaler.ExternalScaler` service over a `QueueSignal`."""

    def __init__(self, signal: QueueSignal, *, heartbeat_s: float = 5.0) -> None:
        self.signal = signal
        self.heartbeat_s = heartbeat_s
        """StreamIsActive re-checks this often even without events (e.g. a gateway forgotten)."""

    def _trigger(
        self, ref: pb.ScaledObjectRef, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Trigger | None:
        """The trigger, or None with INVALID_ARGUMENT set on `context` (the caller returns).

        The status is set rather than raised with `context.abort`: an aborted call's task can
        outlive the RPC and hold up the server's shutdown (grpc/grpc#37239)."""
        try:
            return Trigger.parse(dict(ref.scalerMetadata), self.signal.models)
        except BadMetadata as exc:
            where = f"ScaledObject {ref.namespace}/{ref.name}: " if ref.name else ""
            context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            context.set_details(where + str(exc))
            return None

    def _value(self, trigger: Trigger) -> float:
        queued, in_flight = self.signal.load(trigger.model)
        return float(queued if trigger.metric == "queue" else queued + in_flight)

    def _active(self, trigger: Trigger) -> bool:
        queued, in_flight = self.signal.load(trigger.model)
        return queued + in_flight > trigger.activation

    async def IsActive(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.IsActiveResponse:
        trigger = self._trigger(request, context)
        return pb.IsActiveResponse(result=trigger is not None and self._active(trigger))

    async def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.IsActiveResponse]:
        trigger = self._trigger(request, context)
        if trigger is None:
            return
        changed = self.signal.changed(trigger.model)
        sent: bool | None = None
        while True:
            active = self._active(trigger)
            if active != sent:
                yield pb.IsActiveResponse(result=active)
                sent = active
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self.heartbeat_s)

    async def GetMetricSpec(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetMetricSpecResponse:
        trigger = self._trigger(request, context)
        if trigger is None:
            return pb.GetMetricSpecResponse()
        spec = pb.MetricSpec(
            metricName=trigger.metric_name,
            targetSize=max(round(trigger.target), 1),
            targetSizeFloat=trigger.target,
        )
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetMetricsResponse:
        trigger = self._trigger(request.scaledObjectRef, context)
        if trigger is None:
            return pb.GetMetricsResponse()
        value = self._value(trigger)
        metric = pb.MetricValue(
            metricName=request.metricName or trigger.metric_name,
            metricValue=round(value),
            metricValueFloat=value,
        )
        return pb.GetMetricsResponse(metricValues=[metric])


async def start_server(
    signal: QueueSignal, address: str, *, heartbeat_s: float = 5.0
) -> tuple[grpc.aio.Server, int]:
    """Serve `ExternalScaler` on `address` (host:port; port 0 = any); the server and its port."""
    server = grpc.aio.server()
    pb_grpc.add_ExternalScalerServicer_to_server(
        ExternalScaler(signal, heartbeat_s=heartbeat_s), server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server, port
