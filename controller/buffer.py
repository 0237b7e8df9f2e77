"""The CapacityBuffer strategy's writer: `spec.replicas` of an `autoscaling.x-k8s.io` CapacityBuffer.

A CapacityBuffer (the upstream API for warm headroom, served by the Cluster Autoscaler and
Karpenter) asks the node autoscaler to keep room for `spec.replicas` *chunks*, each shaped like
the pod of its `podTemplateRef` (or of its `scalableRef`), as if that many pods were pending, but
without running any. With `capacity.strategy: CapacityBuffer` the controller sets the referenced
buffer's `spec.replicas` to the spare replicas' worth of GPUs the policy wants warm (the same
number the Headroom strategy gives its placeholder Deployment); the chunk is the user's, normally
one model replica's GPU, CPU and memory.

`BufferScaleAPI` is the actuator's `ScaleAPI`: CapacityBuffer targets are handled here, every
other target goes to `controller.kube.KubeScaleAPI`. The buffer has no `scale` subresource, so a
write is a GET (the owner's opt-in label, as for the other targets) and a merge-PATCH of the
object's `spec.replicas`. What cannot be fixed by retrying is a `RecheckableError` whose `reason`
the conditions show (`controller.conditions`): `CapacityBufferCRDMissing` when the API server
does not serve the CRD (nothing crashes; the same value is tried again later, so installing the
CRD heals it), `CapacityBufferNotFound`, or `TargetNotOptedIn`.
"""

from __future__ import annotations

from typing import Final

import orjson
from kubernetes_asyncio import client

from controller.actuator import RecheckableError, ScaleTarget, TargetKind
from controller.kube import MERGE_PATCH, KubeScaleAPI, body_of, classify
from controller.objects import CapacityBuffer
from surgescale.retry import PermanentError

GROUP: Final = "autoscaling.x-k8s.io"
VERSION: Final = "v1beta1"
"""The version the shipped CRD serves (`sim/data/karpenter-aws-crds/`)."""
PLURAL: Final = "capacitybuffers"
OPT_IN_LABEL: Final = "surgescale.io/scalable"

CRD_MISSING: Final = "CapacityBufferCRDMissing"
NOT_FOUND: Final = "CapacityBufferNotFound"
NOT_OPTED_IN: Final = "TargetNotOptedIn"


class BufferScaleAPI:
    """`ScaleAPI` for every target kind: CapacityBuffers here, the rest via `KubeScaleAPI`."""

    def __init__(self, api: client.ApiClient, *, request_timeout: float = 5.0) -> None:
        self._inner = KubeScaleAPI(api, request_timeout=request_timeout)
        self._custom = client.CustomObjectsApi(api)
        self._timeout = request_timeout

    async def patch_replicas(
        self, target: ScaleTarget, replicas: int, *, timeout: float | None = None
    ) -> None:
        if target.kind is not TargetKind.CAPACITY_BUFFER:
            await self._inner.patch_replicas(target, replicas, timeout=timeout)
            return
        budget = self._timeout if timeout is None else max(min(timeout, self._timeout), 0.001)
        obj = await self._read(target, budget)
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get(OPT_IN_LABEL) != "true":
            raise RecheckableError(
                f'{target} lacks the label {OPT_IN_LABEL}: "true"; it is not scaled',
                reason=NOT_OPTED_IN,
            )
        try:
            resp = await self._custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                GROUP,
                VERSION,
                target.namespace,
                PLURAL,
                target.name,
                {"spec": {"replicas": replicas}},
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=budget,
            )
            await body_of(resp)
        except Exception as exc:
            raise classify(exc) from exc

    async def read_replicas(self, target: ScaleTarget) -> int:
        if target.kind is not TargetKind.CAPACITY_BUFFER:
            return await self._inner.read_replicas(target)
        obj = await self._read(target, self._timeout)
        return int((obj.get("spec") or {}).get("replicas") or 0)

    async def _read(self, target: ScaleTarget, budget: float) -> CapacityBuffer:
        try:
            resp = await self._custom.get_namespaced_custom_object(
                GROUP,
                VERSION,
                target.namespace,
                PLURAL,
                target.name,
                _preload_content=False,
                _request_timeout=budget,
            )
            data: CapacityBuffer = orjson.loads(await body_of(resp))
        except Exception as exc:
            error = classify(exc)
            if isinstance(error, PermanentError) and str(error).startswith("HTTP 404"):
                raise await self._missing(target, budget) from exc
            raise error from exc
        return data

    async def _missing(self, target: ScaleTarget, budget: float) -> RecheckableError:
        """A 404 on the buffer: the object is missing, or the API (the CRD) is not served."""
        served = False
        try:
            resp = await self._custom.get_api_resources(
                GROUP, VERSION, _preload_content=False, _request_timeout=budget
            )
            listing = orjson.loads(await body_of(resp))
            served = any(r.get("name") == PLURAL for r in listing.get("resources") or [])
        except Exception:  # a 404 on the group version: not served
            served = False
        if not served:
            return RecheckableError(
                f"the API server does not serve {PLURAL}.{GROUP}/{VERSION}: install the "
                f"CapacityBuffer CRD (Karpenter or the Cluster Autoscaler ships it); {target} "
                "is not sized until then",
                reason=CRD_MISSING,
            )
        return RecheckableError(f"{target} not found", reason=NOT_FOUND)
