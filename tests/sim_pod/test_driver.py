"""The live driver keeps stepping when requests arrived after the previous step's model end."""

from __future__ import annotations

import asyncio

from sim.engine import Engine, get_profile
from sim.pod.driver import Driver


async def test_a_request_that_arrives_during_a_late_wake_up_is_not_stranded() -> None:
    now = [0.0]
    engine = Engine(get_profile("llama3-8b-h200"))
    driver = Driver(engine, clock=lambda: now[0])
    driver.start()
    first = driver.submit("a", prompt_tokens=16, max_tokens=1)
    for _ in range(3):
        await asyncio.sleep(0)  # the driver plans the step and sleeps until its model end
    # The sleep ends late: by the time the driver runs again the clock is past the step's end,
    # and a second request arrived in between, after the step that finishes the first one.
    now[0] = 0.1  # past the step end, but within the driver's re-anchoring threshold
    second = driver.submit("b", prompt_tokens=16, max_tokens=1)
    await asyncio.wait_for(first.wait(), 2.0)
    await asyncio.wait_for(second.wait(), 2.0)
    assert second.done
    assert second.tokens == 1
