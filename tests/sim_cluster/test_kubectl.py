"""Real kubectl against the simulated server: get (tables), scale, apply, watch."""

from __future__ import annotations

import asyncio
import contextlib

from controller.crd import render_yaml
from sim.cluster import RunningCluster

from .conftest import Kubectl, eventually, kubectl_binary

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: llama
  labels: {app: llama}
spec:
  replicas: 1
  selector:
    matchLabels: {app: llama}
  template:
    metadata:
      labels: {app: llama}
    spec:
      containers:
      - name: vllm
        image: vllm/vllm-openai:latest
        resources:
          limits: {nvidia.com/gpu: 1}
"""

SCALER = """
apiVersion: surgescale.io/v1alpha1
kind: InferenceScaler
metadata:
  name: llama
spec:
  model: llama3-8b
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: llama}
  maxReplicas: 4
"""


async def test_get_lists_every_kind_with_columns(cluster: RunningCluster, kubectl: Kubectl) -> None:
    await eventually(
        lambda: cluster.store.count(cluster.resource("", "v1", "nodes")) == 1,
        what="the static pool's node",
    )
    r = await kubectl("get", "deploy,pods,nodes,nodepools,nodeclaims")
    assert r.code == 0, r.err
    assert "nodepool.karpenter.sh/gpu" in r.out
    assert "nodeclaim.karpenter.sh/gpu-" in r.out
    assert "NODECLASS" in r.out
    assert "STATUS" in r.out
    r = await kubectl("get", "nodepools", "-o", "wide")
    assert r.code == 0, r.err
    assert "WEIGHT" in r.out, r.err


async def test_apply_scale_and_watch(cluster: RunningCluster, kubectl: Kubectl) -> None:
    r = await kubectl("apply", "-f", "-", stdin=DEPLOYMENT)
    assert r.code == 0, r.err
    assert "deployment.apps/llama created" in r.out, r.err
    r = await kubectl("apply", "-f", "-", stdin=DEPLOYMENT.replace("replicas: 1", "replicas: 2"))
    assert r.code == 0, r.err
    assert "configured" in r.out, r.err
    r = await kubectl("scale", "deployment", "llama", "--replicas=3")
    assert r.code == 0, r.err
    deploys = cluster.resource("apps", "v1", "deployments")
    assert cluster.store.get(deploys, "default", "llama")["spec"]["replicas"] == 3

    proc = await asyncio.create_subprocess_exec(
        *kubectl.argv("get", "pods", "--watch"),
        env=kubectl.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        stdout = proc.stdout

        async def read_until_running() -> None:
            while True:
                line = (await stdout.readline()).decode()
                if not line:
                    return
                lines.append(line)
                if "Running" in line and "1/1" in line:
                    return

        await asyncio.wait_for(read_until_running(), 20)
        assert lines[0].split()[:3] == ["NAME", "READY", "STATUS"]
        assert any("1/1" in line and "Running" in line for line in lines), lines
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()

    r = await kubectl("scale", "nodepool", "gpu", "--replicas=2")
    assert r.code == 0, r.err
    pools = cluster.resource("karpenter.sh", "v1", "nodepools")
    assert cluster.store.get(pools, "", "gpu")["spec"]["replicas"] == 2
    await eventually(
        lambda: cluster.store.count(cluster.resource("", "v1", "nodes")) == 2, what="second node"
    )


async def test_apply_our_crd_and_an_inferencescaler(kubectl: Kubectl) -> None:
    r = await kubectl("apply", "-f", "-", stdin=render_yaml())
    assert r.code == 0, r.err
    assert "created" in r.out, r.err
    r = await kubectl("apply", "-f", "-", stdin=SCALER)
    assert r.code == 0, r.err
    assert "inferencescaler.surgescale.io/llama created" in r.out, r.err
    r = await kubectl("apply", "-f", "-", stdin=SCALER.replace("maxReplicas: 4", "maxReplicas: 6"))
    assert r.code == 0, r.err
    assert "configured" in r.out, r.err
    r = await kubectl("get", "inferencescalers")
    assert r.code == 0, r.err
    assert "llama" in r.out, r.err
    assert r.out.split()[:7] == [
        "NAME",
        "TARGET",
        "DESIRED",
        "CURRENT",
        "QUEUE",
        "TTFT-P95-MS",
        "READY",
    ]
    r = await kubectl("get", "inferencescalers", "-o", "wide")
    assert r.code == 0, r.err
    assert {"MODEL", "MIN", "MAX", "WARM", "REASON"} <= set(r.out.split()), r.out
    r = await kubectl("get", "inferencescaler", "llama", "-o", "jsonpath={.spec.maxReplicas}")
    assert r.out == "6"
    r = await kubectl("apply", "-f", "-", stdin=SCALER.replace("maxReplicas: 4", "maxReplicas: -3"))
    assert r.code != 0, (r.out, r.err)
    assert "invalid" in r.err.lower(), (r.out, r.err)


async def test_errors_come_back_as_kubectl_messages(kubectl: Kubectl) -> None:
    r = await kubectl("get", "deployment", "missing")
    assert r.code != 0
    assert 'deployments.apps "missing" not found' in r.err
    r = await kubectl("get", "widgets")
    assert r.code != 0


async def test_apply_with_a_typo_fails_like_a_real_server(kubectl: Kubectl) -> None:
    r = await kubectl("apply", "-f", "-", stdin=render_yaml())
    assert r.code == 0, r.err
    r = await kubectl("apply", "-f", "-", stdin=SCALER.replace("maxReplicas: 4", "maxReplica: 4"))
    if r.code == 0:  # kubectl < 1.25 asks for no field validation: the field is pruned instead
        assert kubectl.binary != kubectl_binary(), "kubectl 1.32 asks for Strict validation"
        got = await kubectl("get", "inferencescaler", "llama", "-o", "jsonpath={.spec}")
        assert '"maxReplica"' not in got.out
    else:
        assert 'unknown field "spec.maxReplica"' in r.err
