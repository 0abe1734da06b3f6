"""What every page relies on: French typography, dates and sizes, the one URL builder, the
static files' hashed names, sessions, CSRF, the login throttle and the security headers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from coffre.core import i18n
from coffre.web import render
from coffre.web.guard import Guard, Identity, form_of
from coffre.web.render import Pages, format_recent, format_when, static_route, typography
from coffre.web.security import SecurityHeaders, Sessions, Throttle
from coffre.web.urls import Urls, hashed_name

NBSP, NNBSP = "\u00a0", "\u202f"
T = datetime(2026, 11, 30, 11, 31, tzinfo=UTC).timestamp()  # 12:31 in Paris


class Clock:
    def __init__(self, t: float = T) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_french_dates_sizes_and_typography() -> None:
    with i18n.speaking("fr"):
        assert format_when(T, "Europe/Paris") == "30 novembre 2026 à 12:31"
        assert format_recent(T, T + 3600, "Europe/Paris") == "aujourd’hui à 12:31" or \
            format_recent(T, T + 3600, "Europe/Paris") == "aujourd'hui à 12:31"
        assert format_recent(T, T + 86400, "Europe/Paris").startswith("hier à 12:31")
        assert render._size(1.5 * 1024**3) == "1,5 Go"
        assert typography("Dernière sauvegarde : hier") == f"Dernière sauvegarde{NBSP}: hier"
        assert typography("« Restaurations »") == f"«{NBSP}Restaurations{NBSP}»"
        assert typography("Vraiment ?") == f"Vraiment{NNBSP}?"
        assert typography("à 12:31 sur https://x") == "à 12:31 sur https://x"  # no space: untouched
    with i18n.speaking("en"):
        assert format_when(T, "Europe/Paris") == "30 November 2026 at 12:31"
        assert typography("Last backup : x") == "Last backup : x"


def test_the_language_is_per_thread() -> None:
    before = i18n.language()
    with i18n.speaking("fr"):
        assert i18n.language() == "fr"
        with i18n.speaking("en"):
            assert i18n.language() == "en"
        assert i18n.language() == "fr"
    assert i18n.language() == before


def test_urls_stay_under_the_prefix() -> None:
    urls = Urls("/coffre/")
    assert urls.to("/") == "/coffre/"
    assert urls.to("/jobs/a%2Fb", page=2, q=None) == "/coffre/jobs/a%2Fb?page=2"
    assert urls.static("app.css").startswith("/coffre/static/app.")
    assert Urls().to("/") == "/"
    with pytest.raises(ValueError):
        Urls("/a/../b")
    with pytest.raises(ValueError):
        urls.to("relative")


def _app(clock: Clock, passwords: dict[str, str]) -> tuple[Starlette, Sessions]:
    urls = Urls("")
    sessions = Sessions(idle_s=600, clock=clock)
    pages = Pages(urls, tz=lambda: "Europe/Paris", clock=clock)
    guard = Guard(sessions, pages, Throttle(clock=clock, free=3))

    def home(request: Request) -> Response:
        return PlainTextResponse("home of " + str(request.scope["coffre.session"].user))

    def act(request: Request) -> Response:
        return PlainTextResponse("done " + form_of(request).get("what", ""))

    def authenticate(form: dict[str, str], address: str) -> Identity | None:
        ok = passwords.get(form.get("user", "")) == form.get("password")
        return Identity(form["user"], "admin") if ok else None

    app = Starlette(routes=[static_route(), *guard.login_routes(authenticate, ("user", "password"), "Test"),
                            guard.language_route(),
                            Route("/", guard.page(home)), Route("/act", guard.page(act), methods=["POST"]),
                            Route("/admin", guard.page(home, roles=["admin"])),
                            Route("/viewer", guard.page(home, roles=["viewer"]))],
                    middleware=[Middleware(SecurityHeaders)])
    return app, sessions


def _csrf(html: str) -> str:
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]


def test_login_session_csrf_and_headers() -> None:
    clock = Clock()
    app, sessions = _app(clock, {"anne": "s3cret"})
    c = TestClient(app, base_url="http://127.0.0.1")
    r = c.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=%2F")
    page = c.get("/login")
    assert "content-security-policy" in page.headers and page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    planted = c.cookies.get("coffre_session")
    assert planted
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    token = _csrf(page.text)
    # no token: refused
    assert c.post("/login", data={"user": "anne", "password": "s3cret"}).status_code == 403
    r = c.post("/login", data={"user": "anne", "password": "s3cret", "csrf": token}, follow_redirects=False)
    assert r.status_code == 303
    fresh = c.cookies.get("coffre_session")
    assert fresh and fresh != planted  # session fixation: the pre-login id is worth nothing
    assert c.get("/").text == "home of anne"
    # an action without the token, with a wrong one, from another site: refused
    assert c.post("/act", data={"what": "x"}).status_code == 403
    assert c.post("/act", data={"what": "x", "csrf": "nope"}).status_code == 403
    home = c.get("/admin")
    assert home.status_code == 200
    token = next(s.csrf for s in sessions._by_id.values() if s.user == "anne")
    for hostile in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        assert c.post("/act", data={"what": "x", "csrf": token}, headers=hostile).status_code == 403
    assert c.post("/act", data={"what": "x", "csrf": token}).text == "done x"
    assert c.get("/viewer").status_code == 403  # the role is checked
    # idle timeout
    clock.t += 601
    assert c.get("/", follow_redirects=False).status_code == 303


def test_login_is_throttled_per_address() -> None:
    clock = Clock()
    app, _s = _app(clock, {"anne": "s3cret"})
    c = TestClient(app, base_url="http://127.0.0.1")
    token = _csrf(c.get("/login").text)
    for _i in range(3):
        assert c.post("/login", data={"user": "anne", "password": "bad", "csrf": token}).status_code == 401
    r = c.post("/login", data={"user": "anne", "password": "s3cret", "csrf": token})
    assert r.status_code == 429  # even the right password waits
    clock.t += 31
    r = c.post("/login", data={"user": "anne", "password": "s3cret", "csrf": token}, follow_redirects=False)
    assert r.status_code == 303


def test_static_files_are_immutable_under_their_hash() -> None:
    app, _s = _app(Clock(), {})
    c = TestClient(app)
    r = c.get("/static/" + hashed_name("app.css"))
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    assert r.headers["content-type"].startswith("text/css")
    assert c.get("/static/../render.py").status_code == 404
    assert c.get("/static/nothing.css").status_code == 404


def test_login_in_a_real_browser(browser_page, shots) -> None:  # type: ignore[no-untyped-def]
    """Chromium logs in through the form (CSRF token, cookie, redirect), keeps French
    typography, and the page fits a phone's width."""
    from server_support import serving

    app, _s = _app(Clock(), {"anne": "s3cret"})
    with serving(app) as base:
        page = browser_page
        page.goto(base + "/")
        assert page.url.startswith(base + "/login")
        assert page.locator("label[for=password]").inner_text() == "Mot de passe"
        shots(page, "login")
        shots.phone(page, "login")
        page.fill("#user", "anne")
        page.fill("#password", "wrong")
        page.click("main button[type=submit]")
        assert "Connexion refusée\u00a0:" in page.inner_text(".flash-error")
        page.fill("#user", "anne")
        page.fill("#password", "s3cret")
        page.click("main button[type=submit]")
        page.wait_for_url(base + "/")
        assert page.inner_text("body") == "home of anne"
        page.goto(base + "/login?next=/")  # logged in: the login page sends home
        assert page.url == base + "/"


def test_a_loopback_page_refuses_other_host_names() -> None:
    """DNS rebinding: a site pointing its own name at 127.0.0.1 reaches the page with its own
    Host, which a page on loopback refuses."""
    from coffre.web.security import HostCheck, host_name

    app, _s = _app(Clock(), {"anne": "s3cret"})
    guarded = HostCheck(app)
    assert TestClient(guarded, base_url="http://127.0.0.1:8650").get("/login").status_code == 200
    assert TestClient(guarded, base_url="http://localhost:8650").get("/login").status_code == 200
    assert TestClient(guarded, base_url="http://[::1]:8650").get("/login").status_code == 200
    assert TestClient(guarded, base_url="http://evil.example:8650").get("/login").status_code == 421
    assert TestClient(guarded, base_url="http://127.0.0.1.evil.example").get("/login").status_code == 421
    assert host_name("LocalHost.:80") == "localhost" and host_name("[::1]:1") == "::1"
