"""Request validation, usage extraction and SSE usage stripping (pure functions)."""

from __future__ import annotations

import orjson
import pytest

from gateway.openai_api import (
    Endpoint,
    InvalidRequest,
    parse_request,
    take_usage,
    usage_tokens,
    with_usage_requested,
)


@pytest.mark.parametrize(
    ("body", "endpoint", "param"),
    [
        pytest.param(b"{not json", Endpoint.CHAT, None, id="not-json"),
        pytest.param(b"[1]", Endpoint.CHAT, None, id="not-object"),
        pytest.param(
            b'{"messages": [{"role": "user", "content": "x"}]}',
            Endpoint.CHAT,
            "model",
            id="no-model",
        ),
        pytest.param(
            b'{"model": "", "prompt": "x"}', Endpoint.COMPLETIONS, "model", id="empty-model"
        ),
        pytest.param(b'{"model": "m"}', Endpoint.CHAT, "messages", id="no-messages"),
        pytest.param(
            b'{"model": "m", "messages": []}', Endpoint.CHAT, "messages", id="empty-messages"
        ),
        pytest.param(
            b'{"model": "m", "messages": [{"content": "x"}]}',
            Endpoint.CHAT,
            "messages[0]",
            id="no-role",
        ),
        pytest.param(b'{"model": "m"}', Endpoint.COMPLETIONS, "prompt", id="no-prompt"),
        pytest.param(
            b'{"model": "m", "prompt": "x", "stream": "yes"}',
            Endpoint.COMPLETIONS,
            "stream",
            id="stream-type",
        ),
        pytest.param(
            b'{"model": "m", "prompt": "x", "max_tokens": 0}',
            Endpoint.COMPLETIONS,
            "max_tokens",
            id="max-tokens",
        ),
        pytest.param(
            b'{"model": "m", "prompt": "x", "stream_options": 3}',
            Endpoint.COMPLETIONS,
            "stream_options",
            id="stream-options",
        ),
    ],
)
def test_invalid_requests_name_the_field(
    body: bytes, endpoint: Endpoint, param: str | None
) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_request(body, endpoint)
    assert info.value.status == 400
    assert info.value.param == param


def test_valid_chat_request() -> None:
    body = orjson.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x" * 400}]}
    )
    parsed = parse_request(body, Endpoint.CHAT)
    assert parsed.model == "m"
    assert parsed.stream is True
    assert parsed.raw == body
    assert 100 <= parsed.prompt_tokens <= 110
    assert parsed.client_wants_usage is False


def test_usage_requested_keeps_other_options() -> None:
    payload = {"model": "m", "prompt": "p", "stream": True, "stream_options": {"x": 1}}
    out = orjson.loads(with_usage_requested(payload))
    assert out["stream_options"] == {"x": 1, "include_usage": True}
    assert payload["stream_options"] == {"x": 1}


def test_usage_tokens_of_plain_body() -> None:
    assert usage_tokens(b'{"usage": {"completion_tokens": 7}}') == 7
    assert usage_tokens(b'{"choices": []}') is None
    assert usage_tokens(b"nope") is None


def _sse(*objs: object) -> bytes:
    return b"".join(b"data: " + orjson.dumps(o) + b"\n\n" for o in objs)


def test_usage_chunk_is_read_and_stripped() -> None:
    events = (
        _sse(
            {"choices": [{"delta": {"content": "a"}}]},
            {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}},
        )
        + b"data: [DONE]\n\n"
    )
    out, tokens = take_usage(events, strip=True)
    assert tokens == 5
    assert b"usage" not in out
    assert out.endswith(b"data: [DONE]\n\n")
    assert out.count(b"data:") == 2


def test_usage_chunk_is_kept_when_client_asked() -> None:
    events = _sse({"choices": [], "usage": {"completion_tokens": 2}})
    out, tokens = take_usage(events, strip=False)
    assert tokens == 2
    assert out == events


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param(b"", False, id="nothing"),
        pytest.param(
            b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n',
            False,
            id="role-only",
        ),
        pytest.param(
            b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
            b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n',
            True,
            id="role-then-token",
        ),
        pytest.param(b'data: {"choices":[{"text":"a"}]}', False, id="incomplete-event"),
        pytest.param(b'data: {"choices":[{"text":"a"}]}\n\n', True, id="completion-token"),
        pytest.param(b"data: [DONE]\n\n", True, id="done"),
    ],
)
def test_first_output_detection(events: bytes, expected: bool) -> None:
    from gateway.openai_api import has_output

    assert has_output(events) is expected
