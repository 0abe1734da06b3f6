"""What an attacker tries against both page apps (a security review of issue 16): a spoofed
X-Forwarded-For to escape the login throttle, login attempts sent together before any is
refused, a huge form body sent to the login page, and a backed-up name that is not UTF-8."""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Message

from coffre.agent.model import Agent, Config
from coffre.agent.status import StatusStore
from coffre.core.clock import FixedClock
from coffre.web.guard import Guard, Identity
from coffre.web.local.app import AgentView, create_app
from coffre.web.render import Pages
from coffre.web.security import Sessions, Throttle
from coffre.web.serving import ThreadedServer
from coffre.web.urls import Urls
from web_restore_support import agent_config, backup, logged_in, make_app


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


# -- bodies --------------------------------------------------------------------------------------

def _local_app(tmp_path: Path) -> Any:
    (tmp_path / "state").mkdir()
    config = Config(path=str(tmp_path / "agent.toml"), agent=Agent(state_dir=str(tmp_path / "state")))
    store = StatusStore(tmp_path / "state" / "agent.sqlite")
    view = AgentView(config=lambda: config, store=lambda: store, run_now=lambda job: (False, 0),
                     running=lambda: {})
    return create_app(view, lambda form, address: None)


def test_a_huge_form_sent_to_the_login_page_is_refused_unread(tmp_path: Path) -> None:
    """Starlette keeps up to 1,000 fields of 1 MiB of a form in memory: anyone reaching the
    login page could make the agent (or the server, for the console) hold a GiB a request."""
    c = TestClient(_local_app(tmp_path), base_url="http://127.0.0.1")
    token = _csrf(c.get("/login").text)
    fields = {f"f{i}": "x" * 100_000 for i in range(50)} | {"csrf": token, "password": "x"}
    r = c.post("/login", data=fields)
    assert r.status_code == 413
    assert "content-security-policy" in r.headers  # still behind the security headers
    small = c.post("/login", data={"csrf": token, "password": "x"})
    assert small.status_code == 401  # an ordinary form is read as before


def test_the_console_refuses_a_huge_form_too(tmp_path: Path) -> None:
    from coffre.web.security import MAX_BODY
    from console_support import console
    from server_support import T0, make_context

    ctx = make_context(tmp_path / "server", clock=FixedClock(T0))
    try:
        app, _kit = console(ctx)
        c = TestClient(app, base_url="http://127.0.0.1")
        token = _csrf(c.get("/console/login").text)
        r = c.post("/console/login", data={"csrf": token, "user": "a", "password": "p" * (2 * MAX_BODY)})
        assert r.status_code == 413
    finally:
        ctx.close()


def test_a_body_without_its_length_is_cut_at_the_limit() -> None:
    """A chunked body that never ends: read up to the limit, then refused; the page never runs."""
    import anyio

    from coffre.web.security import MAX_BODY, BodyLimit

    reached: list[bool] = []
    sent: list[Message] = []
    read = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    async def receive() -> Message:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b"a" * 16384, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/login",
             "headers": [(b"transfer-encoding", b"chunked")]}
    # on a thread of its own: the browser tests' Playwright keeps an event loop on this one
    runner = threading.Thread(target=anyio.run, args=(BodyLimit(app, limit=MAX_BODY), scope, receive, send))
    runner.start()
    runner.join(10)
    assert not reached and sent[0]["status"] == 413
    assert read == MAX_BODY // 16384 + 1


# -- names -------------------------------------------------------------------------------------

@pytest.mark.skipif(os.uname().sysname == "Darwin", reason="the file system must take any bytes")
def test_a_folder_holding_a_name_that_is_not_utf8_can_be_browsed(repo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A file copied from an old Windows share keeps its Latin-1 name (b'ordonnance-\\xe9t\\xe9.pdf'):
    the folder holding it is still browsed (its name shown with U+FFFD), and so is a search."""
    src = tmp_path / "officine"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "lettre.txt").write_text("Bonjour\n")
    with open(os.path.join(os.fsencode(src / "docs"), b"ordonnance-\xe9t\xe9.pdf"), "wb") as f:
        f.write(b"%PDF-1.4\n")
    snap = backup(repo, str(src))
    client = logged_in(make_app(agent_config(tmp_path, repo, area=tmp_path / "Restaurations"), tmp_path))
    page = client.get(f"/restore/officine/snapshot/{snap}", params={"at": str(src / "docs")})
    assert page.status_code == 200
    assert "ordonnance-\ufffdt\ufffd.pdf" in page.text and "lettre.txt" in page.text
    found = client.get("/restore/officine/search", params={"q": "ordonnance"})
    assert found.status_code == 200 and "ordonnance-\ufffdt\ufffd.pdf" in found.text
