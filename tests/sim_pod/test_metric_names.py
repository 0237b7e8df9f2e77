"""vLLM's metric names are the current ones: the simulated pod's `/metrics` serves no name vLLM
has renamed or removed, and nothing in the repository (code, manifests, dashboards, KEDA PromQL,
docs) reads one, except this test's own list."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from sim.pod.runtime import RunningPod

ROOT = Path(__file__).resolve().parents[2]

RENAMED = {
    "vllm:gpu_cache_usage_perc": "vllm:kv_cache_usage_perc",
    "vllm:cpu_cache_usage_perc": "(removed with the v0 engine)",
    "vllm:gpu_prefix_cache_hit_rate": "vllm:prefix_cache_queries / vllm:prefix_cache_hits",
    "vllm:num_requests_swapped": "(removed with the v0 engine)",
    "vllm:time_per_output_token_seconds": "vllm:inter_token_latency_seconds",
}
"""Old name -> what replaced it (vLLM's v1 engine metrics)."""

CURRENT = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
)

SCANNED = ("controller", "gateway", "sim", "surgescale", "manifests", "docs", "deploy", "tools")


async def test_pod_serves_current_names_only(pod: RunningPod, http: aiohttp.ClientSession) -> None:
    async with http.get(pod.url + "/metrics") as r:
        text = await r.text()
    families = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))
    assert set(CURRENT) <= families, sorted(set(CURRENT) - families)
    assert not families & set(RENAMED), sorted(families & set(RENAMED))


def test_nothing_in_the_repository_reads_a_renamed_vllm_metric() -> None:
    pattern = re.compile("|".join(re.escape(name) for name in RENAMED))
    hits = []
    for top in SCANNED:
        for path in (ROOT / top).rglob("*"):
            if not path.is_file() or path.suffix not in {".py", ".yaml", ".yml", ".json", ".md"}:
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if pattern.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert hits == [], "renamed vLLM metrics in use:\n" + "\n".join(hits)
