"""The prefill gate over real HTTP: with `slo.prefill_limit: 1` a second stream waits in the
gateway while the pod's first one has not sent its first token, and goes once it has (while
the first still decodes); without the gate it goes to the pod at once."""

from __future__ import annotations

import asyncio

import openai
import pytest

from gateway.admission import ModelQueue
from sim.pod.faults import Faults
from surgescale.events import Event, EventType, RedisClient, StreamKeys
from tests.gateway.conftest import MODEL, Harness, read_events, wait_for

pytestmark = pytest.mark.timeout(60)

SLOWDOWN = 200.0
"""Every engine step 200x slower: a prefill lasts long enough (seconds) to watch it."""


async def _stream(client: openai.AsyncOpenAI, prompt: str) -> None:
    stream = await client.completions.create(model=MODEL, prompt=prompt, max_tokens=2, stream=True)
    async for _ in stream:
        pass


@pytest.mark.parametrize("limit", [pytest.param(1, id="gate"), pytest.param(None, id="no-gate")])
async def test_a_second_stream_waits_in_the_gateway_while_the_first_is_in_prefill(
    harness: Harness, redis: RedisClient, keys: StreamKeys, limit: int | None
) -> None:
    pod = await harness.pod(faults=Faults(slowdown=SLOWDOWN))
    gw = await harness.gateway(
        static_pods=[f"{MODEL}={pod.url}"],
        keepalive_interval_s=0,
        capacity_sharing=False,
        slo={"prefill_limit": limit},
    )
    queues = gw.state.scheduler.queues
    await wait_for(lambda: MODEL in queues and queues[MODEL].ready_pods == 1, what="pod ready")
    q: ModelQueue = queues[MODEL]
    (upstream,) = q.pods.values()
    client = gw.client()
    first = asyncio.create_task(_stream(client, "first"))
    await wait_for(lambda: upstream.prefilling == 1, what="the first request to be in prefill")
    second = asyncio.create_task(_stream(client, "second"))
    if limit == 1:
        await wait_for(lambda: q.queued == 1, what="the second request to queue")
        assert (upstream.outstanding, upstream.prefilling) == (1, 1)  # the first is in prefill
    else:
        await wait_for(lambda: upstream.outstanding == 2, what="the second request to go")
        assert upstream.prefilling == 2  # both prompts on the pod at once
    await asyncio.gather(first, second)

    events: list[Event] = []

    async def both_complete() -> bool:
        nonlocal events
        events = await read_events(redis, keys)
        return sum(e.type is EventType.COMPLETE for e in events) == 2

    await wait_for(both_complete, what="both requests' events")
    ids = {e.request_id for e in events if e.type is EventType.ENQUEUE}
    first_id, second_id = sorted(ids, key=lambda r: int(r.rsplit("-", 1)[1]))
    first_token = next(
        e.ts_ms for e in events if e.type is EventType.FIRST_TOKEN and e.request_id == first_id
    )
    dispatched = next(
        e.ts_ms for e in events if e.type is EventType.DISPATCH and e.request_id == second_id
    )
    first_done = next(
        e.ts_ms for e in events if e.type is EventType.COMPLETE and e.request_id == first_id
    )
    if limit == 1:
        assert dispatched >= first_token, "the second went to the pod during the first's prefill"
        assert dispatched < first_done, "the first token did not open the gate"
    else:
        assert dispatched < first_token
    assert (upstream.outstanding, upstream.prefilling) == (0, 0)
