"""The provider's administration over HTTP, under `/v1/admin/`: the operations of
`coffre server tenant | token | recycle` (admin.py), JSON in and out, for admin tokens only.

    GET  /v1/admin/tenants                      {"tenants": [...]}
    POST /v1/admin/tenants                      {name, display_name?, contact?, quota_soft?,
                                                quota_hard?} -> 201
    GET  /v1/admin/tenants/{tenant}             repositories, tokens, quota, recycle bin
    POST /v1/admin/tenants/{tenant}/state       {state: active|read-only|disabled, motive}
    POST /v1/admin/tenants/{tenant}/quota       {soft?, hard?}: bytes or "50GiB"; null = none;
                                                absent = unchanged
    GET  /v1/admin/tokens[?tenant=T]            {"tokens": [...]} (never a secret)
    POST /v1/admin/tokens                       {tenant, role, label?, expires_ns?} or {admin: true, ...}
                                                -> 201 {"token": {...}, "secret": "cft_..."} (shown once)
    POST /v1/admin/tokens/{id}/revoke           {motive}
    GET  /v1/admin/recycle[?tenant=T]           the bin per repository (and each object of T)
    POST /v1/admin/recycle/{tenant}/restore     {motive, repository?, since_ns?, until_ns?}
    POST /v1/admin/recycle/{tenant}/purge       {motive, older_than_days?}
    GET  /v1/admin/usage[?month=YYYY-MM]        as `coffre server usage --json` (default: this month)

The motive is the body's "motive" field, else the `X-Coffre-Motive` header (ASCII only: a
motive in French goes in the body). Any other token is refused with 403 `forbidden`, an
absent or invalid one with 401, both journaled. Errors: 400 bad_request, 404 not_found (no
such tenant or token), 409 exists (a tenant of that name).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from coffre.core.errors import UsageError
from coffre.core.i18n import _
from coffre.core.sizes import parse_size
from coffre.server import admin, audit, http, tenants
from coffre.server.context import ServerContext
from coffre.server.roles import Principal, Privilege

MAX_BODY = 64 * 1024
Handler = Callable[[Request], Awaitable[Response]]


def routes(ctx: ServerContext) -> list[BaseRoute]:
    def route(path: str, method: str, operation: str,
              fn: Callable[[Request, admin.Actor], Awaitable[Any]], status: int = 200) -> Route:
        async def endpoint(request: Request) -> Response:
            actor = await _admin(ctx, request, "admin." + operation)
            try:
                doc = await fn(request, actor)
            except admin.Unknown as exc:
                raise http.Refusal(404, "not_found", exc.message) from None
            except admin.Conflict as exc:
                raise http.Refusal(409, "exists", exc.message) from None
            except UsageError as exc:
                raise http.Refusal(400, "bad_request", exc.message) from None
            return JSONResponse(doc, status_code=status)
        return Route(path, endpoint, methods=[method], name="admin." + operation)

    def run(fn: Callable[..., Any], *args: Any, **kw: Any) -> Awaitable[Any]:
        return http.in_thread(lambda: fn(*args, **kw))

    async def list_tenants(request: Request, actor: admin.Actor) -> Any:
        return {"tenants": await run(admin.list_tenants, ctx, actor)}

    async def add_tenant(request: Request, actor: admin.Actor) -> Any:
        body = await _body(request)
        return await run(admin.add_tenant, ctx, actor, _text(body, "name", required=True),
                         _text(body, "display_name"), _text(body, "contact"),
                         _size(body, "quota_soft"), _size(body, "quota_hard"))

    async def show_tenant(request: Request, actor: admin.Actor) -> Any:
        return await run(admin.show_tenant, ctx, actor, request.path_params["tenant"])

    async def set_state(request: Request, actor: admin.Actor) -> Any:
        body = await _body(request)
        state = _text(body, "state", required=True)
        if state not in tenants.STATES:
            raise UsageError(_("unknown tenant state {state}").format(state=state))
        return await run(admin.set_state, ctx, actor, request.path_params["tenant"], state,
                         _motive(request, body))

    async def set_quota(request: Request, actor: admin.Actor) -> Any:
        body = await _body(request)
        soft = _size(body, "soft") if "soft" in body else tenants.KEEP
        hard = _size(body, "hard") if "hard" in body else tenants.KEEP
        return await run(admin.set_quota, ctx, actor, request.path_params["tenant"], soft, hard,
                         _motive(request, body))

    async def list_tokens(request: Request, actor: admin.Actor) -> Any:
        return {"tokens": await run(admin.list_tokens, ctx, actor, request.query_params.get("tenant"))}

    async def add_token(request: Request, actor: admin.Actor) -> Any:
        body = await _body(request)
        is_admin = body.get("admin") is True or body.get("role") == "admin"
        tenant = None if is_admin else _text(body, "tenant", required=True)
        role = "admin" if is_admin else _text(body, "role", required=True)
        expires = body.get("expires_ns")
        if expires is not None and (not isinstance(expires, int) or isinstance(expires, bool)):
            raise UsageError(_("{field} must be an integer").format(field="expires_ns"))
        doc, secret = await run(admin.add_token, ctx, actor, tenant, role, _text(body, "label"), expires)
        return {"token": doc, "secret": secret}

    async def revoke_token(request: Request, actor: admin.Actor) -> Any:
        body = await _body(request)
        return await run(admin.revoke_token, ctx, actor, request.path_params["id"], _motive(request, body))

    async def recycle_list(request: Request, actor: admin.Actor) -> Any:
        return await run(admin.recycle_list, ctx, actor, request.query_params.get("tenant"))

    async def recycle_restore(request: Request, actor: admin.Actor) -> Any:
        body = await _body(request)
        return await run(admin.recycle_restore, ctx, actor, request.path_params["tenant"],
                         _motive(request, body), _text(body, "repository") or None,
                         _int(body, "since_ns"), _int(body, "until_ns"))

    async def recycle_purge(request: Request, actor: admin.Actor) -> Any:
        body = await _body(request)
        days = body.get("older_than_days")
        if days is not None and (not isinstance(days, int | float) or isinstance(days, bool)):
            raise UsageError(_("{field} must be a number").format(field="older_than_days"))
        return await run(admin.recycle_purge, ctx, actor, request.path_params["tenant"],
                         _motive(request, body), days)

    async def usage(request: Request, actor: admin.Actor) -> Any:
        return await run(admin.usage, ctx, actor, request.query_params.get("month"))

    return [
        route("/v1/admin/tenants", "GET", "tenant.list", list_tenants),
        route("/v1/admin/tenants", "POST", "tenant.add", add_tenant, 201),
        route("/v1/admin/tenants/{tenant}", "GET", "tenant.show", show_tenant),
        route("/v1/admin/tenants/{tenant}/state", "POST", "tenant.state", set_state),
        route("/v1/admin/tenants/{tenant}/quota", "POST", "tenant.quota", set_quota),
        route("/v1/admin/tokens", "GET", "token.list", list_tokens),
        route("/v1/admin/tokens", "POST", "token.add", add_token, 201),
        route("/v1/admin/tokens/{id}/revoke", "POST", "token.revoke", revoke_token),
        route("/v1/admin/recycle", "GET", "recycle.list", recycle_list),
        route("/v1/admin/recycle/{tenant}/restore", "POST", "recycle.restore", recycle_restore),
        route("/v1/admin/recycle/{tenant}/purge", "POST", "recycle.purge", recycle_purge),
        route("/v1/admin/usage", "GET", "usage", usage),
    ]


async def _admin(ctx: ServerContext, request: Request, operation: str) -> admin.Actor:
    """The admin token's actor; Refusal 401 (no valid token) or 403 (not an admin token),
    journaled."""
    principal = await http.authenticate(ctx, request, operation)
    client = http.client_address(ctx, request)
    if not principal.may(Privilege.ADMIN):
        await http.in_thread(_journal_refusal, ctx, principal, client, operation)
        raise http.Refusal(403, "forbidden", "this route is for the provider's admin tokens")
    return admin.Actor(principal.token_id, client)


def _journal_refusal(ctx: ServerContext, p: Principal, client: str, operation: str) -> None:
    tenant = p.tenant_id if p.tenant_id is not None else audit.PROVIDER
    with ctx.db.begin() as conn:
        audit.append(ctx.db, conn, audit.Entry(tenant, operation, "forbidden", p.token_id, client),
                     ctx.clock.now_ns())


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object (bounded); {} for an empty body."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise UsageError(_too_big())
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise UsageError(_too_big())
    if not data.strip():
        return {}
    try:
        doc = json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError):
        raise UsageError(_("the request body is not valid JSON")) from None
    if not isinstance(doc, dict):
        raise UsageError(_too_big())
    return doc


def _too_big() -> str:
    return _("the request body must be a JSON object of at most {n} bytes").format(n=MAX_BODY)


def _text(body: dict[str, Any], key: str, required: bool = False) -> str:
    value = body.get(key)
    if value is None:
        if required:
            raise UsageError(_("the field {field} is required").format(field=key))
        return ""
    if not isinstance(value, str):
        raise UsageError(_("{field} must be a string").format(field=key))
    return value


def _int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise UsageError(_("{field} must be an integer").format(field=key))
    return value


def _size(body: dict[str, Any], key: str) -> int | None:
    """A quota: bytes (an integer), a size with its unit ("50GiB"), or null for none."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return parse_size(value, key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise UsageError(_("{field} must be a size in bytes, e.g. 53687091200 or \"50GiB\"").format(field=key))


def _motive(request: Request, body: dict[str, Any]) -> str:
    motive = body.get("motive")
    if motive is None:
        return request.headers.get("x-coffre-motive", "")
    if not isinstance(motive, str):
        raise UsageError(_("{field} must be a string").format(field="motive"))
    return motive
