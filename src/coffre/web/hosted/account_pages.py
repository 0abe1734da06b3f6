"""The console's login (account, password, TOTP code: accounts.py), the end of a disabled
or changed account's sessions, and the accounts page for admins (list, add with the TOTP
secret shown once, disable, enable, new TOTP secret). `coffre server account ...` does the
same from a terminal (cli/server_accounts.py).

Every login, accepted or refused, and every change is in the provider's audit chain."""

from __future__ import annotations

from typing import cast

from markupsafe import Markup, escape
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from coffre.core.errors import UsageError
from coffre.core.i18n import N_, _
from coffre.web.guard import Identity, form_of
from coffre.web.hosted import accounts
from coffre.web.hosted.app import ADMIN, ConsoleKit
from coffre.web.hosted.contexts import AccountRow, AccountsPage
from coffre.web.render import translate
from coffre.web.security import session_of
from coffre.web.urls import segment

ROLE_WORDS = {"viewer": N_("viewer: reads"), "operator": N_("operator: reads and acts on tenants"),
              "admin": N_("admin: also manages the console's accounts")}


class Lazy:
    """A message translated when the page is rendered (in the reader's language)."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __str__(self) -> str:
        return translate(self.message)

    def __html__(self) -> Markup:
        return escape(str(self))


class SessionCheck:
    """Ends the sessions of an account disabled or changed (password, TOTP) since they began,
    also when the change was made elsewhere (`coffre server account disable`, another
    instance): checked at each request against the accounts table (re-read every few s)."""

    def __init__(self, app: ASGIApp, kit: ConsoleKit, revocations: accounts.Revocations) -> None:
        self.app, self.kit, self.revocations = app, kit, revocations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            s = self.kit.sessions.get(Request(scope))
            if s is not None and s.user is not None:
                from starlette.concurrency import run_in_threadpool

                if await run_in_threadpool(self.revocations.ended, s.user, s.created):
                    self.kit.sessions.end(s)
        await self.app(scope, receive, send)


def routes(kit: ConsoleKit) -> list[BaseRoute]:
    ctx = kit.ctx
    revocations = accounts.Revocations(ctx)
    kit.extras["revocations"] = revocations
    kit.middleware.append(Middleware(SessionCheck, kit=kit, revocations=revocations))

    def authenticate(fields: dict[str, str], address: str) -> Identity | None:
        verdict = accounts.login(ctx, fields, address)
        if verdict.account is None:
            return None
        return Identity(verdict.account.name, verdict.account.role)

    def on_login(identity: Identity, address: str) -> None:
        accounts.journal_login(ctx, identity.user, address)

    def page(request: Request, status: int = 200) -> Response:
        s = session_of(request)
        shown = s.data.pop("enrolment", None) if s is not None else None
        me = s.user if s is not None else None
        rows = tuple(AccountRow(a.name, a.role, _(ROLE_WORDS[a.role]), a.created_ns / 1e9,
                                None if a.last_login_ns is None else a.last_login_ns / 1e9,
                                None if a.disabled_ns is None else a.disabled_ns / 1e9,
                                account_url(kit, a.name, "disable"), account_url(kit, a.name, "enable"),
                                account_url(kit, a.name, "totp"), a.name == me)
                     for a in accounts.listing(ctx))
        return kit.pages.render(request, "hosted/accounts.html", AccountsPage(
            title=_("Console accounts"), accounts=rows,
            roles=tuple((r, _(ROLE_WORDS[r])) for r in accounts.ROLES),
            enrolled=shown[0] if shown else None, secret=shown[1] if shown else None,
            uri=shown[2] if shown else None), status=status)

    def show(request: Request) -> Response:
        return page(request)

    def done(request: Request, text: str, level: str = "ok") -> Response:
        s = session_of(request)
        if s is not None:
            s.flash(text, level)
        return kit.guard.redirect("/accounts")

    def add(request: Request) -> Response:
        form = form_of(request)
        name, role = form.get("name", "").strip(), form.get("role", "")
        try:
            _account, enrol = accounts.add(ctx, kit.actor(request), name, role, form.get("password", ""))
        except UsageError as exc:
            return done(request, exc.message, "error")
        s = session_of(request)
        if s is not None:
            s.data["enrolment"] = (name, enrol.secret, enrol.uri)
        return done(request, _("Account {name} added.").format(name=name))

    def yourself(request: Request) -> Response | None:
        s = session_of(request)
        if s is not None and s.user == request.path_params["name"]:
            return done(request, _("Not your own account: ask another admin, or use 'coffre server "
                                   "account' on the server."), "error")
        return None

    def disable(request: Request) -> Response:
        name = request.path_params["name"]
        if (refused := yourself(request)) is not None:
            return refused
        try:
            accounts.disable(ctx, kit.actor(request), name, form_of(request).get("motive"))
        except UsageError as exc:
            return done(request, exc.message, "error")
        kit.sessions.end_user(name)
        return done(request, _("Account {name} disabled: its sessions have ended.").format(name=name))

    def enable(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            accounts.enable(ctx, kit.actor(request), name, form_of(request).get("motive"))
        except UsageError as exc:
            return done(request, exc.message, "error")
        return done(request, _("Account {name} enabled.").format(name=name))

    def totp(request: Request) -> Response:
        name = request.path_params["name"]
        if (refused := yourself(request)) is not None:
            return refused
        try:
            enrol = accounts.reset_totp(ctx, kit.actor(request), name)
        except UsageError as exc:
            return done(request, exc.message, "error")
        kit.sessions.end_user(name)
        s = session_of(request)
        if s is not None:
            s.data["enrolment"] = (name, enrol.secret, enrol.uri)
        return done(request, _("Account {name} has a new TOTP secret.").format(name=name))

    title = cast(str, Lazy(N_("Provider console — Coffre")))
    guard = kit.guard
    return [
        *guard.login_routes(authenticate, ("user", "password", "code"), title, on_login=on_login),
        Route("/accounts", guard.page(show, roles=ADMIN), methods=["GET"]),
        Route("/accounts", guard.page(add, roles=ADMIN), methods=["POST"]),
        Route("/accounts/{name}/disable", guard.page(disable, roles=ADMIN), methods=["POST"]),
        Route("/accounts/{name}/enable", guard.page(enable, roles=ADMIN), methods=["POST"]),
        Route("/accounts/{name}/totp", guard.page(totp, roles=ADMIN), methods=["POST"]),
    ]


def account_url(kit: ConsoleKit, name: str, action: str) -> str:
    return kit.urls.to("/accounts/" + segment(name) + "/" + action)
