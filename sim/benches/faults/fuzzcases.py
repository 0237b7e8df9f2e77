"""The hostile requests of the `fuzz` group, as raw bytes (pure; seeded).

Hand-written cases cover each class of trouble once — methods and paths the gateway does not
serve, missing, wrong and non-UTF-8 credentials, bodies that are not JSON or not objects,
fields of the wrong type, out-of-bound `n` and `max_tokens`, oversized bodies and headers, broken
HTTP framing — and seeded random mutations of a valid body (one field replaced by a hostile
value, or added; bodies are encoded by the standard library, which writes integers beyond
64 bits) fill the rest up to the requested count. Each `Case` says its layer
(`http` framing or `api` request) and whether it asks for more than the gateway may pass on
(`bound`: a 200 for it means the bound was not enforced).
"""

from __future__ import annotations

import enum
import json
import random
from dataclasses import dataclass
from typing import Any

import orjson

_WEIRD: tuple[Any, ...] = (
    None,
    -1,
    0,
    2**63 - 1,
    2**64,
    10**30,
    -(10**30),
    1e308,
    -1e308,
    0.5,
    "",
    "x" * 10_000,
    "\u0000",
    "\ud7ff\ue000",
    [],
    [None],
    {},
    {"a": {"b": {"c": [1, 2, 3]}}},
    True,
    False,
    "NaN",
    "1",
)
_FIELDS = (
    "model",
    "prompt",
    "max_tokens",
    "n",
    "stream",
    "temperature",
    "top_p",
    "stop",
    "logprobs",
    "stream_options",
    "user",
    "seed",
    "best_of",
)
_CHAT_FIELDS = ("model", "messages", "max_tokens", "n", "stream", "temperature", "stop", "tools")


class Layer(enum.StrEnum):
    HTTP = "http"
    API = "api"


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    raw: bytes
    layer: Layer = Layer.API
    bound: bool = False
    """A request beyond the gateway's bounds on n / max_tokens (must not get a 200)."""


def request(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    auth: bytes | None,
    content_type: bytes = b"application/json",
    extra: bytes = b"",
) -> bytes:
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    if auth is not None:
        head.append(b"Authorization: " + auth)
    if body or method in ("POST", "PUT", "PATCH"):
        head.append(b"Content-Type: " + content_type)
        head.append(f"Content-Length: {len(body)}".encode())
    if extra:
        head.append(extra)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def cases(*, model: str, api_key: str, count: int, seed: int = 0) -> list[Case]:
    """At least `count` cases: the hand-written ones, then seeded mutations."""
    key = f"Bearer {api_key}".encode()
    good: dict[str, Any] = {"model": model, "prompt": "fuzz", "max_tokens": 2}
    chat: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "fuzz"}],
        "max_tokens": 2,
    }

    def post(name: str, body: Any, *, path: str = "/v1/completions", **kw: Any) -> Case:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        bound = bool(kw.pop("bound", False))
        auth = kw.pop("auth", key)
        return Case(name, request("POST", path, raw, auth=auth, **kw), bound=bound)

    out: list[Case] = [
        # methods and paths
        Case("GET completions", request("GET", "/v1/completions", auth=key)),
        Case("PUT completions", request("PUT", "/v1/completions", b"{}", auth=key)),
        Case("DELETE chat", request("DELETE", "/v1/chat/completions", auth=key)),
        Case("PATCH chat", request("PATCH", "/v1/chat/completions", b"{}", auth=key)),
        Case("POST models", request("POST", "/v1/models", b"{}", auth=key)),
        Case("unknown path", request("GET", "/v1/nope", auth=key)),
        Case("root", request("GET", "/", auth=key)),
        Case("unknown method", request("BREW", "/v1/completions", auth=key)),
        Case("path traversal", request("GET", "/v1/../../etc/passwd", auth=key)),
        Case("very long path", request("GET", "/v1/" + "a" * 4000, auth=key)),
        # credentials
        post("no credentials", good, auth=None),
        post("wrong key", good, auth=b"Bearer sk-wrong"),
        post("empty bearer", good, auth=b"Bearer "),
        post("basic auth", good, auth=b"Basic dXNlcjpwYXNz"),
        post("non-UTF-8 key", good, auth=b"Bearer \xff\xfe\xfd"),
        post("latin-1 key", good, auth=b"Bearer caf\xe9"),
        post("UTF-8 key", good, auth="Bearer clé-ключ".encode()),
        post("long key", good, auth=b"Bearer " + b"k" * 6000),
        post("lowercase scheme", good, auth=b"bearer " + api_key.encode()),
        post("non-UTF-8 on chat", chat, path="/v1/chat/completions", auth=b"Bearer \x80\x81"),
        # bodies
        post("empty body", b""),
        post("truncated JSON", b'{"model": "'),
        post("JSON array", [good]),
        post("JSON string", "prompt"),
        post("JSON null", None),
        post("JSON number", 12),
        post("non-UTF-8 body", b'{"model": "\xff\xfe", "prompt": "x"}'),
        post("NaN literal", b'{"model": "m", "prompt": "x", "max_tokens": NaN}'),
        post("deep nesting", b'{"a":' * 5000 + b"1" + b"}" * 5000),
        post("text/plain", good, content_type=b"text/plain"),
        post("form body", b"model=x&prompt=y", content_type=b"application/x-www-form-urlencoded"),
        post("oversized body", b'{"prompt": "' + b"x" * (5 * 1024 * 1024) + b'"}'),
        post("missing model", {"prompt": "x", "max_tokens": 2}),
        post("unknown model", {**good, "model": "no-such-model"}),
        post("model not a string", {**good, "model": 123}),
        post("missing prompt", {"model": model, "max_tokens": 2}),
        post("chat without messages", {"model": model}, path="/v1/chat/completions"),
        post(
            "messages not a list",
            {**chat, "messages": "hi"},
            path="/v1/chat/completions",
        ),
        post(
            "message not an object",
            {**chat, "messages": ["hi"]},
            path="/v1/chat/completions",
        ),
        post(
            "message content a number",
            {**chat, "messages": [{"role": "user", "content": 5}]},
            path="/v1/chat/completions",
        ),
        # bounds
        post("n = 1e6", {**good, "n": 1_000_000}, bound=True),
        post("n = 1e6 (float)", {**good, "n": 1e6}, bound=True),
        post("max_tokens = 2^63-1", {**good, "max_tokens": 2**63 - 1}, bound=True),
        post("max_tokens = 1e30", {**good, "max_tokens": 10**30}, bound=True),
        post("best_of = 1e6", {**good, "best_of": 1_000_000}, bound=True),
        post(
            "chat n = 1e6",
            {**chat, "n": 1_000_000},
            path="/v1/chat/completions",
            bound=True,
        ),
        post(
            "chat max_tokens = 2^63-1",
            {**chat, "max_tokens": 2**63 - 1},
            path="/v1/chat/completions",
            bound=True,
        ),
        post("negative max_tokens", {**good, "max_tokens": -5}),
        post("max_tokens a string", {**good, "max_tokens": "10"}),
        post("stream a string", {**good, "stream": "yes"}),
        post("stream_options not an object", {**good, "stream": True, "stream_options": 3}),
        # HTTP framing
        Case("garbage request line", b"GARBAGE\r\n\r\n", Layer.HTTP),
        Case(
            "header without colon",
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\nnocolon\r\nConnection: close\r\n\r\n",
            Layer.HTTP,
        ),
        Case(
            "bad content-length",
            request("POST", "/v1/completions", auth=key, extra=b"Content-Length: abc").replace(
                b"Content-Length: 0\r\n", b""
            ),
            Layer.HTTP,
        ),
        Case(
            "huge header",
            request("GET", "/v1/models", auth=key, extra=b"X-Big: " + b"b" * 20_000),
            Layer.HTTP,
        ),
        Case("HTTP/0.9", b"GET /v1/models\r\n\r\n", Layer.HTTP),
        Case(
            "unsupported version",
            b"GET /v1/models HTTP/3.7\r\nHost: x\r\nConnection: close\r\n\r\n",
            Layer.HTTP,
        ),
    ]
    rng = random.Random(seed)
    n = 0
    while len(out) < count:
        n += 1
        is_chat = rng.random() < 0.3
        base = dict(chat if is_chat else good)
        fields = _CHAT_FIELDS if is_chat else _FIELDS
        field = rng.choice(fields)
        value = rng.choice(_WEIRD)
        body = {**base, field: value}
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        bound = field in ("n", "best_of", "max_tokens") and numeric and value > 100_000
        path = "/v1/chat/completions" if is_chat else "/v1/completions"
        out.append(post(f"mutation {n}: {field}={str(value)[:20]!r}", body, path=path, bound=bound))
    return out


def is_openai_error(body: bytes) -> bool:
    """True if `body` is `{"error": {"message": str, "type": str, ...}}`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(data, dict):
        return False
    err = data.get("error")
    return (
        isinstance(err, dict)
        and isinstance(err.get("message"), str)
        and isinstance(err.get("type"), str)
    )
