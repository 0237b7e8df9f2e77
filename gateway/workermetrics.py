"""One `/metrics` for all workers of a gateway replica, whichever worker a scrape reaches.

With `workers > 1` every worker binds the same port (SO_REUSEPORT), so a Prometheus scrape lands
on one of them at random. Each worker therefore also serves its application on a private Unix
socket in a directory its supervisor made (`gateway.server.run`); `/metrics` on any worker asks
its siblings for their own series (`/metrics?scope=worker`) and answers with the sum: counters,
histogram buckets, sums and counts and the gauges of a worker's own load (queue depth, in flight,
free slots, its share of the pods, open connections) add up over the workers; gauges of what
all workers see alike take the largest value (`MAX_GAUGES`: ready pods, sharing instances, in
fallback) or the smallest (`MIN_GAUGES`: ready = every worker admitting, events connected);
`_created` samples take the earliest. `surgescale_gateway_workers_reporting` says how many workers are in
the sum (a worker that is restarting is left out for that scrape, and its counters restart from
zero, which Prometheus reads as a counter reset).

The controller needs none of this: it keeps queue depth and in-flight per gateway instance
(every worker has its own id, `<id>-w<N>`) and sums them per model (`controller.state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

MAX_GAUGES = frozenset(
    {
        "surgescale_gateway_ready_pods",
        "surgescale_gateway_capacity_instances",
        "surgescale_gateway_capacity_fallback",
    }
)
"""Gauges of one fact seen from every worker: the largest value, not the sum."""
MIN_GAUGES = frozenset({"surgescale_gateway_ready", "surgescale_gateway_events_connected"})
"""Gauges that hold for the replica only if they hold for every worker."""

SCOPE_WORKER = "worker"
"""`/metrics?scope=worker`: this worker's own series only."""


def socket_path(directory: str, worker: int) -> str:
    return os.path.join(directory, f"w{worker}.sock")


async def siblings_text(directory: str, own: str, *, timeout: float = 1.0) -> list[str]:
    """The own series of every other worker whose socket is in `directory` and answers."""
    paths = sorted(
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if name.endswith(".sock") and os.path.join(directory, name) != own
    )

    async def one(path: str) -> str | None:
        connector = aiohttp.UnixConnector(path=path)
        try:
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                asyncio.timeout(timeout),
                http.get(f"http://worker/metrics?scope={SCOPE_WORKER}") as resp,
            ):
                if resp.status != 200:
                    return None
                return await resp.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.debug("worker metrics at %s not available: %s", path, exc)
            return None

    texts = await asyncio.gather(*(one(p) for p in paths))
    return [t for t in texts if t is not None]


def merge(texts: list[str]) -> bytes:
    """The Prometheus text of the sum of `texts` (one per worker), plus the workers count."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            into = values[family.name]
            gauge = family.type == "gauge"
            most = gauge and family.name in MAX_GAUGES
            least = gauge and family.name in MIN_GAUGES
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = into.get(key)
                if seen is None:
                    into[key] = sample.value
                elif sample.name.endswith("_created"):
                    into[key] = min(seen, sample.value)
                elif most:
                    into[key] = max(seen, sample.value)
                elif least:
                    into[key] = min(seen, sample.value)
                else:
                    into[key] = seen + sample.value
    merged = [families[name] for name in families]
    for metric in merged:
        for (sample_name, labels), value in values[metric.name].items():
            metric.add_sample(sample_name, dict(labels), value)
    reporting = Metric(
        "surgescale_gateway_workers_reporting",
        "Worker processes whose series are summed in this scrape",
        "gauge",
    )
    reporting.add_sample("surgescale_gateway_workers_reporting", {}, float(len(texts)))
    merged.append(reporting)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(merged))
    return generate_latest(registry)


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics


async def unix_listener(
    factory: Callable[[], asyncio.BaseProtocol], path: str
) -> asyncio.AbstractServer:
    """Serve `factory` (the runner's protocol factory) on the Unix socket `path`."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    loop = asyncio.get_running_loop()
    return await loop.create_unix_server(factory, path)
