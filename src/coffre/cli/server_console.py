"""The web console as `coffre server` serves it: under /console beside the API (/v1), the
root `/` redirecting to it.

Cookies are `Secure` whenever a browser reaches the console over HTTPS: with the server's own
TLS, and with --insecure-http too, which means a reverse proxy does TLS in front (the
console then takes the request as https, so that the browser's Origin matches for the CSRF
check, and believes X-Forwarded-For only from --trusted-proxy addresses). Only a server on
loopback without any certificate (a test on this machine) sets cookies without `Secure`."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from coffre.server.context import ServerContext


def secure_cookies(ctx: ServerContext) -> bool:
    """TLS here, or a TLS proxy in front (--insecure-http)."""
    return ctx.settings.insecure_http or ctx.settings.certificate is not None


class Forwarded:
    """Behind a reverse proxy that does TLS (--insecure-http): the request is https, and the
    client's address is the proxy's X-Forwarded-For when the proxy is trusted
    (server/http.py client_address), so the login throttle counts clients, not the proxy."""

    def __init__(self, app: ASGIApp, ctx: ServerContext) -> None:
        self.app, self.ctx = app, ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            from coffre.server.http import client_address

            scope = dict(scope)
            scope["scheme"] = "https"
            address = client_address(self.ctx, Request(scope))
            if address:
                port = scope["client"][1] if scope.get("client") else 0
                scope["client"] = (address, port)
        await self.app(scope, receive, send)


def console_routes(ctx: ServerContext) -> Sequence[BaseRoute]:
    """The console's Mount (and `/` redirecting to it), for serve.serve(extra=...)."""
    from coffre.web.hosted.app import kit_for, mount

    kit = kit_for(ctx, secure=secure_cookies(ctx))
    console = mount(kit)
    if ctx.settings.insecure_http:
        console = Mount(console.path, app=Forwarded(console.app, ctx))
    home = kit.urls.to("/")

    def root(request: Request) -> Response:
        return RedirectResponse(home, status_code=303)

    return [console, Route("/", root, methods=["GET", "HEAD"])]
