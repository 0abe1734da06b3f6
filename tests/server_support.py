"""Test helpers for the hosting server: a server context in a temporary folder, tenants with
a token per role, and any ASGI app served by uvicorn on 127.0.0.1 in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from coffre.core.clock import Clock, FixedClock
from coffre.server import tenants, tokens
from coffre.server.context import ServerContext
from coffre.server.db import Database
from coffre.server.settings import Settings
from coffre.server.store import ObjectStore

T0 = 1_780_000_000 * 10**9  # 2026-05-28, a fixed "now" for tests that inject the clock


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_context(data_dir: Path, clock: Clock | None = None, db_url: str = "",
                 objects_url: str = "", **settings: Any) -> ServerContext:
    """A ServerContext over a new database (SQLite in data_dir unless db_url) and object store."""
    s = Settings(data_dir=data_dir, db_url=db_url, objects_url=objects_url, **settings)
    data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(s.database_url)
    db.create()
    return ServerContext(s, db, ObjectStore(s.objects_location), clock or FixedClock(T0))


def add_tenant(ctx: ServerContext, name: str, roles: tuple[str, ...] = ("backup", "prune", "read"),
               **quota: int | None) -> dict[str, str]:
    """A tenant and one token per role: {role: token}."""
    now = ctx.clock.now_ns()
    with ctx.db.begin() as conn:
        tenant_id = tenants.add(conn, name, now, **quota)
        return {role: tokens.issue(conn, tenant_id, role, f"test {role}", now)[1] for role in roles}


def admin_token(ctx: ServerContext) -> str:
    with ctx.db.begin() as conn:
        return tokens.issue(conn, None, "admin", "test admin", ctx.clock.now_ns())[1]


@contextmanager
def serving(app: Any, **config: Any) -> Iterator[str]:
    """`app` served over plain HTTP on a free loopback port; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", **config))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
