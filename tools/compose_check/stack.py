"""docker-compose.yml brought up with podman-compose, one dependency level at a time, each service
waited for as its dependents ask (`service_healthy`: its healthcheck passes, run by this module
since podman before 4.6 neither schedules healthchecks without systemd nor waits for them;
`service_completed_successfully`: it exited 0; `service_started`: it runs). Then the load
generator runs to its end while the model's replicas and the NodePool are read from the simulated
API server, and everything the project made is removed: containers, networks, volumes."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tools.compose_check.engine import Engine
from tools.compose_check.steps import CheckError, run, say, tail

PROJECT_LABEL = "io.podman.compose.project"
SERVICE_LABEL = "com.docker.compose.service"

_READ_SCALE = """
import json, sys, urllib.request
def get(path):
    req = urllib.request.Request("http://127.0.0.1:" + sys.argv[1] + path,
                                 headers={"Authorization": "Bearer sim"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.load(resp)
dep = get("/apis/apps/v1/namespaces/%s/deployments/%s" % (sys.argv[2], sys.argv[3]))
pool = get("/apis/karpenter.sh/v1/nodepools/" + sys.argv[4])
print(json.dumps({"replicas": dep["spec"].get("replicas", 0),
                  "ready": dep.get("status", {}).get("readyReplicas", 0),
                  "nodes": pool["spec"].get("replicas", 0)}))
"""


def _flag(argv: list[str], name: str) -> str:
    for arg in argv:
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    raise CheckError("compose file", f"{name} not in {argv}")


def rewrite(argv: list[str], replace: dict[str, str]) -> list[str]:
    """`--flag=value` replaced for each flag in `replace`; every one must be present."""
    out = [
        f"{a.split('=', 1)[0]}={replace[a.split('=', 1)[0]]}"
        if a.split("=", 1)[0] in replace
        else a
        for a in argv
    ]
    missing = {f for f in replace if not any(a.startswith(f"{f}=") for a in argv)}
    if missing:
        raise CheckError("compose file", f"{argv} lacks {sorted(missing)}")
    return out


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What to bring up, in which order, and what to wait for."""

    project: str
    levels: list[list[str]]
    wait: dict[str, str]
    """service -> "healthy" | "completed" | "started" | "finished" (the load: runs to its end)."""
    health_bound_s: dict[str, float]
    load: str
    cluster: str
    api_port: str
    namespace: str
    deployment: str
    nodepool: str


def plan(compose: dict[str, Any]) -> Plan:
    services: dict[str, Any] = compose["services"]
    wait: dict[str, str] = {}
    for svc in services.values():
        for dep, cond in (svc.get("depends_on") or {}).items():
            kind = {
                "service_healthy": "healthy",
                "service_completed_successfully": "completed",
            }.get(cond.get("condition", ""), "started")
            if wait.get(dep) not in {"healthy", "completed"}:
                wait[dep] = kind
    loads = [n for n, s in services.items() if s.get("command", [])[:2] == ["sim", "load"]]
    if len(loads) != 1:
        raise CheckError("compose file", f"expected one `sim load` service, found {loads}")
    (load,) = loads
    wait[load] = "finished"
    for name in services:
        wait.setdefault(name, "started")
    levels: list[list[str]] = []
    placed: set[str] = set()
    while len(placed) < len(services):
        level = sorted(
            n
            for n, s in services.items()
            if n not in placed and set(s.get("depends_on") or {}) <= placed
        )
        if not level:
            raise CheckError("compose file", "depends_on has a cycle")
        levels.append(level)
        placed |= set(level)
    bounds = {}
    for name, svc in services.items():
        check = svc.get("healthcheck") or {}
        interval = float(str(check.get("interval", "2s")).rstrip("s"))
        bounds[name] = max(60.0, interval * int(check.get("retries", 30)))
    (cluster_name,) = [
        n for n, s in services.items() if s.get("command", [])[:2] == ["sim", "cluster"]
    ]
    cluster = services[cluster_name]["command"]
    (gateway,) = [
        s["command"] for s in services.values() if s.get("command", [])[:1] == ["gateway"]
    ]
    _model, deployment = _flag(gateway, "--model").split("=", 1)
    return Plan(
        project=compose.get("name", "surgescale"),
        levels=levels,
        wait=wait,
        health_bound_s=bounds,
        load=load,
        cluster=cluster_name,
        api_port=_flag(cluster, "--port"),
        namespace=_flag(gateway, "--namespace"),
        deployment=deployment,
        nodepool=_flag(cluster, "--nodepool").split(":", 1)[0],
    )


@dataclass
class Scale:
    """The most the model and its NodePool were scaled to, and where they started."""

    initial_replicas: int | None = None
    max_replicas: int = 0
    max_ready: int = 0
    max_nodes: int = 0
    samples: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Stack:
    engine: Engine
    compose_file: Path
    override: Path
    env: dict[str, str]
    plan: Plan
    ready_s: dict[str, float] = field(default_factory=dict)
    """Seconds from `up` of each dependency level until it was as its dependents need it."""

    def compose(self, *args: str, step: str, timeout: float = 300) -> None:
        files = ["-f", str(self.compose_file), "-f", str(self.override)]
        run(
            [*self.engine.compose, "--in-pod", "false", *files, *args],
            step=step,
            timeout=timeout,
            env=self.env,
        )

    def podman(self, *args: str, step: str, timeout: float = 60, check: bool = True) -> str:
        return run([self.engine.podman, *args], step=step, timeout=timeout, check=check).stdout

    def container(self, service: str) -> str:
        names = self.podman(
            "ps", "-a", "--format", "{{.Names}}",
            "--filter", f"label={PROJECT_LABEL}={self.plan.project}",
            "--filter", f"label={SERVICE_LABEL}={service}",
            step=f"service {service}",
        ).split()  # fmt: skip
        if len(names) != 1:
            raise CheckError(f"service {service}", f"expected one container, found {names}")
        return names[0]

    def logs(self, service: str, lines: int = 40) -> str:
        try:
            name = self.container(service)
        except CheckError as exc:
            return str(exc)
        proc = run(
            [self.engine.podman, "logs", "--tail", str(lines), name],
            step="logs",
            timeout=30,
            check=False,
        )
        return tail(proc.stdout + proc.stderr, lines)

    def state(self, service: str) -> tuple[str, int]:
        out = self.podman(
            "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
            self.container(service), step=f"service {service}",
        ).split()  # fmt: skip
        return out[0], int(out[1])

    def fail(self, service: str, message: str) -> CheckError:
        return CheckError(
            f"service {service}", f"{message}; its last log lines:\n{self.logs(service)}"
        )

    def wait_for(
        self, service: str, *, bound_s: float, on_tick: Callable[[], None] | None = None
    ) -> None:
        kind = self.plan.wait[service]
        deadline = time.monotonic() + bound_s
        while True:
            status, code = self.state(service)
            if kind in {"completed", "finished"} and status in {"exited", "stopped"}:
                if code != 0:
                    raise self.fail(service, f"exited {code}")
                return
            if status in {"exited", "stopped"}:
                raise self.fail(service, f"stopped (exit {code}) while it should run")
            if kind == "started" and status == "running":
                return
            if kind == "healthy" and status == "running":
                probe = run(
                    [self.engine.podman, "healthcheck", "run", self.container(service)],
                    step=f"service {service}",
                    timeout=30,
                    check=False,
                )
                if probe.returncode == 0:
                    return
            if on_tick is not None:
                on_tick()
            if time.monotonic() > deadline:
                raise self.fail(service, f"not {kind} within {bound_s:.0f} s")
            time.sleep(1.0)

    def read_scale(self, scale: Scale) -> None:
        p = self.plan
        out = run(
            [
                self.engine.podman, "exec", self.container(p.cluster), "python", "-c",
                _READ_SCALE, p.api_port, p.namespace, p.deployment, p.nodepool,
            ],
            step="figures", timeout=30, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            scale.errors.append(tail(out.stderr, 3))
            return
        now = json.loads(out.stdout)
        if scale.initial_replicas is None:
            scale.initial_replicas = now["replicas"]
        scale.max_replicas = max(scale.max_replicas, now["replicas"])
        scale.max_ready = max(scale.max_ready, now["ready"])
        scale.max_nodes = max(scale.max_nodes, now["nodes"])
        scale.samples += 1

    def up(self, *, load_bound_s: float) -> tuple[dict[str, Any], Scale]:
        """Bring every level up and wait for it; returns the load's figures and the scale seen."""
        scale = Scale()
        for level in self.plan.levels:
            say(f"up: {' '.join(level)}")
            started = time.monotonic()
            self.compose("up", "-d", "--no-deps", *level, step=f"compose up {' '.join(level)}")
            for service in level:
                if service == self.plan.load:
                    continue
                self.wait_for(service, bound_s=self.plan.health_bound_s[service])
            if self.plan.load in level:
                self.read_scale(scale)
                self.wait_for(
                    self.plan.load,
                    bound_s=load_bound_s,
                    on_tick=functools.partial(self.read_scale, scale),
                )
                self.read_scale(scale)
            self.ready_s[" ".join(level)] = round(time.monotonic() - started, 1)
        out = run(
            [self.engine.podman, "logs", self.container(self.plan.load)],
            step=f"service {self.plan.load}", timeout=60,
        )  # fmt: skip
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            raise self.fail(self.plan.load, "printed no JSON figures")
        figures: dict[str, Any] = json.loads(lines[-1])
        return figures, scale

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label={PROJECT_LABEL}={self.plan.project}"
        found = {}
        for kind, args in (
            ("containers", ["ps", "-a", "-q", "--filter", label]),
            ("networks", ["network", "ls", "-q", "--filter", label]),
            ("volumes", ["volume", "ls", "-q", "--filter", label]),
        ):
            found[kind] = self.podman(*args, step="teardown", check=False).split()
        return found

    def down(self) -> dict[str, list[str]]:
        """Remove everything the project made, whatever state it is in; returns what is left."""
        try:
            self.compose("down", "-v", "-t", "5", step="teardown", timeout=180)
        except CheckError as exc:
            say(f"compose down failed, removing by label: {exc}")
        left = self.leftovers()
        if left["containers"]:
            self.podman("rm", "-f", "-v", *left["containers"], step="teardown", check=False)
        if left["networks"]:
            self.podman("network", "rm", "-f", *left["networks"], step="teardown", check=False)
        if left["volumes"]:
            self.podman("volume", "rm", "-f", *left["volumes"], step="teardown", check=False)
        return {k: v for k, v in self.leftovers().items() if v}


def load_compose(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def write_override(compose: dict[str, Any], plan_: Plan, path: Path, *, load_s: int) -> None:
    """A second compose file that shortens the load (the only change to the demo's services)."""
    argv = compose["services"][plan_.load]["command"]
    short = rewrite(argv, {"--at": "2", "--pattern-duration": str(load_s)})
    path.write_text(yaml.safe_dump({"services": {plan_.load: {"command": short}}}))
