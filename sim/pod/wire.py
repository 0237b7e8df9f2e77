"""The OpenAI wire format as vLLM serves it: request models (validated once, at the edge),
error bodies, token text, and pre-encoded SSE chunks.

Prompt size: a text prompt counts as ceil(characters / 4) tokens (at least 1), a token-id list
as its length; the load generator (`sim.load.prompts`) builds prompts to that rule. Output text:
one word per token from a fixed list, so responses are deterministic.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

WORDS = tuple(
    " " + w
    for w in [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "that",
        "for",
        "it",
        "as",
        "with",
        "was",
        "on",
        "be",
        "by",
        "at",
        "this",
        "are",
        "from",
        "or",
        "an",
        "but",
        "not",
        "have",
        "all",
        "were",
        "when",
        "we",
        "there",
        "can",
        "more",
        "if",
        "out",
        "so",
        "what",
        "up",
        "said",
        "about",
        "into",
        "than",
        "them",
        "may",
        "only",
        "time",
        "new",
        "some",
        "could",
        "these",
        "two",
        "other",
        "first",
        "then",
        "do",
        "any",
        "like",
        "my",
        "now",
        "over",
        "such",
        "our",
    ]
)


WORDS_BYTES = tuple(w.encode() for w in WORDS)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str | list[int] = Field(min_length=1)
    max_tokens: int | None = Field(default=16, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)


def error_response(
    status: int, message: str, *, type_: str, param: str | None = None
) -> web.Response:
    """An OpenAI-style error body with the given status."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def validation_error(exc: ValidationError) -> web.Response:
    """400 naming the first bad field."""
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    return error_response(400, f"{param}: {first.get('msg')}", type_="BadRequestError", param=param)


def text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def chat_prompt_tokens(req: ChatRequest) -> int:
    chars = 0
    for m in req.messages:
        if isinstance(m.content, str):
            chars += len(m.content)
        elif m.content:
            for part in m.content:
                t = part.get("text")
                if isinstance(t, str):
                    chars += len(t)
    return max(1, math.ceil(chars / 4))


def completion_prompt_tokens(req: CompletionRequest) -> int:
    if isinstance(req.prompt, str):
        return text_tokens(req.prompt)
    return len(req.prompt)


def token_text(index: int, offset: int) -> str:
    return WORDS[(index + offset) % len(WORDS)]


def output_text(count: int, offset: int) -> str:
    return "".join(token_text(i, offset) for i in range(count))


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class ChunkEncoder:
    """Builds the SSE lines of one streamed response with two byte concatenations per token."""

    def __init__(self, *, chat: bool, model: str, offset: int) -> None:
        self.chat = chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = model
        self.offset = offset
        obj = "chat.completion.chunk" if chat else "text_completion"
        head = {"id": self.id, "object": obj, "created": self.created, "model": model}
        prefix = orjson.dumps(head)[:-1]
        if chat:
            self._head = b"data: " + prefix + b',"choices":[{"index":0,"delta":{"content":"'
            self._tail = b'"},"logprobs":null,"finish_reason":null}]}\n\n'
            self._tail_last = b'"},"logprobs":null,"finish_reason":"%s"}]}\n\n'
        else:
            self._head = b"data: " + prefix + b',"choices":[{"index":0,"text":"'
            self._tail = b'","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'
            self._tail_last = b'","logprobs":null,"finish_reason":"%s","stop_reason":null}]}\n\n'
        self._prefix = prefix

    def role(self) -> bytes:
        """vLLM's first chat chunk: the assistant role with empty content."""
        return (
            b"data: "
            + self._prefix
            + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
            + b'"logprobs":null,"finish_reason":null}]}\n\n'
        )

    def token(self, index: int, finish_reason: str | None = None) -> bytes:
        word = WORDS_BYTES[(index + self.offset) % len(WORDS_BYTES)]
        if finish_reason is None:
            return self._head + word + self._tail
        return self._head + word + (self._tail_last % finish_reason.encode())

    def usage(self, prompt: int, completion: int) -> bytes:
        body = self._prefix + b',"choices":[],"usage":' + orjson.dumps(usage(prompt, completion))
        return b"data: " + body + b"}\n\n"

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"

    def full(self, *, prompt: int, completion: int, finish_reason: str) -> bytes:
        """The non-streamed response body."""
        text = output_text(completion, self.offset)
        choice: dict[str, Any]
        if self.chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text, "tool_calls": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            obj = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": None,
            }
            obj = "text_completion"
        body = {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage(prompt, completion),
        }
        return orjson.dumps(body)
