"""The pod's HTTP surface, as vLLM serves it: shapes, errors, metrics, faults."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from sim.pod.metrics import ITL_BUCKETS, REQUEST_LATENCY_BUCKETS, TTFT_BUCKETS
from sim.pod.runtime import RunningPod

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def _chat(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "llama3-8b",
        "messages": [{"role": "user", "content": "abcd" * 100}],
        "max_tokens": 4,
    }
    body.update(kw)
    return body


async def _sse(resp: aiohttp.ClientResponse) -> list[bytes]:
    out = []
    async for line in resp.content:
        if line.startswith(b"data: "):
            out.append(line[6:].strip())
    return out


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        pytest.param(CHAT, b"{not json", 400, None, id="malformed-json"),
        pytest.param(CHAT, b"[1, 2]", 400, None, id="not-an-object"),
        pytest.param(CHAT, orjson.dumps({"model": "llama3-8b"}), 400, "messages", id="no-messages"),
        pytest.param(CHAT, orjson.dumps(_chat(max_tokens=0)), 400, "max_tokens", id="max-tokens-0"),
        pytest.param(CHAT, orjson.dumps(_chat(n=2)), 400, "n", id="n-2"),
        pytest.param(CHAT, orjson.dumps(_chat(model="gpt-9")), 404, "model", id="unknown-model"),
        pytest.param(
            COMPLETIONS,
            orjson.dumps({"model": "llama3-8b", "prompt": "x" * 200_000, "max_tokens": 10}),
            400,
            "prompt",
            id="too-long",
        ),
        pytest.param(
            COMPLETIONS,
            orjson.dumps({"model": "llama3-8b", "prompt": 5}),
            400,
            "prompt",
            id="bad-prompt",
        ),
    ],
)
async def test_bad_requests_get_openai_style_errors(
    pod: RunningPod,
    http: aiohttp.ClientSession,
    path: str,
    body: bytes,
    status: int,
    param: str | None,
) -> None:
    async with http.post(
        pod.url + path, data=body, headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == status
        err = (await r.json())["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == status
    assert err["message"]
    if param is not None:
        assert err["param"] is not None
        assert err["param"].startswith(param)
    assert pod.engine.running + pod.engine.waiting == 0  # nothing was queued


async def test_models_lists_the_served_model(pod: RunningPod, http: aiohttp.ClientSession) -> None:
    async with http.get(pod.url + "/v1/models") as r:
        body = await r.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["llama3-8b"]


async def test_non_streaming_usage_counts_prompt_and_output(
    pod: RunningPod, http: aiohttp.ClientSession
) -> None:
    async with http.post(pod.url + CHAT, json=_chat(max_tokens=9)) as r:
        body = await r.json()
    assert body["object"] == "chat.completion"
    assert body["usage"] == {"prompt_tokens": 100, "completion_tokens": 9, "total_tokens": 109}
    assert body["choices"][0]["finish_reason"] == "length"
    assert len(body["choices"][0]["message"]["content"].split()) == 9
    async with http.post(
        pod.url + COMPLETIONS, json={"model": "llama3-8b", "prompt": [1, 2, 3, 4, 5, 6, 7]}
    ) as r:
        body = await r.json()
    assert body["object"] == "text_completion"
    assert body["usage"]["prompt_tokens"] == 7
    assert body["usage"]["completion_tokens"] == 16  # OpenAI's default for completions


async def test_streaming_completion_with_usage_chunk(
    pod: RunningPod, http: aiohttp.ClientSession
) -> None:
    body = {
        "model": "llama3-8b",
        "prompt": "hello world!",
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with http.post(pod.url + COMPLETIONS, json=body) as r:
        chunks = await _sse(r)
    assert chunks[-1] == b"[DONE]"
    parsed = [orjson.loads(c) for c in chunks[:-1]]
    texts = [p["choices"][0]["text"] for p in parsed if p["choices"]]
    assert len(texts) == 5
    assert [p["choices"][0]["finish_reason"] for p in parsed if p["choices"]][-1] == "length"
    assert parsed[-1]["choices"] == []
    assert parsed[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert len({p["id"] for p in parsed}) == 1


def _samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


async def test_metrics_use_vllm_names_labels_and_buckets(
    pod: RunningPod, http: aiohttp.ClientSession
) -> None:
    await asyncio.gather(*(http.post(pod.url + CHAT, json=_chat(max_tokens=3)) for _ in range(4)))
    async with http.get(pod.url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:num_preemptions_total",
    ):
        assert f'{name}{{model_name="llama3-8b"}}' in text, name
    ttft = _samples(text, "vllm:time_to_first_token_seconds_bucket")
    assert len(ttft) == len(TTFT_BUCKETS) + 1
    assert ttft['vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="llama3-8b"}'] == 4
    assert len(_samples(text, "vllm:inter_token_latency_seconds_bucket")) == len(ITL_BUCKETS) + 1
    for name in (
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:request_queue_time_seconds_bucket",
    ):
        assert len(_samples(text, name)) == len(REQUEST_LATENCY_BUCKETS) + 1
    assert _samples(text, "vllm:generation_tokens_total") == {
        'vllm:generation_tokens_total{model_name="llama3-8b"}': 12.0
    }
    assert _samples(text, "vllm:prompt_tokens_total") == {
        'vllm:prompt_tokens_total{model_name="llama3-8b"}': 400.0
    }
    itl_count = _samples(text, "vllm:inter_token_latency_seconds_count")
    assert list(itl_count.values()) == [8.0]


async def test_gauges_show_running_and_waiting(http: aiohttp.ClientSession) -> None:
    from sim.pod.runtime import PodOptions, start_pod

    pod = await start_pod(PodOptions(model="llama3-8b", max_num_seqs=2))
    try:
        tasks = [
            asyncio.ensure_future(http.post(pod.url + CHAT, json=_chat(max_tokens=3000)))
            for _ in range(5)
        ]
        for _ in range(500):
            if pod.engine.running == 2 and pod.engine.waiting == 3:
                break
            await asyncio.sleep(0.01)
        async with http.get(pod.url + "/metrics") as r:
            text = await r.text()
        assert 'vllm:num_requests_running{model_name="llama3-8b"} 2.0' in text
        assert 'vllm:num_requests_waiting{model_name="llama3-8b"} 3.0' in text
        for t in tasks:
            t.cancel()
    finally:
        await pod.stop()


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
async def test_client_hanging_up_aborts_the_request(pod: RunningPod, stream: bool) -> None:
    body = orjson.dumps(
        {"model": "llama3-8b", "prompt": "hello", "max_tokens": 5000, "stream": stream}
    )
    port = int(pod.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    for _ in range(500):
        if pod.engine.running:
            break
        await asyncio.sleep(0.01)
    assert pod.engine.running == 1
    if stream:
        await reader.readline()  # the response has started
    writer.close()
    for _ in range(500):
        if not pod.engine.has_work:
            break
        await asyncio.sleep(0.01)
    assert not pod.engine.has_work  # aborted, not decoding 5000 tokens for nobody
    assert pod.engine.generation_tokens < 5000


async def test_latency_histograms_hold_model_times(
    pod: RunningPod, http: aiohttp.ClientSession
) -> None:
    from sim.engine import get_profile

    async with http.post(
        pod.url + COMPLETIONS,
        json={"model": "llama3-8b", "prompt": "abcd" * 1000, "max_tokens": 11},
    ) as r:
        assert r.status == 200
    async with http.get(pod.url + "/metrics") as r:
        text = await r.text()
    step = get_profile("llama3-8b-h200").step
    n = 1000
    prefill = step.seconds(
        n_decode=0,
        decode_context=0,
        prefill_tokens=n,
        prefill_pairs=n * (n + 1) / 2,
        prefill_kv_read=n,
    )
    decode = [step.decode_seconds(1, n + i) for i in range(1, 11)]
    ttft = next(iter(_samples(text, "vllm:time_to_first_token_seconds_sum").values()))
    itl = next(iter(_samples(text, "vllm:inter_token_latency_seconds_sum").values()))
    e2e = next(iter(_samples(text, "vllm:e2e_request_latency_seconds_sum").values()))
    queue = next(iter(_samples(text, "vllm:request_queue_time_seconds_sum").values()))
    assert prefill <= ttft < prefill + 0.5  # + the wait for the engine's next step
    # gaps are model step times (exactly, unless a stall > 250 ms made the pod re-anchor)
    assert sum(decode) * (1 - 1e-9) <= itl < sum(decode) + 0.3
    assert list(_samples(text, "vllm:inter_token_latency_seconds_count").values()) == [10.0]
    assert e2e == pytest.approx(ttft + itl, rel=1e-6)
    assert 0 <= queue <= ttft - prefill + 1e-9
