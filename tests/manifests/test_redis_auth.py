"""The Redis the manifests deploy really requires its password: a private `redis-server` run with
the StatefulSet's own arguments and the ACL file its init container writes (the same shell
script, the password from the environment) refuses anonymous and default-user clients, lets the
URL the gateway and controller build from the Secret in, and its readiness probe passes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.localredis.server import find_redis_server, free_port, ping
from surgescale.events import close, connect
from tests.manifests.kube import find, render

PASSWORD = "0123456789abcdef" * 4


@pytest.fixture
def deployed_redis(tmp_path: Path) -> Iterator[int]:
    binary = find_redis_server()
    if binary is None:
        pytest.fail("redis-server is needed: install Redis (apt-get install redis-server)")
    pod = find(render("overlays/prod"), "StatefulSet", "surgescale-redis")["spec"]["template"]
    (init,) = pod["spec"]["initContainers"]
    (redis,) = pod["spec"]["containers"]
    acl_dir = next(m["mountPath"] for m in init["volumeMounts"] if m["name"] == "acl")
    script = init["command"][2].replace(acl_dir + "/", f"{tmp_path}/")
    env = {"PATH": os.environ["PATH"], "REDIS_PASSWORD": PASSWORD}
    subprocess.run(["sh", "-c", script], env=env, check=True, timeout=10)
    assert PASSWORD in (tmp_path / "users.acl").read_text()
    args = [a.replace(acl_dir + "/", f"{tmp_path}/") for a in redis["args"][1:]]
    port = free_port()
    proc = subprocess.Popen(
        [binary, *args, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not ping(f"redis://surgescale:{PASSWORD}@127.0.0.1:{port}/0", timeout=0.2):
            assert proc.poll() is None, "redis-server exited with the manifest's arguments"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_only_the_password_from_the_secret_gets_in(deployed_redis: int) -> None:
    port = deployed_redis
    assert not ping(f"redis://127.0.0.1:{port}/0"), "anonymous access"
    assert not ping(f"redis://default:{PASSWORD}@127.0.0.1:{port}/0"), "the default user is on"
    assert not ping(f"redis://surgescale:wrong@127.0.0.1:{port}/0")
    assert ping(f"redis://surgescale:{PASSWORD}@127.0.0.1:{port}/0")


async def test_the_parts_url_can_use_streams_but_not_administer(deployed_redis: int) -> None:
    client = connect(f"redis://surgescale:{PASSWORD}@127.0.0.1:{deployed_redis}/0")
    try:
        await client.xgroup_create("surgescale:t", "g", id="0", mkstream=True)
        await client.xadd("surgescale:t", {"e": "1"})
        got = await client.xreadgroup("g", "c", {"surgescale:t": ">"}, count=1)
        assert got
        with pytest.raises(Exception, match=r"(?i)permission"):
            await client.config_set("maxmemory", "1")
    finally:
        await close(client)


def test_the_readiness_probe_passes_with_the_secret(deployed_redis: int) -> None:
    pod = find(render("overlays/prod"), "StatefulSet", "surgescale-redis")["spec"]["template"]
    (redis,) = pod["spec"]["containers"]
    command = redis["readinessProbe"]["exec"]["command"]
    command = [*command[:-1], command[-1].replace("redis-cli", f"redis-cli -p {deployed_redis}")]
    env = {"PATH": os.environ["PATH"], "REDISCLI_AUTH": PASSWORD}
    assert subprocess.run(command, env=env, timeout=10).returncode == 0
    env["REDISCLI_AUTH"] = "wrong"
    assert subprocess.run(command, env=env, timeout=10, capture_output=True).returncode != 0
