"""The pharmacy page's application: the route table, the login, and what every page of it
shares (`LocalKit`). The agent side is reached only through `AgentView` (the scheduler gives
one; tests give their own), so the pages run the same in `coffre agent` and in a test."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount

from coffre.agent.model import Config
from coffre.agent.status import StatusStore
from coffre.core.i18n import _
from coffre.web.guard import Authenticate, Guard
from coffre.web.render import Pages, static_route
from coffre.web.security import BodyLimit, HostCheck, SecurityHeaders, Sessions, Throttle
from coffre.web.urls import Urls


@dataclass
class AgentView:
    """What the pages may ask of the running agent."""

    config: Callable[[], Config]  # the configuration in force (follows SIGHUP reloads)
    store: Callable[[], StatusStore]  # the status store (open; the pages only read it)
    # ask the scheduler to start a job now: whether asked (not when running, or asked already),
    # and the click's mark (StatusStore.run_mark), taken in the same step
    run_now: Callable[[str], tuple[bool, int]]
    running: Callable[[], dict[str, float]]  # jobs running now -> when each started
    clock: Callable[[], float] = time.time
    # the step a running job is at now, and since when (None: unknown, or between two steps)
    step: Callable[[str], tuple[str, float] | None] = field(default=lambda _job: None)
    # whether the agent may still start a run of the job for what it was asked (a request not
    # taken yet, a run not ended, its loop not started)
    pending: Callable[[str], bool] = field(default=lambda _job: True)
    incarnation: str = ""  # this agent process's own mark: a request made of another is gone


@dataclass
class LocalKit:
    """What each page module's `routes(kit)` receives."""

    view: AgentView
    guard: Guard
    pages: Pages
    urls: Urls
    extras: dict[str, object] = field(default_factory=dict)  # a module's shared state (tasks...)


def create_app(view: AgentView, authenticate: Authenticate, *, secure: bool = False,
               prefix: str = "", hosts: frozenset[str] | None = None) -> Starlette:
    """The page's app. `hosts`: the only Host names it answers (the loopback names when it
    listens on loopback: DNS rebinding), None for any."""
    from coffre.web.local import restore_pages, run_pages, status_pages

    config = view.config()
    urls = Urls(prefix)
    sessions = Sessions(idle_s=config.web.idle_timeout, secure=secure, path=urls.prefix + "/",
                        clock=view.clock)
    pages = Pages(urls, tz=lambda: view.config().agent.timezone, clock=view.clock)
    guard = Guard(sessions, pages, Throttle(clock=view.clock))
    kit = LocalKit(view, guard, pages, urls)

    table: list[BaseRoute] = [
        static_route(),
        *guard.login_routes(authenticate, ("password",), _("Backups of this pharmacy")),
        guard.language_route(),
        *status_pages.routes(kit),
        *run_pages.routes(kit),
        *restore_pages.routes(kit),
    ]
    routes: list[BaseRoute] = [Mount(urls.prefix, routes=table)] if urls.prefix else table
    middleware = [Middleware(SecurityHeaders, hsts=secure), Middleware(BodyLimit)]  # forms only: 64 KiB
    if hosts is not None:
        middleware.insert(0, Middleware(HostCheck, allowed=hosts))
    return Starlette(routes=routes, middleware=middleware)
