"""What an attacker tries against both page apps (a security review of issue 16): a spoofed
X-Forwarded-For to escape the login throttle, login attempts sent together before any is
refused, a huge form body sent to the login page, and a backed-up name that is not UTF-8."""

from __future__ import annotations

import urllib.request

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from coffre.web.serving import ThreadedServer


def test_the_page_server_does_not_believe_x_forwarded_for() -> None:
    """On loopback every client comes from 127.0.0.1, which uvicorn trusts as a proxy by
    default: a local program could then name any address, and the login throttle would count
    each attempt from a fresh one."""

    def who(request: Request) -> Response:
        client = request.client.host if request.client else "-"
        return PlainTextResponse(client + " " + request.url.scheme)

    server = ThreadedServer(Starlette(routes=[Route("/", who)]), "127.0.0.1", 0)
    server.start()
    try:
        asked = urllib.request.Request(f"http://127.0.0.1:{server.port}/", headers={
            "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
        with urllib.request.urlopen(asked, timeout=10) as r:
            assert r.read().decode() == "127.0.0.1 http"
    finally:
        server.stop()
