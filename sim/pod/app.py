"""The simulated pod's HTTP surface: vLLM's OpenAI API, `/health`, `/metrics`, `/admin/*`.

Handlers only translate: a request is validated (`sim.pod.wire`), submitted to the engine
driver (`sim.pod.driver`), and its tokens are written as they happen. Pod-wide state lives in
`PodState` under a typed AppKey; the lifecycle (start, stop, crash) is `sim.pod.runtime`'s.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web
from pydantic import ValidationError

from sim.engine import RequestRejected
from sim.pod.driver import Driver, Stream
from sim.pod.faults import Faults, FaultsUpdate
from sim.pod.metrics import CONTENT_TYPE, PodMetrics
from sim.pod.wire import (
    ChatRequest,
    ChunkEncoder,
    CompletionRequest,
    chat_prompt_tokens,
    completion_prompt_tokens,
    error_response,
    validation_error,
)
from surgescale.stats import percentile

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True, kw_only=True)
class PodState:
    """Everything the handlers of one pod share."""

    model: str
    profile: str
    driver: Driver
    metrics: PodMetrics
    default_max_tokens: int
    seed: int = 0
    faults: Faults = field(default_factory=Faults)
    ready: bool = False
    stopping: bool = False
    created: int = 0
    unhung: asyncio.Event = field(default_factory=asyncio.Event)
    rng: random.Random = field(default_factory=random.Random)
    on_crash: Callable[[], None] | None = None
    counter: int = 0
    last_traceparent: str | None = None
    """The W3C `traceparent` of the last completion request (tests of trace propagation)."""

    def set_faults(self, faults: Faults) -> None:
        crash_now = faults.crash and not self.faults.crash
        self.faults = faults
        self.driver.engine.slowdown = faults.slowdown
        self.driver.pause(faults.hang)
        if faults.hang:
            self.unhung.clear()
        else:
            self.unhung.set()
        if crash_now and self.on_crash is not None:
            self.on_crash()


STATE = web.AppKey("sim_pod_state", PodState)


@web.middleware
async def _hang_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    if state.faults.hang and not request.path.startswith("/admin/"):
        await state.unhung.wait()
    return await handler(request)


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not state.ready or state.stopping:
        return web.Response(status=503, text="loading" if not state.ready else "stopping")
    return web.Response(status=200)


async def models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    card = {
        "id": state.model,
        "object": "model",
        "created": state.created,
        "owned_by": "vllm",
        "root": state.model,
        "parent": None,
        "max_model_len": state.driver.engine.profile.max_model_len,
    }
    return web.Response(
        body=orjson.dumps({"object": "list", "data": [card]}), content_type="application/json"
    )


async def metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, chat=False)


async def _generate(request: web.Request, *, chat: bool) -> web.StreamResponse:
    state = request.app[STATE]
    state.last_traceparent = request.headers.get("traceparent")
    try:
        raw = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return error_response(400, f"malformed JSON body: {exc}", type_="BadRequestError")
    if not isinstance(raw, dict):
        return error_response(400, "the body must be a JSON object", type_="BadRequestError")
    try:
        body: ChatRequest | CompletionRequest = (
            ChatRequest.model_validate(raw) if chat else CompletionRequest.model_validate(raw)
        )
    except ValidationError as exc:
        return validation_error(exc)
    if body.model != state.model:
        return error_response(
            404, f"The model `{body.model}` does not exist.", type_="NotFoundError", param="model"
        )
    if not state.ready or state.stopping:
        return error_response(503, "the model is not being served", type_="ServiceUnavailableError")
    if state.faults.error_rate and state.rng.random() < state.faults.error_rate:
        return error_response(500, "injected fault: internal error", type_="InternalServerError")
    if isinstance(body, ChatRequest):
        prompt = chat_prompt_tokens(body)
        requested = body.max_completion_tokens or body.max_tokens
    else:
        prompt = completion_prompt_tokens(body)
        requested = body.max_tokens
    max_tokens = requested or state.default_max_tokens
    finish_reason = "length" if requested else "stop"
    state.counter += 1
    request_id = f"{state.counter}"
    try:
        stream = state.driver.submit(request_id, prompt, max_tokens)
    except RequestRejected as exc:
        param = "messages" if chat else "prompt"
        return error_response(400, str(exc), type_="BadRequestError", param=param)
    encoder = ChunkEncoder(chat=chat, model=state.model, offset=state.counter + state.seed)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    try:
        if body.stream:
            return await _stream(
                request, state, stream, encoder, max_tokens, finish_reason, include_usage
            )
        transport = request.transport
        if transport is not None:  # a client that hangs up aborts its request, as in vLLM
            stream.sink = lambda _index, _when: not transport.is_closing()
        while not stream.done:
            if stream.failed:
                return error_response(503, stream.failed, type_="ServiceUnavailableError")
            await stream.wait()
        content = encoder.full(prompt=prompt, completion=max_tokens, finish_reason=finish_reason)
        return web.Response(body=content, content_type="application/json")
    finally:
        if not stream.done:
            state.driver.cancel(stream)


async def _stream(
    request: web.Request,
    state: PodState,
    stream: Stream,
    encoder: ChunkEncoder,
    max_tokens: int,
    finish_reason: str,
    include_usage: bool,
) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    if request.version >= (1, 1):
        resp.enable_chunked_encoding()
    await resp.prepare(request)  # a StreamResponse sends its headers here
    if encoder.chat:
        await resp.write(encoder.role())
    transport = request.transport
    if transport is None:
        state.driver.cancel(stream)
        return resp
    stream.sink = _sink(
        transport, encoder, state.driver, max_tokens - 1, finish_reason, resp.chunked
    )
    for i in range(stream.tokens):  # tokens that came before the sink was in place
        stream.sink(i, stream.last_at or 0.0)
    while not stream.done:
        if stream.failed:
            transport.abort()
            return resp
        await stream.wait()
    tail = encoder.usage(stream.prompt_tokens, stream.tokens) if include_usage else b""
    await resp.write(tail + encoder.done())
    await resp.write_eof()
    return resp


def _sink(
    transport: asyncio.Transport,
    encoder: ChunkEncoder,
    driver: Driver,
    last: int,
    finish_reason: str,
    chunked: bool,
) -> Callable[[int, float], bool]:
    """Write one token's SSE chunk straight to the socket (called by the driver, no await).

    The response was prepared by aiohttp (headers sent, chunked framing on); the chunks are
    framed here the same way, and aiohttp's `write_eof` ends the body afterwards."""
    clock = driver.clock
    record = driver.record_timing_error
    token = encoder.token

    def sink(index: int, model_time: float) -> bool:
        if transport.is_closing():
            return False
        data = token(index, finish_reason if index == last else None)
        transport.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
        record(clock() - model_time)
        return True

    return sink


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].faults.as_dict())


async def post_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        update = FaultsUpdate.model_validate_json(await request.read())
        faults = update.apply(state.faults)
    except ValidationError as exc:
        return validation_error(exc)
    except ValueError as exc:
        return error_response(400, str(exc), type_="BadRequestError")
    if faults.crash and not state.faults.crash:
        # answer first, then die
        asyncio.get_running_loop().call_later(0.01, state.set_faults, faults)
        return web.json_response(faults.as_dict())
    state.set_faults(faults)
    return web.json_response(faults.as_dict())


def timing_summary(signed: list[float]) -> dict[str, float | int]:
    """Token timing error (written - model time): count, mean (signed), and p50/p99/max of its
    magnitude, in ms (percentiles: nearest rank, `surgescale.stats.percentile`)."""
    if not signed:
        return {"tokens": 0, "mean_ms": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    values = sorted(abs(v) for v in signed)
    return {
        "tokens": len(values),
        "mean_ms": statistics.fmean(signed) * 1e3,
        "p50_ms": (percentile(values, 50) or 0.0) * 1e3,
        "p99_ms": (percentile(values, 99) or 0.0) * 1e3,
        "max_ms": values[-1] * 1e3,
    }


async def get_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    d = state.driver
    e = d.engine
    body = {
        "timing_error": timing_summary(list(d.timing_errors)),
        "running": e.running,
        "waiting": e.waiting,
        "kv_usage": e.kv_usage,
        "preemptions": e.preemptions,
        "steps": e.steps,
        "generation_tokens": e.generation_tokens,
        "active_streams": d.active,
    }
    return web.json_response(body)


async def reset_stats(request: web.Request) -> web.Response:
    del request.app[STATE].driver.timing_errors[:]
    return web.json_response({"reset": True})


def build_app(state: PodState) -> web.Application:
    """The aiohttp application of one pod."""
    app = web.Application(middlewares=[_hang_gate], client_max_size=64 * 1024 * 1024)
    app[STATE] = state
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/admin/faults", get_faults)
    app.router.add_post("/admin/faults", post_faults)
    app.router.add_get("/admin/stats", get_stats)
    app.router.add_post("/admin/stats/reset", reset_stats)
    return app
