"""Hostile requests: credentials that are not UTF-8, absurd `n` and `max_tokens`, and an
unbounded stream of distinct API keys (per-tenant state must not grow)."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from gateway.admission import ModelQueue, Ticket
from tests.gateway.conftest import MODEL, Harness, wait_for

pytestmark = pytest.mark.timeout(60)


async def _raw(url: str, request: bytes) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    async with asyncio.timeout(10):
        reply = await reader.read()
    writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize("api_keys", [["sk-right"], []], ids=["keys", "open"])
async def test_non_utf8_authorization_is_401_json(harness: Harness, api_keys: list[str]) -> None:
    gw = await harness.gateway(api_keys=api_keys, static_pods=[f"{MODEL}=http://127.0.0.1:9"])
    body = orjson.dumps({"model": MODEL, "prompt": "x"})
    status, reply = await _raw(
        gw.url,
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer \xff\xfe\xc3(sk\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    assert status == 401, reply
    assert orjson.loads(reply)["error"]["code"] == "invalid_api_key"


async def test_right_key_passes_and_wrong_key_is_refused(harness: Harness) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(api_keys=["sk-a", "sk-b"], static_pods=[f"{MODEL}={pod.url}"])
    await wait_for(lambda: gw.state.scheduler.queues[MODEL].ready_pods == 1, what="pod ready")
    body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
    async with aiohttp.ClientSession() as http:
        for key, want in (("sk-b", 200), ("sk-a", 200), ("sk-c", 401), ("sk-", 401), ("", 401)):
            headers = {"Authorization": f"Bearer {key}"}
            async with http.post(gw.url + "/v1/completions", json=body, headers=headers) as r:
                assert r.status == want, key


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("n", 1_000_000, id="n-1e6"),
        pytest.param("best_of", 1_000_000, id="best-of-1e6"),
        pytest.param("best_of", 0, id="best-of-0"),
        pytest.param("max_tokens", 2**63 - 1, id="max-tokens-2^63-1"),
        pytest.param("max_completion_tokens", 10**9, id="max-completion-tokens"),
    ],
)
async def test_absurd_n_and_max_tokens_are_400_naming_the_field(
    harness: Harness, field: str, value: int
) -> None:
    gw = await harness.gateway(static_pods=[f"{MODEL}=http://127.0.0.1:9"])
    body = {"model": MODEL, "prompt": "x", field: value}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url + "/v1/completions", json=body) as r,
    ):
        assert r.status == 400
        assert (await r.json())["error"]["param"] == field


async def test_bounds_are_configurable_per_model(harness: Harness) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(
        static_pods=[f"{MODEL}={pod.url}"],
        max_n=4,
        request_limits={MODEL: {"max_n": 1, "max_output_tokens": 5}},
    )
    await wait_for(lambda: gw.state.scheduler.queues[MODEL].ready_pods == 1, what="pod ready")
    async with aiohttp.ClientSession() as http:
        for extra, want in (({"n": 1}, 200), ({"n": 2}, 400), ({"max_tokens": 5}, 200)):
            body = {"model": MODEL, "prompt": "x", "max_tokens": 2, **extra}
            async with http.post(gw.url + "/v1/completions", json=body) as r:
                assert r.status == want, (extra, await r.text())
                if want == 400:  # the gateway's own refusal, under the model's bound (1 < 4)
                    assert "at most 1 for" in (await r.json())["error"]["message"]
        body = {"model": MODEL, "prompt": "x", "max_tokens": 6}
        async with http.post(gw.url + "/v1/completions", json=body) as r:
            assert r.status == 400
            assert (await r.json())["error"]["param"] == "max_tokens"


def test_per_tenant_state_is_forgotten_when_a_tenant_has_nothing_left() -> None:
    q = ModelQueue(MODEL, max_length=10_000, fairness=True, tenant_limit=2)
    q.sync_pods({"http://p": True}, capacity=4)
    served = [Ticket(request_id=f"s{i}", tenant=f"k-{i}", arrived=float(i)) for i in range(500)]
    for i, t in enumerate(served):
        q.offer(t)
        for done in q.assign(now=float(i)):
            q.finish(done)
    q.sync_pods({}, capacity=4)  # no pods: the rest wait, then give up
    waiting = [Ticket(request_id=f"w{i}", tenant=f"w-{i}", arrived=1e3 + i) for i in range(500)]
    for t in waiting:
        q.offer(t)
    for t in waiting:
        q.withdraw(t)
    assert (q.queued, q.in_flight) == (0, 0)
    tracked = (q._lanes, q._running_by, q._rotation)
    assert [len(part) for part in tracked] == [0, 0, 0], "per-tenant state left behind"


async def test_many_distinct_keys_leave_no_state_behind(harness: Harness) -> None:
    pod = await harness.pod()
    gw = await harness.gateway(static_pods=[f"{MODEL}={pod.url}"], fairness=True)
    q = gw.state.scheduler.queues[MODEL]
    await wait_for(lambda: q.ready_pods == 1, what="pod ready")
    body = {"model": MODEL, "prompt": "x", "max_tokens": 1}
    async with aiohttp.ClientSession() as http:

        async def one(i: int) -> int:
            headers = {"Authorization": f"Bearer random-{i}"}
            async with http.post(gw.url + "/v1/completions", json=body, headers=headers) as r:
                await r.read()
                return r.status

        assert set(await asyncio.gather(*(one(i) for i in range(300)))) == {200}
    assert len(q._lanes) + len(q._running_by) + len(q._rotation) == 0
