"""The Grafana dashboard and the ServiceMonitors point at series that really exist: every metric
a panel queries is served on `/metrics` by the running gateway, the running controller's ops
app, or a running simulated vLLM pod (which exports vLLM's names), or is a kube-state-metrics
series named in the deploy doc. The panels the issue asks for are all there."""

from __future__ import annotations

import json
import re

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from controller.ops import Health, Metrics
from controller.ops import build_app as controller_ops_app
from gateway.app import build_app as gateway_app
from gateway.settings import GatewaySettings
from sim.pod.runtime import PodOptions, start_pod
from tests.manifests.kube import MANIFESTS, find, of_kind, render

DASHBOARD = MANIFESTS / "monitoring" / "dashboards" / "surgescale.json"
KUBE_STATE_METRICS = {
    "kube_deployment_status_replicas",
    "kube_deployment_status_replicas_ready",
    "kube_node_labels",
    "kube_node_status_condition",
}
PROMQL_WORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "by",
    "on",
    "rate",
    "histogram_quantile",
    "vector",
    "group_left",
    "le",
    "model",
    "model_name",
    "reason",
    "deployment",
    "node",
    "namespace",
    "condition",
    "status",
    "label_karpenter_sh_nodepool",
}


def _queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    without_vars = re.sub(r"\$\w+", "", without_ranges)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_vars))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"\d.*", n)}


def _series(text: str) -> set[str]:
    """Every series name a scrape of `text` can produce (incl. histogram/counter suffixes)."""
    out: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type == "histogram":
            out |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        elif family.type == "counter":
            out |= {f"{family.name}_total", family.name}
        else:
            out.add(family.name)
        out |= {s.name for s in family.samples}
    return out


async def _scrape(app: web.Application, path: str = "/metrics") -> str:
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session, session.get(server.make_url(path)) as resp:
            assert resp.status == 200
            return await resp.text()
    finally:
        await server.close()


@pytest.fixture
async def served() -> set[str]:
    gateway = await _scrape(gateway_app(GatewaySettings(redis_url=None)))
    controller = await _scrape(controller_ops_app(Metrics(), Health()))
    pod = await start_pod(PodOptions(model="llama3-8b"))
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{pod.url}/metrics") as resp:
            assert resp.status == 200
            vllm = await resp.text()
    finally:
        await pod.stop()
    return _series(gateway) | _series(controller) | _series(vllm)


async def test_every_queried_metric_exists(served: set[str]) -> None:
    used = set().union(*(_metric_names(q) for q in _queries()))
    assert used, "the dashboard queries nothing"
    missing = sorted(used - served - KUBE_STATE_METRICS)
    assert not missing, f"dashboard queries series nobody serves: {missing}"


def test_metric_name_extraction_can_fail() -> None:
    names = _metric_names('sum by (model) (rate(no_such_metric_total{model=~"$model"}[1m]))')
    assert names == {"no_such_metric_total"}


def test_the_panels_the_issue_asks_for() -> None:
    titles = [p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"]]
    for needed in ["queue depth", "ttft p95 vs slo", "replicas", "nodes", "decision latency"]:
        assert any(needed in t for t in titles), f"no panel for {needed}: {titles}"


def test_dashboard_configmap_and_servicemonitors_match_services() -> None:
    objs = render("overlays/prod")
    cm = find(objs, "ConfigMap", "surgescale-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["surgescale.json"]) == json.loads(DASHBOARD.read_text())
    services = of_kind(objs, "Service")
    for monitor in of_kind(objs, "ServiceMonitor"):
        want = monitor["spec"]["selector"]["matchLabels"]
        chosen = [
            s
            for s in services
            if all(s["metadata"].get("labels", {}).get(k) == v for k, v in want.items())
        ]
        assert chosen, f"ServiceMonitor {monitor['metadata']['name']} selects no Service"
        for endpoint in monitor["spec"]["endpoints"]:
            for svc in chosen:
                ports = [p["name"] for p in svc["spec"]["ports"]]
                assert endpoint["port"] in ports, (monitor["metadata"]["name"], svc["metadata"])
