"""The ASGI application: the route table, one error shape, the request log, and the
periodic housekeeping that runs while the server serves.

Routes (all under /v1, docs/server.md): the object protocol (objects_api.py), the provider's
admin API (admin_api.py) and the agents' status reports (reports_api.py); anything else is
journaled and answered 404 (400 for a path with dot segments). Every error is JSON
`{"error": CODE, "message": TEXT}` (http.Refusal), whatever raised it.

Order of what wraps a request, outermost first: the request log (one line per request: peer,
method, path, status, bytes, time, token id — never a token), Starlette's error handling,
the routes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coffre.core.i18n import _
from coffre.server import admin_api, reports_api
from coffre.server.context import ServerContext
from coffre.server.housekeeping import Housekeeping
from coffre.server.http import Refusal, in_thread, refusal_response
from coffre.server.objects_api import ObjectsAPI

log = logging.getLogger("coffre.server")
access = logging.getLogger("coffre.server.access")

HOUSEKEEPING_EVERY_S = 2.0  # how often the due periodic tasks are looked for
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE"]  # others: 405 from the route that has the path


def routes(api: ObjectsAPI) -> list[BaseRoute]:
    """The object protocol's routes (the tenant's own, then the admin's view of a tenant)."""
    obj = ["GET", "HEAD", "PUT", "DELETE"]
    return [
        Route("/v1/whoami", api.whoami, methods=["GET"]),
        Route("/v1/repos/{repo}", api.create_repository, methods=["POST"]),
        Route("/v1/repos/{repo}/{kind}/", api.listing, methods=["GET"]),
        Route("/v1/repos/{repo}/{kind}/{name}", api.object, methods=obj),
        Route("/v1/admin/tenants/{tenant}/repos/{repo}/{kind}/", api.listing, methods=["GET"]),
        # PUT too, to be refused like any write without the WRITE privilege (and journaled)
        Route("/v1/admin/tenants/{tenant}/repos/{repo}/{kind}/{name}", api.object, methods=obj),
    ]


def create_app(ctx: ServerContext, extra: Sequence[BaseRoute] = ()) -> Starlette:
    """The server's application over `ctx` (which the caller opens and closes). `extra`:
    routes outside /v1 (the web console's Mount, given by the command line: this package
    does not import the pages)."""
    api = ObjectsAPI(ctx)
    table = [*routes(api), *admin_api.routes(ctx), *reports_api.routes(ctx),
             Route("/v1/{rest:path}", api.unknown, methods=ALL_METHODS), *extra]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        keeper = Housekeeping(ctx)
        running = threading.Lock()  # one run at a time, whoever calls

        def run_due() -> None:
            with running:
                keeper.run_due()

        async def loop() -> None:
            while True:
                try:
                    await in_thread(run_due)  # not abandoned on cancel: a run always ends
                except Exception:  # run_due logs its tasks' failures; this is a last guard
                    log.exception("housekeeping failed")
                await anyio.sleep(HOUSEKEEPING_EVERY_S)

        async with anyio.create_task_group() as tg:
            tg.start_soon(loop)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        # Reads counted since the last flush, into the journal before the server stops.
        try:
            await in_thread(lambda: ctx.tally.flush(ctx.db, ctx.clock.now_ns()))
        except Exception:
            log.exception("flushing the read tally at stop failed")

    app = Starlette(
        routes=table,
        middleware=[Middleware(RequestLog)],
        exception_handlers={Refusal: _refusal, HTTPException: _http_error, Exception: _crash},
        lifespan=lifespan,
    )
    app.state.objects = api  # its in-flight budget, for tests and diagnostics
    return app


async def _refusal(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    extra = getattr(exc, "extra", None)
    if not extra:
        return refusal_response(exc)
    return JSONResponse({"error": exc.code, "message": exc.message, **extra}, status_code=exc.status,
                        headers=exc.headers)


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 411: "length_required", 413: "too_large"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _CODES.get(exc.status_code, "bad_request")
    return JSONResponse({"error": code, "message": _("the request was refused ({status})").format(
        status=exc.status_code)}, status_code=exc.status_code, headers=exc.headers)


async def _crash(request: Request, exc: Exception) -> Response:
    log.warning("internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return JSONResponse({"error": "unavailable", "message": _("internal error of the server; try again "
                                                              "later")}, status_code=500)


class RequestLog:
    """One line per request in the log: peer, method, path (as sent, still percent-encoded:
    no line breaks), status, bytes sent, duration, token id. Never a token or a body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0
        sent = 0

        async def send_and_count(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            state: dict[str, Any] = scope.get("state") or {}
            peer = scope.get("client") or ("-", 0)
            path = bytes(scope.get("raw_path") or scope["path"].encode("utf-8", "replace"))
            access.info("%s %s %s %d %d %.1fms token=%s", peer[0], scope["method"],
                        path[:300].decode("ascii", "backslashreplace"), status, sent,
                        (time.monotonic() - started) * 1000, state.get("token_id") or "-")
