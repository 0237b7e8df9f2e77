"""Prompts of a given token size, and the request bodies that carry them.

A prompt of N tokens is N four-character words ("abc "): about one token each for real
tokenizers, and exactly N by the simulated pod's rule (ceil(characters / 4), `sim.pod.wire`).
"""

from __future__ import annotations

from typing import Any

_WORDS = ("ant ", "bee ", "cat ", "dog ", "elk ", "fox ", "gnu ", "hen ", "owl ", "yak ")
_BLOCK = "".join(_WORDS)


def prompt_text(tokens: int, *, salt: int = 0) -> str:
    """Text of `tokens` four-character words (varied by `salt`, so prompts differ)."""
    tokens = max(tokens, 1)
    start = salt % len(_WORDS)
    rotated = _BLOCK[start * 4 :] + _BLOCK[: start * 4]
    reps, rest = divmod(tokens, len(_WORDS))
    return rotated * reps + rotated[: rest * 4]


def request_body(
    *, api: str, model: str, input_tokens: int, output_tokens: int, salt: int = 0
) -> dict[str, Any]:
    """A streaming chat or completions body with `max_tokens` = the output length."""
    text = prompt_text(input_tokens, salt=salt)
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max(output_tokens, 1),
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    if api == "chat":
        body["messages"] = [{"role": "user", "content": text}]
    elif api == "completions":
        body["prompt"] = text
    else:
        raise ValueError(f"unknown api {api!r} (chat or completions)")
    return body
