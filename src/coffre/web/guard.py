"""What every page endpoint goes through (`Guard.page`): the session found, the login asked
for, the role checked, CSRF refused, the form read, the reader's language set, and the
handler run on a worker thread (handlers are plain functions: they read SQLite, repositories,
files). Also the login and logout pages, shared by the pharmacy page and the console.

A handler is `def handler(request) -> Response`; it reads the submitted form with
`form_of(request)` and the session with `security.session_of(request)`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from coffre.core import i18n
from coffre.core.i18n import _
from coffre.web.contexts import LoginPage, MessagePage
from coffre.web.render import Pages, language_of
from coffre.web.security import CsrfRefused, Sessions, Throttle, check_csrf, client_address, session_of

log = logging.getLogger("coffre.web")

Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Identity:
    user: str
    role: str


# (form fields, address) -> the identity, or None when refused; raises nothing for a wrong
# password (the guard counts the failure and answers the same whatever was wrong).
Authenticate = Callable[[dict[str, str], str], "Identity | None"]


def form_of(request: Request) -> dict[str, str]:
    """The submitted form's text fields (files are never taken)."""
    form = request.scope.get("coffre.form") or {}
    return dict(form)


class Guard:
    def __init__(self, sessions: Sessions, pages: Pages, throttle: Throttle, *, home: str = "/",
                 login_path: str = "/login", roles: Sequence[str] = ()) -> None:
        self.sessions, self.pages, self.throttle = sessions, pages, throttle
        self.home, self.login_path, self.roles = home, login_path, tuple(roles)

    def page(self, handler: Handler, *, roles: Sequence[str] | None = None,
             public: bool = False) -> Callable[[Request], Any]:
        """`handler` behind the login (unless `public`) and, when `roles` is given, only for
        sessions of one of those roles (others get 403)."""

        async def endpoint(request: Request) -> Response:
            s = self.sessions.get(request)
            if s is not None:
                request.scope["coffre.session"] = s
            if not public and (s is None or s.user is None):
                polled = bool(request.headers.get("hx-request"))
                if request.method in ("GET", "HEAD") and not polled:
                    return self.redirect(self.login_path, next=_next_of(request))
                ended = self.message(request, _("Your session has ended: log in again."), 401)
                if polled:
                    # A page polling in the background (a backup's progress) would keep its
                    # last state for ever: htmx reloads it, which leads to the login and back.
                    ended.headers["HX-Refresh"] = "true"
                return ended
            if roles is not None and (s is None or s.role not in roles):
                return self.message(request, _("Your role does not allow this page."), 403)
            try:
                await check_csrf(request, s)
            except CsrfRefused as exc:
                log.warning("refused %s %s: CSRF check failed (%s)", request.method, request.url.path, exc)
                return self.message(request, _("This request was refused (its form expired or came from "
                                               "another site). Reload the page and try again."), 403)
            if request.method not in ("GET", "HEAD"):
                form = await request.form()
                request.scope["coffre.form"] = {k: v for k, v in form.items() if isinstance(v, str)}
            lang = language_of(request)

            def run() -> Response:
                with i18n.speaking(lang):
                    return handler(request)

            return await run_in_threadpool(run)

        return endpoint

    def message(self, request: Request, text: str, status: int) -> Response:
        with i18n.speaking(language_of(request)):
            return self.pages.render(request, "message.html", MessagePage(title=_("Coffre"), message=text),
                                     status=status)

    def redirect(self, path: str, **query: object) -> RedirectResponse:
        return RedirectResponse(self.pages.urls.to(path, **query), status_code=303)

    def language_route(self) -> Route:
        """POST /language: the French/English switch (a cookie), back to the page it was on."""
        urls = self.pages.urls

        def language(request: Request) -> Response:
            form = form_of(request)
            chosen, nxt = form.get("lang", "fr"), form.get("next") or ""
            inside = nxt.startswith(urls.prefix + "/") and not nxt.startswith("//")
            response = self.redirect(nxt[len(urls.prefix):] if inside else "/")
            if chosen in i18n.LANGUAGES:
                response.set_cookie("lang", chosen, max_age=365 * 86400, samesite="strict", httponly=True,
                                    secure=self.sessions.secure, path=urls.prefix + "/")
            return response

        return Route("/language", self.page(language, public=True), methods=["POST"])

    def login_routes(self, authenticate: Authenticate, fields: Sequence[str], title: str,
                     on_login: Callable[[Identity, str], None] | None = None,
                     on_refused: Callable[[str, str], None] | None = None) -> list[Route]:
        """GET/POST `login_path` and POST /logout. `fields`: the form's inputs among "user",
        "password", "code" (a TOTP code). `on_login(identity, address)` and
        `on_refused(user, address)` journal what happened."""

        def show(request: Request, error: str | None = None, status: int = 200) -> Response:
            s = session_of(request)
            nxt = _safe_next(request, self.pages.urls.prefix)
            response = self.pages.render(request, "login.html", LoginPage(
                title=title, fields=tuple(fields), error=error, next=nxt), status=status)
            if s is not None and s.id != request.cookies.get(self.sessions.cookie_name):
                self.sessions.set_cookie(response, s)
            return response

        async def login(request: Request) -> Response:
            s = self.sessions.get(request)
            if s is None:
                s = self.sessions.new()
            request.scope["coffre.session"] = s
            lang = language_of(request)
            if request.method == "GET":
                if s.user is not None:
                    return self.redirect(self.home)
                with i18n.speaking(lang):
                    return show(request)
            address = client_address(request)
            try:
                await check_csrf(request, s)
            except CsrfRefused:
                with i18n.speaking(lang):
                    return show(request, _("The form had expired: try again."), 403)
            wait = self.throttle.attempt(address)  # counted as a failure until it succeeds
            if wait > 0:
                with i18n.speaking(lang):
                    return show(request, _("Too many attempts: wait {s} seconds before trying again.").format(
                        s=int(wait) + 1), 429)
            form = await request.form()
            given = {k: v for k, v in form.items()
                     if isinstance(v, str) and k in ("user", "password", "code")}
            identity = await run_in_threadpool(authenticate, given, address)
            if identity is None:
                if on_refused is not None:
                    await run_in_threadpool(on_refused, given.get("user", ""), address)
                log.warning("login refused from %s", address)
                with i18n.speaking(lang):
                    return show(request, _("Login refused: check what you typed."), 401)
            self.throttle.succeeded(address)
            if on_login is not None:
                await run_in_threadpool(on_login, identity, address)
            fresh = self.sessions.new(identity.user, identity.role, replacing=s)  # never the old id
            target = (_safe_next(request, self.pages.urls.prefix, form.get("next"))
                      or self.pages.urls.to(self.home))
            response = RedirectResponse(target, status_code=303)
            self.sessions.set_cookie(response, fresh)
            return response

        async def logout(request: Request) -> Response:
            s = self.sessions.get(request)
            try:
                await check_csrf(request, s)
            except CsrfRefused:
                return self.message(request, _("This request was refused (its form expired or came from "
                                               "another site). Reload the page and try again."), 403)
            if s is not None:
                self.sessions.end(s)
            response = self.redirect(self.login_path)
            self.sessions.clear_cookie(response)
            return response

        return [Route(self.login_path, login, methods=["GET", "POST"]),
                Route("/logout", logout, methods=["POST"])]


def _next_of(request: Request) -> str:
    path = request.url.path
    return path + ("?" + request.url.query if request.url.query else "")


def _safe_next(request: Request, prefix: str, value: object = None) -> str | None:
    """Where to go after the login: only a path of this app (never another site)."""
    target = value if isinstance(value, str) else request.query_params.get("next")
    if not target or not target.startswith((prefix or "") + "/") or target.startswith("//") or "\\" in target:
        return None
    return target
