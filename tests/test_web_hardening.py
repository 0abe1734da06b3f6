"""What an attacker tries against both page apps (a security review of issue 16): a spoofed
X-Forwarded-For to escape the login throttle, login attempts sent together before any is
refused, a huge form body sent to the login page, and a backed-up name that is not UTF-8."""

from __future__ import annotations

import threading
import time
import urllib.request

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from coffre.core.clock import FixedClock
from coffre.web.guard import Guard, Identity
from coffre.web.render import Pages
from coffre.web.security import Sessions, Throttle
from coffre.web.serving import ThreadedServer
from coffre.web.urls import Urls


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


def _csrf(html: str) -> str:
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]


def test_login_attempts_sent_together_are_throttled_too() -> None:
    """Ten wrong passwords sent at once: only the free attempts reach the password check (the
    check is slow, Argon2: without counting an attempt when it starts, all ten would)."""
    sessions = Sessions()
    pages = Pages(Urls(""), tz=lambda: "Europe/Paris", clock=time.time)
    guard = Guard(sessions, pages, Throttle(free=3))
    checked, refused = [], []
    release = threading.Event()
    lock = threading.Lock()

    def authenticate(form: dict[str, str], address: str) -> Identity | None:
        with lock:
            checked.append(form.get("password"))
        release.wait(20)
        return None

    app = Starlette(routes=guard.login_routes(authenticate, ("password",), "Test"))
    clients = [TestClient(app, base_url="http://127.0.0.1") for _i in range(10)]
    tokens = [_csrf(c.get("/login").text) for c in clients]

    def attempt(i: int) -> None:
        r = clients[i].post("/login", data={"password": f"guess {i}", "csrf": tokens[i]})
        if r.status_code == 429:
            with lock:
                refused.append(i)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # every attempt is either being checked or refused
        with lock:
            if len(checked) + len(refused) == 10:
                break
        time.sleep(0.01)
    release.set()
    for t in threads:
        t.join(20)
    assert len(checked) == 3 and len(refused) == 7


def test_a_right_password_after_wrong_ones_resets_the_count() -> None:
    clock = FixedClock(0)
    throttle = Throttle(free=2, clock=lambda: clock.now_ns() / 1e9)
    assert throttle.attempt("a") == 0  # a failure
    assert throttle.attempt("a") == 0  # a success
    throttle.succeeded("a")
    assert throttle.attempt("a") == 0 and throttle.attempt("a") == 0
    assert throttle.attempt("a") > 0
