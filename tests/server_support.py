"""Test helpers for the hosting server: a server context in a temporary folder, tenants with
a token per role, and any ASGI app served by uvicorn on 127.0.0.1 in a thread."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import uvicorn

from coffre.core.clock import Clock, FixedClock
from coffre.server import tenants, tokens
from coffre.server.context import ServerContext
from coffre.server.db import Database, tables
from coffre.server.settings import Settings
from coffre.server.store import ObjectStore
from coffre.storage.base import Handle

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


def put(ctx: ServerContext, tenant_id: int, repo: str, data: bytes, kind: str = "data",
        token_id: str = "uploader") -> str:
    """An acknowledged object: stored, then its row and the tenant's usage."""
    name = hashlib.sha256(data).hexdigest()
    now = ctx.clock.now_ns()
    with ctx.db.begin() as conn:
        repo_id = tenants.add_repository(conn, tenant_id, repo, now)
    ctx.store.backend(tenant_id, repo).save(Handle(kind, name), data)
    with ctx.db.begin() as conn:
        conn.execute(tables.objects.insert().values(repository_id=repo_id, kind=kind, name=name,
                                                    size=len(data), received_ns=now, token_id=token_id))
        te = tables.tenants
        conn.execute(te.update().where(te.c.id == tenant_id).values(
            stored_bytes=te.c.stored_bytes + len(data)))
    return name


def delete(ctx: ServerContext, tenant_id: int, name: str, by: str = "pruner") -> None:
    """A prune token's deletion: into the bin at the server's time."""
    o, r, te = tables.objects, tables.repositories, tables.tenants
    with ctx.db.begin() as conn:
        row = conn.execute(sa.select(o.c.id, o.c.size).select_from(o.join(r, r.c.id == o.c.repository_id))
                           .where(r.c.tenant_id == tenant_id, o.c.name == name)).one()
        conn.execute(o.update().where(o.c.id == row.id).values(binned_ns=ctx.clock.now_ns(), binned_by=by))
        conn.execute(te.update().where(te.c.id == tenant_id).values(
            stored_bytes=te.c.stored_bytes - row.size, binned_bytes=te.c.binned_bytes + row.size))
