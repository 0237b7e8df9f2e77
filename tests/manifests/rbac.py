"""Record what a client really asks the API server, and judge it against RBAC rules.

`RecordingProxy` is a loopback HTTP reverse proxy put between one identity (the controller, the
gateway) and the simulated API server: every request is forwarded unchanged (watches are
streamed) and remembered. `attributes()` turns a request into Kubernetes authorization
attributes (verb, API group, resource, subresource, namespace, name) the way the API server's
request-info resolver does, and `Authorizer` evaluates them against the Roles/ClusterRoles that
the rendered manifests bind to a ServiceAccount (RoleBinding: its namespace only;
ClusterRoleBinding: everywhere), including `resourceNames`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web

from tests.manifests.kube import Obj, find, of_kind

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "upgrade",
    "te",
    "trailer",
}


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    query: str


@dataclass(frozen=True, slots=True)
class Attributes:
    """What RBAC decides on (`resource` is empty for non-resource URLs such as /api)."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def __str__(self) -> str:
        if not self.resource:
            return f"{self.verb} {self.path}"
        where = f" in {self.namespace}" if self.namespace else " (cluster)"
        group = self.group or "core"
        return f"{self.verb} {group}/{self.full_resource}{where}" + (
            f" name={self.name}" if self.name else ""
        )


def attributes(call: Call) -> Attributes:
    parts = [p for p in call.path.split("/") if p]
    method = call.method.upper()
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return Attributes(verb=method.lower(), path=call.path)
    if not rest:  # discovery of one group version
        return Attributes(verb=method.lower(), path=call.path)
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    watch = parse_qs(call.query).get("watch", [""])[-1]
    # The API server reads it with Go's strconv.ParseBool (kubernetes_asyncio sends "True").
    if method == "GET" and watch in ("1", "t", "T", "TRUE", "true", "True"):
        verb = "watch"
    elif method == "GET":
        verb = "get" if name else "list"
    else:
        verb = {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection",
        }[method]
    return Attributes(
        verb=verb,
        group=group,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
        path=call.path,
    )


DISCOVERY_PREFIXES = ("/api", "/apis", "/version", "/openapi", "/healthz", "/livez", "/readyz")
"""Non-resource URLs every authenticated user may GET (the default system:discovery and
system:public-info-viewer ClusterRoles)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """One rule of a role, where it applies (namespace None = cluster-wide)."""

    namespace: str | None
    rule: Obj
    source: str

    def permits(self, attrs: Attributes) -> bool:
        if not attrs.resource:
            return False
        if self.namespace is not None and attrs.namespace != self.namespace:
            return False
        r = self.rule
        if attrs.group not in r.get("apiGroups", []):
            return False
        if attrs.full_resource not in r.get("resources", []):
            return False
        if attrs.verb not in r.get("verbs", []):
            return False
        names = r.get("resourceNames")
        return not names or attrs.name in names


@dataclass(slots=True)
class Authorizer:
    """The rules bound to one ServiceAccount in the rendered manifests."""

    grants: list[Grant] = field(default_factory=list)

    @classmethod
    def for_service_account(cls, objs: list[Obj], name: str, namespace: str) -> Authorizer:
        out = cls()
        for binding in of_kind(objs, "RoleBinding", "ClusterRoleBinding"):
            subjects = binding.get("subjects", [])
            if not any(
                s["kind"] == "ServiceAccount"
                and s["name"] == name
                and s.get("namespace") == namespace
                for s in subjects
            ):
                continue
            ref = binding["roleRef"]
            role = find(objs, ref["kind"], ref["name"])
            scope = binding["metadata"]["namespace"] if binding["kind"] == "RoleBinding" else None
            if ref["kind"] == "Role":
                assert role["metadata"]["namespace"] == scope, binding
            for rule in role["rules"]:
                out.grants.append(Grant(scope, rule, f"{ref['kind']}/{ref['name']}"))
        return out

    def allowed(self, attrs: Attributes) -> bool:
        if not attrs.resource:
            return attrs.verb == "get" and attrs.path.startswith(DISCOVERY_PREFIXES)
        return any(g.permits(attrs) for g in self.grants)

    def granted(self) -> set[tuple[str, str, str]]:
        """(apiGroup, resource, verb) for every rule."""
        return {
            (group, resource, verb)
            for g in self.grants
            for group in g.rule["apiGroups"]
            for resource in g.rule["resources"]
            for verb in g.rule["verbs"]
        }


class RecordingProxy:
    """A reverse proxy on 127.0.0.1 that logs every request before forwarding it."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.calls: list[Call] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._open: set[web.StreamResponse] = set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None)
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        self.calls.append(Call(request.method, request.path, request.query_string))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
            )
            await response.prepare(request)
            self._open.add(response)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionResetError, aiohttp.ClientError):
                pass  # the client or the server went away mid-stream (a watch being closed)
            finally:
                self._open.discard(response)
            return response

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def kubeconfig(self, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "proxy", "user": {"token": "sim"}}],
            "contexts": [
                {
                    "name": "proxy",
                    "context": {"cluster": "proxy", "user": "proxy", "namespace": namespace},
                }
            ],
            "current-context": "proxy",
        }


UNUSED_OK: dict[tuple[str, str, str], str] = {
    ("apps", "deployments/scale", "get"): "re-read of the scale after a 409 on the PATCH",
    ("karpenter.sh", "nodepools/scale", "get"): "re-read of the scale after a 409 on the PATCH",
    ("", "pods", "list"): "a model's pods are ranked before a scale-down, which a burst lacks",
    ("", "pods", "patch"): "their pod-deletion-cost is set before a scale-down, ditto",
    ("autoscaling.x-k8s.io", "capacitybuffers", "get"): "capacity.strategy CapacityBuffer only",
    ("autoscaling.x-k8s.io", "capacitybuffers", "patch"): "capacity.strategy CapacityBuffer only",
    ("coordination.k8s.io", "leases", "list"): "controller --shards > 1 lists member Leases only",
}
"""Granted permissions a short run may not exercise, and why they are still needed."""


def denied_calls(rbac: Authorizer, calls: list[Call]) -> list[str]:
    """The recorded calls the rules do not permit (empty when all are allowed)."""
    return sorted({str(a) for a in map(attributes, calls) if not rbac.allowed(a)})


def unused_grants(rbac: Authorizer, calls: list[Call]) -> list[tuple[str, str, str]]:
    """Granted (group, resource, verb) never used by `calls` and not explained in UNUSED_OK."""
    used = {(a.group, a.full_resource, a.verb) for a in map(attributes, calls) if a.resource}
    return sorted(rbac.granted() - used - set(UNUSED_OK))


def used_grants(calls: list[Call]) -> set[tuple[str, str, str]]:
    return {(a.group, a.full_resource, a.verb) for a in map(attributes, calls) if a.resource}
