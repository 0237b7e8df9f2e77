"""The official `openai` package talks to the simulated pod: chat and completions, streamed or not."""

from __future__ import annotations

import openai
import pytest
from openai import AsyncOpenAI

from sim.pod.runtime import RunningPod


def _client(pod: RunningPod) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{pod.url}/v1", api_key="unused", max_retries=0, timeout=30)


async def test_chat_non_streaming(pod: RunningPod) -> None:
    async with _client(pod) as client:
        out = await client.chat.completions.create(
            model="llama3-8b", messages=[{"role": "user", "content": "abcd" * 25}], max_tokens=6
        )
    assert out.choices[0].message.role == "assistant"
    assert len((out.choices[0].message.content or "").split()) == 6
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (25, 6)


async def test_chat_streaming_with_usage(pod: RunningPod) -> None:
    async with _client(pod) as client:
        stream = await client.chat.completions.create(
            model="llama3-8b",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces = []
        usage = None
        finish = None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                finish = choice.finish_reason or finish
    assert len(pieces) == 8
    assert finish == "length"
    assert usage is not None
    assert usage.completion_tokens == 8


async def test_completions_non_streaming_and_streaming(pod: RunningPod) -> None:
    async with _client(pod) as client:
        out = await client.completions.create(model="llama3-8b", prompt="x" * 40, max_tokens=5)
        assert out.usage is not None
        assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (10, 5)
        assert len(out.choices[0].text.split()) == 5
        stream = await client.completions.create(
            model="llama3-8b", prompt=[1, 2, 3], max_tokens=4, stream=True
        )
        texts = [c.choices[0].text async for c in stream if c.choices]
    assert len(texts) == 4


async def test_errors_surface_as_openai_exceptions(pod: RunningPod) -> None:
    async with _client(pod) as client:
        with pytest.raises(openai.NotFoundError) as nf:
            await client.chat.completions.create(
                model="nope", messages=[{"role": "user", "content": "hi"}]
            )
        assert "nope" in str(nf.value)
        with pytest.raises(openai.BadRequestError):
            await client.completions.create(model="llama3-8b", prompt="x", max_tokens=40_000)
        models = await client.models.list()
    assert [m.id for m in models.data] == ["llama3-8b"]
