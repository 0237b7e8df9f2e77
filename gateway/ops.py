"""The operational endpoints: `/healthz`, `/readyz`, `/metrics` and the model list.

`/healthz` answers while the event loop runs. `/readyz` is 200 while the gateway admits work
(also at zero pods: holding requests for a model that scales from zero is its job) and 503 once
it drains. `/metrics` is the Prometheus text format of `gateway.metrics`, summed over the
replica's workers when it has several (`gateway.workermetrics`). `/v1/models` lists the
models this gateway routes to, with or without ready pods.
"""

from __future__ import annotations

import os

import orjson
from aiohttp import web

from gateway.metrics import CONTENT_TYPE
from gateway.openai_api import error_response
from gateway.state import STATE
from gateway.workermetrics import SCOPE_WORKER, merge, siblings_text


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.draining:
        return web.Response(status=503, text="draining\n")
    if not state.started:
        return web.Response(status=503, text="starting\n")
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = state.metrics.render()
    own = state.worker_socket
    if own is not None and request.query.get("scope") != SCOPE_WORKER:
        others = await siblings_text(os.path.dirname(own), own)
        body = merge([body.decode(), *others])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.authenticate(request.headers.get("Authorization")) is None:
        return error_response(
            401, "invalid or missing API key", kind="invalid_request_error", code="invalid_api_key"
        )
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "surgescale"}
        for name in state.settings.model_names()
    ]
    return web.Response(
        body=orjson.dumps({"object": "list", "data": data}), content_type="application/json"
    )
