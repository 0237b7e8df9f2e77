"""Secure by default: what the rendered overlays promise about credentials and exposure.

prod's gateway requires API keys from a Secret and is never told to serve open (dev says so
explicitly); the gateway sends vLLM a key from the Secret vLLM itself reads (`VLLM_API_KEY`);
Redis needs a password (default user off, protected mode on) that every part reads from a
Secret through the environment; no secret is ever on a command line; only the gateway reaches
vLLM's API port; vLLM drains before it stops, within a grace period longer than the longest
stream the gateway allows.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.manifests.kube import Obj, find, of_kind, pod_specs, render

OVERLAYS = ["overlays/dev", "overlays/prod"]


def _containers(pod: Obj) -> list[Obj]:
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def _env(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def _secret_ref(container: Obj, name: str) -> dict[str, Any]:
    env = _env(container)
    assert name in env, f"{container['name']} has no {name}"
    ref = env[name].get("valueFrom", {}).get("secretKeyRef")
    assert ref is not None, f"{name} of {container['name']} does not come from a Secret"
    assert not ref.get("optional", False), f"{name} of {container['name']} is optional"
    return dict(ref)


def _gateway_yaml(objs: list[Obj]) -> dict[str, Any]:
    text = find(objs, "ConfigMap", "surgescale-gateway")["data"]["gateway.yaml"]
    return dict(yaml.safe_load(text))


def test_prod_gateway_requires_keys_from_a_secret_and_is_never_open() -> None:
    objs = render("overlays/prod")
    (gateway,) = find(objs, "Deployment", "surgescale-gateway")["spec"]["template"]["spec"][
        "containers"
    ]
    _secret_ref(gateway, "SURGESCALE_GATEWAY_API_KEYS")
    assert not _gateway_yaml(objs).get("allow_unauthenticated", False)
    assert "SURGESCALE_GATEWAY_ALLOW_UNAUTHENTICATED" not in _env(gateway)
    assert "--allow-unauthenticated" not in gateway.get("args", [])
    assert not of_kind(objs, "Secret"), "prod must not ship Secret values"


def test_dev_says_explicitly_that_it_serves_open() -> None:
    assert _gateway_yaml(render("overlays/dev"))["allow_unauthenticated"] is True


def test_vllm_key_comes_from_the_secret_the_gateway_sends() -> None:
    objs = render("overlays/prod")
    (vllm,) = find(objs, "Deployment", "llama3-8b")["spec"]["template"]["spec"]["containers"]
    (gateway,) = find(objs, "Deployment", "surgescale-gateway")["spec"]["template"]["spec"][
        "containers"
    ]
    assert _secret_ref(vllm, "VLLM_API_KEY") == _secret_ref(
        gateway, "SURGESCALE_GATEWAY_UPSTREAM_API_KEY"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_needs_a_password_from_a_secret_and_keeps_protected_mode(overlay: str) -> None:
    objs = render(overlay)
    pod = find(objs, "StatefulSet", "surgescale-redis")["spec"]["template"]["spec"]
    (redis,) = pod["containers"]
    args = redis["args"]
    assert args[args.index("--protected-mode") + 1] == "yes"
    acl = args[args.index("--aclfile") + 1]
    (init,) = pod["initContainers"]
    script = " ".join(init["command"])
    assert "user default off" in script, "the passwordless default user must be off"
    assert acl in script
    password = _secret_ref(init, "REDIS_PASSWORD")
    for name in ("surgescale-gateway", "surgescale-controller"):
        (container,) = find(objs, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert _secret_ref(container, "SURGESCALE_REDIS_PASSWORD") == password
        urls = [
            e["value"] for e in container["env"] if e["name"].endswith("REDIS_URL") and "value" in e
        ]
        assert urls, f"{name} has no Redis URL"
        assert all("$(SURGESCALE_REDIS_PASSWORD)@" in u for u in urls), urls


_SECRETISH = re.compile(
    r"pass(word)?|secret|token|api[-_]?key|requirepass|://[^/\s]*:[^/\s]*@", re.I
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_on_any_command_line(overlay: str) -> None:
    for obj, pod in pod_specs(render(overlay)):
        for container in _containers(pod):
            argv = list(container.get("command", [])) + list(container.get("args", []))
            for arg in argv:
                assert not re.search(r"://[^/\s$]*:[^/\s$]+@", arg), (obj["metadata"]["name"], arg)
                assert not arg.startswith(("--api-key", "--requirepass", "--password")), arg
                assert "requirepass" not in arg, arg
            for env in container.get("env", []):
                if _SECRETISH.search(env["name"]) and "value" in env:
                    assert "$(" in env["value"] or not env["value"], (
                        f"{env['name']} of {obj['metadata']['name']} holds a literal secret"
                    )


def _ingress_peers(objs: list[Obj], labels: dict[str, str], port: int) -> list[Obj]:
    peers: list[Obj] = []
    for policy in of_kind(objs, "NetworkPolicy"):
        want = policy["spec"]["podSelector"].get("matchLabels", {})
        if not all(labels.get(k) == v for k, v in want.items()):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is None or any(p.get("port") == port for p in ports):
                peers.extend(rule.get("from", [{"anyone": True}]))
    return peers


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_reaches_the_model_api_port(overlay: str) -> None:
    objs = render(overlay)
    model = find(objs, "Deployment", "llama3-8b")["spec"]["template"]["metadata"]["labels"]
    peers = _ingress_peers(objs, model, 8000)
    assert peers == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "surgescale-gateway"}}}
    ]
    controller = find(objs, "Deployment", "surgescale-controller")["spec"]["template"]
    metrics = _ingress_peers(objs, controller["metadata"]["labels"], 9090)
    assert metrics, "monitoring can no longer scrape the controller"
    assert all("namespaceSelector" in p for p in metrics), metrics


def test_vllm_drains_within_a_grace_period_longer_than_the_longest_stream() -> None:
    objs = render("overlays/prod")
    pod = find(objs, "Deployment", "llama3-8b")["spec"]["template"]["spec"]
    (vllm,) = pod["containers"]
    drain = " ".join(vllm["lifecycle"]["preStop"]["exec"]["command"])
    assert "vllm:num_requests_" in drain, "preStop must wait for vLLM's in-flight requests"
    bound = int(re.search(r"monotonic\(\) \+ (\d+)", drain).group(1))  # type: ignore[union-attr]
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > bound
    max_len = int(next(a for a in vllm["args"] if a.startswith("--max-model-len=")).split("=")[1])
    limits = _gateway_yaml(objs)["request_limits"]["llama3-8b"]
    assert limits["max_output_tokens"] <= max_len
    worst_tpot_s = 0.04  # a full batch of long contexts on one H200 (docs/deploy.md)
    assert bound >= limits["max_output_tokens"] * worst_tpot_s


def test_a_gateway_replica_that_goes_away_lets_the_longest_stream_finish() -> None:
    objs = render("overlays/prod")
    pod = find(objs, "Deployment", "surgescale-gateway")["spec"]["template"]["spec"]
    drain = _gateway_yaml(objs)["drain_timeout_s"]
    limits = _gateway_yaml(objs)["request_limits"]["llama3-8b"]
    assert drain >= limits["max_output_tokens"] * 0.04
    assert pod["terminationGracePeriodSeconds"] > drain
