"""The OpenAI wire format as far as the gateway needs it: validation, errors, usage, SSE framing.

Pure functions over bytes and dicts, so they are cheap to test and to run per request. The
gateway validates only what it must (the routing key `model`, the fields without which a pod
cannot answer, and the types of the knobs it reads), then passes the body through untouched
unless it adds `stream_options.include_usage` (and then strips that chunk again from the stream).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web


class Endpoint(enum.Enum):
    CHAT = "/v1/chat/completions"
    COMPLETIONS = "/v1/completions"


class InvalidRequest(Exception):
    """A 4xx for the client; `param` names the bad field."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.kind = kind


def error_body(message: str, *, kind: str, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def error_response(
    status: int,
    message: str,
    *,
    kind: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}`."""
    return web.Response(
        status=status,
        body=error_body(message, kind=kind, code=code, param=param),
        content_type="application/json",
        headers=headers,
    )


def invalid_response(exc: InvalidRequest) -> web.Response:
    return error_response(exc.status, exc.message, kind=exc.kind, code=exc.code, param=exc.param)


_STATUS_CODES = {
    400: "bad_request",
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "request_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    429: "rate_limit_exceeded",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "service_unavailable",
}


def status_error_body(status: int, message: str) -> bytes:
    """The OpenAI-shaped body of an HTTP-level error (one aiohttp or the router raised)."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return error_body(message, kind=kind, code=_STATUS_CODES.get(status, f"http_{status}"))


def check_bounds(parsed: ParsedRequest, *, max_n: int, max_output_tokens: int) -> None:
    """Refuse a request asking for more choices or tokens than the model allows (`best_of`,
    the candidates a completion samples before it returns `n`, counts as choices)."""
    payload = parsed.payload
    for name in ("n", "best_of"):
        value = payload.get(name)
        if isinstance(value, int) and value > max_n:
            raise InvalidRequest(
                f"'{name}' is {value}; this gateway allows at most {max_n} for {parsed.model!r}",
                param=name,
            )
    for name in ("max_tokens", "max_completion_tokens"):
        value = payload.get(name)
        if isinstance(value, int) and value > max_output_tokens:
            raise InvalidRequest(
                f"'{name}' is {value}; this gateway allows at most {max_output_tokens} "
                f"for {parsed.model!r}",
                param=name,
            )


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """What the gateway needs from a completion request."""

    raw: bytes
    """The body as received (forwarded untouched unless usage is asked for)."""
    payload: dict[str, Any]
    model: str
    stream: bool
    prompt_tokens: int
    """Estimated from the prompt text (about four characters per token)."""
    client_wants_usage: bool


def parse_request(body: bytes, endpoint: Endpoint) -> ParsedRequest:
    """Decode and validate a request body; raise `InvalidRequest` naming the bad field."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    stream = payload.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    for name in ("max_tokens", "max_completion_tokens", "n", "best_of"):
        value = payload.get(name)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise InvalidRequest(f"'{name}' must be a positive integer", param=name)
    if endpoint is Endpoint.CHAT:
        prompt_chars = _chat_chars(payload.get("messages"))
    else:
        prompt_chars = _prompt_chars(payload.get("prompt"))
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")
    wants_usage = bool(options and options.get("include_usage"))
    return ParsedRequest(
        raw=body,
        payload=payload,
        model=model,
        stream=stream,
        prompt_tokens=max(1, prompt_chars // 4),
        client_wants_usage=wants_usage,
    )


def _chat_chars(messages: Any) -> int:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    total = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"messages[{i}] must be an object with a string 'role'", param=f"messages[{i}]"
            )
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    total += len(part["text"])
        total += 16  # role and template tokens
    return total


def _prompt_chars(prompt: Any) -> int:
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return sum(len(p) for p in prompt)
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return 4 * len(prompt)  # token ids
        if all(isinstance(p, list) for p in prompt):
            return 4 * sum(len(p) for p in prompt)
    raise InvalidRequest(
        "'prompt' is required: a string, an array of strings or of token ids", param="prompt"
    )


def with_usage_requested(payload: dict[str, Any]) -> bytes:
    """The body again, asking the pod to end the stream with a usage chunk."""
    options = dict(payload.get("stream_options") or {})
    options["include_usage"] = True
    return orjson.dumps({**payload, "stream_options": options})


def usage_tokens(body: bytes) -> int | None:
    """`usage.completion_tokens` of a non-streamed response body, if it has one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    if isinstance(usage, dict):
        tokens = usage.get("completion_tokens")
        if isinstance(tokens, int):
            return tokens
    return None


_USAGE_MARKS = (b'"usage":{', b'"usage": {')


def has_usage(chunk: bytes) -> bool:
    return _USAGE_MARKS[0] in chunk or _USAGE_MARKS[1] in chunk


def take_usage(events: bytes, *, strip: bool) -> tuple[bytes, int | None]:
    """Find the usage chunk among complete SSE events; drop it if `strip` and it has no choices.

    Returns the events to forward and `usage.completion_tokens` if a usage chunk was seen.
    """
    tokens: int | None = None
    kept: list[bytes] = []
    for event in events.split(b"\n\n"):
        if not event:
            continue
        if has_usage(event) and event.startswith(b"data:"):
            try:
                data = orjson.loads(event[5:])
            except orjson.JSONDecodeError:
                kept.append(event)
                continue
            usage = data.get("usage") if isinstance(data, dict) else None
            if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
                tokens = usage["completion_tokens"]
            if strip and isinstance(data, dict) and not data.get("choices"):
                continue
            if strip and isinstance(data, dict):
                data.pop("usage", None)
                event = b"data: " + orjson.dumps(data)
        kept.append(event)
    if not kept:
        return b"", tokens
    return b"\n\n".join(kept) + b"\n\n", tokens


_ROLE_ONLY = (b'"content":""', b'"content": ""')


def has_output(events: bytes) -> bool:
    """True once `events` hold a complete SSE event beyond a chat stream's role-only chunk.

    vLLM sends the role chunk with the first token; other servers send it at once. Either way
    the first token (and the end of the retry window) is the first event that is not role-only.
    """
    cut = events.rfind(b"\n\n")
    if cut < 0:
        return False
    for event in events[:cut].split(b"\n\n"):
        if not event.startswith(b"data:"):
            continue
        role_only = b'"role"' in event and (_ROLE_ONLY[0] in event or _ROLE_ONLY[1] in event)
        if not role_only:
            return True
    return False


def sse_error(message: str, *, code: str) -> bytes:
    """An SSE event carrying an OpenAI-style error, to end a stream that broke."""
    return b"data: " + error_body(message, kind="upstream_error", code=code) + b"\n\n"
