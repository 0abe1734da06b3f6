"""The console's application: the route table, the login, and what each page module shares
(`ConsoleKit`). Roles: `viewer` reads, `operator` also acts on tenants (tokens, quota, bin,
state), `admin` also manages provider accounts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount

from coffre.server.admin import Actor
from coffre.server.context import ServerContext
from coffre.web.guard import Guard
from coffre.web.render import Pages, static_route
from coffre.web.security import BodyLimit, SecurityHeaders, Sessions, Throttle, client_address, session_of
from coffre.web.urls import Urls

ROLES = ("viewer", "operator", "admin")
READ = ROLES
ACT = ("operator", "admin")
ADMIN = ("admin",)
PREFIX = "/console"
IDLE_S = 1800.0


@dataclass
class ConsoleKit:
    """What each page module's `routes(kit)` receives."""

    ctx: ServerContext
    guard: Guard
    pages: Pages
    urls: Urls
    sessions: Sessions
    extras: dict[str, object] = field(default_factory=dict)
    # ASGI middleware a page module adds around the console (account_pages: sessions of a
    # disabled account end), inside the security headers
    middleware: list[Middleware] = field(default_factory=list)

    def now(self) -> float:
        return self.ctx.clock.now_ns() / 1e9

    def actor(self, request: Request) -> Actor:
        """The account acting, as the audit journal names it: `console:NAME@ADDRESS`."""
        s = session_of(request)
        name = s.user if s is not None and s.user else "-"
        return Actor("", ("console:" + name + "@" + client_address(request))[:64])


def kit_for(ctx: ServerContext, *, prefix: str = PREFIX, secure: bool = True) -> ConsoleKit:
    urls = Urls(prefix)
    clock = lambda: ctx.clock.now_ns() / 1e9  # noqa: E731
    sessions = Sessions(idle_s=IDLE_S, secure=secure, path=urls.prefix + "/", clock=clock)
    pages = Pages(urls, tz=lambda: "Europe/Paris", clock=clock)
    guard = Guard(sessions, pages, Throttle(clock=clock), roles=ROLES)
    return ConsoleKit(ctx, guard, pages, urls, sessions)


def console_routes(kit: ConsoleKit) -> list[BaseRoute]:
    """Every route of the console, relative to its prefix."""
    from coffre.web.hosted import account_pages, billing_pages, fleet_pages, tenant_pages

    return [static_route(), kit.guard.language_route(), *account_pages.routes(kit), *fleet_pages.routes(kit),
            *tenant_pages.routes(kit), *billing_pages.routes(kit)]


def mount(kit: ConsoleKit) -> Mount:
    """The console mounted at its prefix, with its security headers (for the server's app)."""
    headers = Middleware(SecurityHeaders, hsts=kit.sessions.secure)
    table = console_routes(kit)  # first: a page module may add to kit.middleware
    middleware = [headers, Middleware(BodyLimit), *kit.middleware]
    return Mount(kit.urls.prefix, app=Starlette(routes=table, middleware=middleware))


def create_console(ctx: ServerContext, *, secure: bool = True, extra: Sequence[BaseRoute] = ()) -> Starlette:
    """The console alone (tests, and the page-load benchmark)."""
    kit = kit_for(ctx, secure=secure)
    return Starlette(routes=[mount(kit), *extra])
