"""What every route shares: one error shape, the caller's address, authentication.

Errors are JSON `{"error": CODE, "message": TEXT}` with the status that fits (docs/server.md
lists the codes). A refused token is journaled (in its tenant's chain when the token names
one, else the provider's; counted in memory and written at the next flush of the read
tally) and the client learns only that it was refused."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, TypeVar

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse

from coffre.server import audit, tokens
from coffre.server.context import ServerContext
from coffre.server.roles import Principal

T = TypeVar("T")


class Refusal(Exception):
    """Answer the request with `status` and {"error": code, "message": message}."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def refusal_response(exc: Refusal) -> JSONResponse:
    return JSONResponse({"error": exc.code, "message": exc.message}, status_code=exc.status,
                        headers=exc.headers)


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking work (database, storage, fsync) off the event loop."""
    return await to_thread.run_sync(fn, *args)


def client_address(ctx: ServerContext, request: Request) -> str:
    """The caller's address; X-Forwarded-For is believed only from a trusted proxy."""
    peer = request.client.host if request.client else ""
    trusted = ctx.settings.trusted_proxies
    if peer and trusted and _in(peer, trusted):
        forwarded = request.headers.get("x-forwarded-for", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        for hop in reversed(hops):  # the last hop not added by one of our proxies
            if not _in(hop, trusted):
                return hop[:64]
    return peer[:64]


def _in(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


def _authenticate(ctx: ServerContext, authorization: str | None, client: str, operation: str) -> Principal:
    now = ctx.clock.now_ns()
    try:
        with ctx.db.read() as conn:
            return tokens.authenticate(conn, authorization, now)
    except tokens.Unauthorized as exc:
        tenant = exc.tenant_id if exc.tenant_id is not None else audit.PROVIDER
        # Counted like reads and journaled at the next flush: a flood of bad tokens costs no
        # write transaction each (on SQLite, every tenant's uploads would queue behind them).
        ctx.tally.add(tenant, exc.token_id, client, operation, "", 0, "unauthorized:" + exc.reason)
        raise Refusal(401, "unauthorized", "a valid bearer token is required",
                      {"WWW-Authenticate": 'Bearer realm="coffre"'}) from None


async def authenticate(ctx: ServerContext, request: Request, operation: str) -> Principal:
    """The caller of this request, or Refusal(401) (journaled)."""
    return await in_thread(_authenticate, ctx, request.headers.get("authorization"),
                           client_address(ctx, request), operation)
