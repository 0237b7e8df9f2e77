"""The HTTP face of the simulated API server: routing, verbs, content negotiation, watch streams.

One catch-all aiohttp route parses Kubernetes URLs (`/api/v1/...`, `/apis/<g>/<v>/...`,
namespaced or not, with `status`/`scale` subresources) and dispatches to the verb handlers
below, which read and write the `Store`. Lists and gets return a Table when the client asks
(`tables.py`); discovery and OpenAPI documents come from `discovery.py` and `openapi.py`;
defaulting and validation run through the context's admission hooks (`admission.py`).
Every error is rendered as a `kind: Status` body with the right HTTP code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from . import discovery, errors, openapi, patches, protobuf, tables
from .context import (
    CTX,
    ApiContext,
    Target,
    error_response,
    json_response,
    wants_table,
)
from .resources import Registry, ResourceType
from .scale import scale_of, write_scale
from .selectors import FieldSelector, LabelSelector
from .store import Obj, clone
from .validation import SchemaValidator
from .watchstream import serve_watch

log = logging.getLogger(__name__)
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")


def _parse_resource_path(registry: Registry, parts: list[str]) -> Target | None:
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    watch_path = False
    if rest[:1] == ["watch"]:
        watch_path, rest = True, rest[1:]
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    rt = registry.get(group, version, rest[0])
    if rt is None:
        raise errors.page_not_found("/" + "/".join(parts))
    if namespace is not None and not rt.namespaced:
        raise errors.page_not_found("/" + "/".join(parts))
    name = rest[1] if len(rest) >= 2 else None
    sub = rest[2] if len(rest) == 3 else None
    if sub is not None and not (
        (sub == "status" and rt.has_status) or (sub == "scale" and rt.scale is not None)
    ):
        raise errors.page_not_found("/" + "/".join(parts))
    return Target(rt, namespace, name, sub, watch_path)


async def dispatch(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    parts = [p for p in request.path.split("/") if p]
    try:
        simple = _serve_simple(ctx, request, parts)
        if simple is not None:
            return simple
        target = _parse_resource_path(ctx.registry, parts)
        if target is None:
            raise errors.page_not_found(request.path)
        return await _serve_resource(ctx, request, target)
    except errors.ApiError as exc:
        return error_response(exc)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:  # a bug of ours: say so as a Status, keep serving
        log.exception("internal error serving %s %s", request.method, request.path)
        return error_response(errors.ApiError(500, "InternalError", f"internal error: {exc!r}"))


def _serve_simple(ctx: ApiContext, request: web.Request, parts: list[str]) -> web.Response | None:
    if request.method != "GET":
        return None
    reg = ctx.registry
    path = "/".join(parts)
    if path in ("healthz", "livez", "readyz"):
        return web.Response(text="ok")
    if path == "version":
        return json_response(discovery.version_info())
    if path == "api":
        return json_response(discovery.api_versions(ctx.server_address or request.host))
    if path == "apis":
        return json_response(discovery.api_group_list(reg))
    if path == "api/v1":
        return json_response(discovery.resource_list(reg, "", "v1"))
    if parts[:1] == ["apis"] and len(parts) in (2, 3):
        doc = (
            discovery.api_group(reg, parts[1])
            if len(parts) == 2
            else discovery.resource_list(reg, parts[1], parts[2])
        )
        if doc is None:
            raise errors.page_not_found(request.path)
        return json_response(doc)
    if path == "openapi/v2":
        if "protobuf" in request.headers.get("Accept", ""):
            return web.Response(
                body=openapi.v2_protobuf(),
                content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )
        return json_response(openapi.v2_json(reg))
    if path == "openapi/v3":
        return json_response(openapi.v3_root(reg))
    if parts[:2] == ["openapi", "v3"]:
        rest = parts[2:]
        doc = None
        if rest == ["api", "v1"]:
            doc = openapi.gv_document(reg, "", "v1")
        elif len(rest) == 3 and rest[0] == "apis":
            doc = openapi.gv_document(reg, rest[1], rest[2])
        if doc is None:
            raise errors.page_not_found(request.path)
        return json_response(doc)
    if path == "":
        return json_response(
            {
                "paths": [
                    "/api",
                    "/api/v1",
                    "/apis",
                    "/openapi/v2",
                    "/openapi/v3",
                    "/version",
                    "/healthz",
                ]
            }
        )
    return None


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise errors.bad_request("request body is empty")
    ctype = request.content_type or "application/json"
    if "protobuf" in ctype:
        return protobuf.decode_object(raw)
    if "yaml" in ctype:
        return patches.parse_body(raw, patches.APPLY)
    return patches.parse_body(raw, "application/json")


def _check_object(rt: ResourceType, obj: Any, target: Target) -> Obj:
    if not isinstance(obj, dict):
        raise errors.bad_request("the request body must be a JSON object")
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if (kind and kind != rt.kind) or (api_version and api_version != rt.api_version):
        raise errors.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version "
            f"({rt.api_version}) or kind ({kind} != {rt.kind})"
        )
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise errors.bad_request("metadata must be an object")
    if rt.namespaced and target.namespace is not None:
        if meta.get("namespace") and meta["namespace"] != target.namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        meta["namespace"] = target.namespace
    if target.name is not None and meta.get("name") and meta["name"] != target.name:
        raise errors.bad_request("the name of the object does not match the name on the URL")
    if target.name is not None:
        meta["name"] = target.name
    return obj


def _prune_unknown(request: web.Request, rt: ResourceType, obj: Obj) -> None:
    """Structural pruning of custom objects; with `fieldValidation=Strict` (kubectl's default)
    unknown fields are a 400, as the real server's strict decoding error."""
    if not isinstance(rt.validator, SchemaValidator):
        return
    dropped = rt.validator.prune(obj)
    if dropped and request.query.get("fieldValidation") == "Strict":
        fields = ", ".join(f'unknown field "{p}"' for p in dropped)
        raise errors.bad_request(
            f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
            f"strict decoding error: {fields}"
        )


def _ensure_namespace(ctx: ApiContext, rt: ResourceType, obj: Obj) -> None:
    if not rt.namespaced:
        return
    ns_rt = ctx.registry.require("", "v1", "namespaces")
    ns = obj["metadata"].get("namespace") or "default"
    if ctx.store.try_get(ns_rt, "", ns) is None:
        raise errors.not_found("namespaces", ns)


def _dry_run(request: web.Request) -> bool:
    return "All" in request.query.getall("dryRun", [])


async def _serve_resource(ctx: ApiContext, request: web.Request, t: Target) -> web.StreamResponse:
    method = request.method
    if t.name is None:
        if method == "GET":
            if t.watch_path or request.query.get("watch") in ("true", "1", "True"):
                return await serve_watch(ctx, request, t)
            return _list(ctx, request, t)
        if method == "POST":
            return await _create(ctx, request, t)
        if method == "DELETE":
            return await _delete_collection(ctx, request, t)
        raise errors.method_not_allowed(f"{method} is not supported on a collection")
    if t.watch_path and method == "GET":
        return await serve_watch(ctx, request, t)
    if method == "GET":
        obj = ctx.store.get(t.rt, t.namespace or "", t.name)
        if t.sub == "scale":
            return json_response(scale_of(t.rt, obj))
        if wants_table(request) and t.sub is None:
            return json_response(
                tables.to_table(
                    t.rt,
                    [obj],
                    resource_version=str(ctx.store.rv),
                    include=request.query.get("includeObject", "Metadata"),
                )
            )
        return json_response(obj)
    if method == "PUT":
        return await _update(ctx, request, t)
    if method == "PATCH":
        return await _patch(ctx, request, t)
    if method == "DELETE":
        return await _delete(ctx, request, t)
    raise errors.method_not_allowed(f"{method} is not supported")


def _list(ctx: ApiContext, request: web.Request, t: Target) -> web.Response:
    q = request.query
    try:
        limit = int(q.get("limit", "0") or 0)
    except ValueError as exc:
        raise errors.bad_request("limit must be an integer") from exc
    items, rv, token = ctx.store.select(
        t.rt,
        t.namespace,
        labels=LabelSelector.parse(q.get("labelSelector")),
        fields=FieldSelector.parse(q.get("fieldSelector")),
        limit=limit,
        continue_token=q.get("continue") or None,
    )
    if wants_table(request):
        return json_response(
            tables.to_table(
                t.rt,
                items,
                resource_version=rv,
                continue_token=token,
                include=q.get("includeObject", "Metadata"),
            )
        )
    meta: dict[str, Any] = {"resourceVersion": rv}
    if token:
        meta["continue"] = token
    return json_response(
        {
            "kind": f"{t.rt.kind}List",
            "apiVersion": t.rt.api_version,
            "metadata": meta,
            "items": items,
        }
    )


async def _create(ctx: ApiContext, request: web.Request, t: Target) -> web.Response:
    if t.sub is not None:
        raise errors.method_not_allowed("cannot create a subresource")
    obj = _check_object(t.rt, await _body(request), t)
    obj.pop("status", None) if t.rt.has_status and t.rt.plural not in ("nodes",) else None
    _ensure_namespace(ctx, t.rt, obj)
    _prune_unknown(request, t.rt, obj)
    ctx.admit(t.rt, obj, None)
    if _dry_run(request):
        return json_response(obj, 201)
    return json_response(ctx.store.create(t.rt, obj), 201)


def _apply_write(
    ctx: ApiContext,
    t: Target,
    old: Obj,
    new: Obj,
    *,
    dry: bool,
    request: web.Request | None = None,
) -> Obj:
    """Store `new` as the next version of `old`, honouring the subresource split."""
    assert t.name is not None
    rt = t.rt
    if t.sub == "status":
        merged = clone(old)
        merged["status"] = new.get("status", {})
        merged["metadata"]["resourceVersion"] = (
            new.get("metadata", {}).get("resourceVersion") or old["metadata"]["resourceVersion"]
        )
        new = merged
    elif rt.has_status and rt.plural not in ("nodes", "namespaces"):
        new["status"] = old.get("status", {}) if "status" in old else new.pop("status", None)
        if new.get("status") is None:
            new.pop("status", None)
    meta = new.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise errors.bad_request("metadata must be an object")
    if meta.get("name", t.name) != t.name:
        raise errors.bad_request("the name of the object does not match the name on the URL")
    meta["name"] = t.name
    if rt.namespaced:
        meta["namespace"] = t.namespace or "default"
    kind, api_version = new.get("kind"), new.get("apiVersion")
    if (kind and kind != rt.kind) or (api_version and api_version != rt.api_version):
        raise errors.bad_request(f"kind/apiVersion must be {rt.kind} {rt.api_version}")
    if request is not None:
        _prune_unknown(request, rt, new)
    ctx.admit(rt, new, old)
    if dry:
        return new
    return ctx.store.update(rt, new)


async def _update(ctx: ApiContext, request: web.Request, t: Target) -> web.Response:
    assert t.name is not None
    body = await _body(request)
    old = ctx.store.get(t.rt, t.namespace or "", t.name)
    if t.sub == "scale":
        return json_response(write_scale(ctx, t, old, body, dry=_dry_run(request)))
    obj = _check_object(t.rt, body, t)
    return json_response(_apply_write(ctx, t, old, obj, dry=_dry_run(request), request=request))


async def _patch(ctx: ApiContext, request: web.Request, t: Target) -> web.Response:
    assert t.name is not None
    raw = await request.read()
    ctype = request.headers.get("Content-Type", "")
    existing = ctx.store.try_get(t.rt, t.namespace or "", t.name)
    if existing is None and ctype.startswith(patches.APPLY) and t.sub is None:
        # server-side apply creates what does not exist yet
        obj = _check_object(t.rt, patches.parse_body(raw, patches.APPLY), t)
        _ensure_namespace(ctx, t.rt, obj)
        obj.pop("status", None)
        _prune_unknown(request, t.rt, obj)
        ctx.admit(t.rt, obj, None)
        if _dry_run(request):
            return json_response(obj, 201)
        return json_response(ctx.store.create(t.rt, obj), 201)
    old = ctx.store.get(t.rt, t.namespace or "", t.name)
    if t.sub == "scale":
        patched_scale = patches.apply_patch(scale_of(t.rt, old), raw, ctype)
        return json_response(write_scale(ctx, t, old, patched_scale, dry=_dry_run(request)))
    patched = patches.apply_patch(clone(old), raw, ctype)
    return json_response(_apply_write(ctx, t, old, patched, dry=_dry_run(request), request=request))


def _delete_options(request: web.Request, body: Any) -> tuple[int | None, str | None, str | None]:
    grace: int | None = None
    q = request.query.get("gracePeriodSeconds")
    if isinstance(body, dict) and body.get("gracePeriodSeconds") is not None:
        grace = int(body["gracePeriodSeconds"])
    elif q is not None:
        try:
            grace = int(q)
        except ValueError as exc:
            raise errors.bad_request("gracePeriodSeconds must be an integer") from exc
    pre = body.get("preconditions") or {} if isinstance(body, dict) else {}
    return grace, pre.get("resourceVersion"), pre.get("uid")


async def _delete(ctx: ApiContext, request: web.Request, t: Target) -> web.Response:
    assert t.name is not None
    if t.sub is not None:
        raise errors.method_not_allowed("cannot delete a subresource")
    if t.rt.plural == "namespaces" and t.rt.group == "" and t.name in PROTECTED_NAMESPACES:
        raise errors.ApiError(
            403,
            "Forbidden",
            f'namespaces "{t.name}" is forbidden: this namespace may not be deleted',
        )
    raw = await request.read()
    body = patches.parse_body(raw, "application/json") if raw.strip() else None
    grace, rv, uid = _delete_options(request, body)
    if _dry_run(request):
        return json_response(ctx.store.get(t.rt, t.namespace or "", t.name))
    obj = ctx.store.delete(
        t.rt, t.namespace or "", t.name, grace_seconds=grace, expect_rv=rv, expect_uid=uid
    )
    return json_response(obj)


async def _delete_collection(ctx: ApiContext, request: web.Request, t: Target) -> web.Response:
    q = request.query
    items, _, _ = ctx.store.select(
        t.rt,
        t.namespace,
        labels=LabelSelector.parse(q.get("labelSelector")),
        fields=FieldSelector.parse(q.get("fieldSelector")),
    )
    raw = await request.read()
    body = patches.parse_body(raw, "application/json") if raw.strip() else None
    grace, _, _ = _delete_options(request, body)
    deleted = []
    for obj in list(items):
        meta = obj["metadata"]
        with contextlib.suppress(errors.ApiError):
            deleted.append(
                ctx.store.delete(t.rt, meta.get("namespace", ""), meta["name"], grace_seconds=grace)
            )
    return json_response(
        {
            "kind": f"{t.rt.kind}List",
            "apiVersion": t.rt.api_version,
            "metadata": {"resourceVersion": str(ctx.store.rv)},
            "items": deleted,
        }
    )


def build_app(ctx: ApiContext) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024, middlewares=[ctx.faults.middleware])
    app[CTX] = ctx
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app
