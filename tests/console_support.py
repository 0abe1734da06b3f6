"""Helpers of the console's tests and benchmark: a fleet in a server database (tenants with
status records, usage days, alerts), provider accounts, and a logged-in TestClient."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pyotp
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.testclient import TestClient

from coffre.server import audit, tenants
from coffre.server.admin import Actor
from coffre.server.context import ServerContext
from coffre.server.db import tables
from coffre.web.hosted import accounts
from coffre.web.hosted.app import ConsoleKit, kit_for, mount

NS = 10**9
H = 3600 * NS
PASSWORD = "un mot de passe assez long"
SETUP = Actor("", "test-setup")


@dataclass
class Person:
    name: str
    role: str
    secret: str

    def code(self, at_ns: int) -> str:
        return str(pyotp.TOTP(self.secret).at(at_ns / NS))


def person(ctx: ServerContext, name: str, role: str) -> Person:
    _account, enrol = accounts.add(ctx, SETUP, name, role, PASSWORD)
    return Person(name, role, enrol.secret)


def console(ctx: ServerContext, secure: bool = False) -> tuple[Starlette, ConsoleKit]:
    kit = kit_for(ctx, secure=secure)
    app = Starlette(routes=[mount(kit)])
    revocations = kit.extras["revocations"]
    revocations.ttl_s = 0.0  # type: ignore[attr-defined]
    return app, kit


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def login(client: TestClient, who: Person, now_ns: int, code: str | None = None,
          password: str = PASSWORD) -> Any:
    page = client.get("/console/login")
    return client.post("/console/login", data={
        "csrf": csrf_of(page.text), "user": who.name, "password": password,
        "code": who.code(now_ns) if code is None else code})


def record(job: str, outcome: str, sent_ns: int, site: str = "comptoir", next_due_ns: int | None = None,
           copies: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {"version": 1, "site": site, "job": job, "trigger": "schedule", "outcome": outcome,
            "window": 7200, "steps": [{"name": "backup", "ok": outcome != "failed", "exit_code": 0,
                                       "seconds": 10.0}],
            "copies": copies or [{"name": "hors-site", "state": "ok"}],
            "next_due": None if next_due_ns is None else next_due_ns / NS, "sent": sent_ns / NS}


def report(ctx: ServerContext, conn: Any, tenant_id: int, job: str, outcome: str, at_ns: int,
           site: str = "comptoir", next_due_ns: int | None = None) -> None:
    body = record(job, outcome, at_ns, site, next_due_ns)
    conn.execute(tables.status_reports.insert().values(
        tenant_id=tenant_id, token_id="t", received_ns=at_ns, site=site, job=job, outcome=outcome,
        started_ns=at_ns - 600 * NS, finished_ns=at_ns - 60 * NS, next_due_ns=next_due_ns,
        body=json.dumps(body)))


def fleet(ctx: ServerContext, n: int, now_ns: int, red_every: int = 7, orange_every: int = 11,
          days: int = 30, display: str = "Pharmacie {i}") -> list[str]:
    """`n` tenants: one in `red_every` failing (its last record failed), one in `orange_every`
    never reported, the others green (an ok report an hour ago, next due in 23 h); `days` days
    of usage each, and an alert row for each red one. Their names, sorted."""
    names = []
    with ctx.db.begin() as conn:
        for i in range(n):
            name = f"pharmacie-{i:04d}"
            names.append(name)
            tid = tenants.add(conn, name, now_ns - 400 * 86400 * NS, display.format(i=i), f"04 91 00 {i:04d}",
                              quota_soft=40 * 10**9, quota_hard=50 * 10**9)
            conn.execute(tables.tenants.update().where(tables.tenants.c.id == tid).values(
                stored_bytes=(i % 40 + 1) * 10**9))
            for d in range(days):
                day = audit.day_of(now_ns - d * 86400 * NS)
                conn.execute(tables.usage_days.insert().values(
                    tenant_id=tid, day=day, stored_bytes=(i % 40 + 1) * 10**9, binned_bytes=0,
                    sampled_ns=now_ns - d * 86400 * NS, uploads=10, uploaded_bytes=10**8,
                    downloads=1, downloaded_bytes=10**6))
            if i % orange_every == 3:
                continue
            for d in range(min(days, 5), 0, -1):
                report(ctx, conn, tid, "officine", "ok", now_ns - d * 86400 * NS, next_due_ns=now_ns + 23 * H)
            if i % red_every == 0:
                report(ctx, conn, tid, "officine", "failed", now_ns - 3 * H, next_due_ns=now_ns + 20 * H)
                conn.execute(tables.fleet_alerts.insert().values(
                    tenant_id=tid, problem="failing", since_ns=now_ns - 3 * H, notified_ns=now_ns - H,
                    cleared_ns=None))
            else:
                report(ctx, conn, tid, "officine", "ok", now_ns - H, next_due_ns=now_ns + 23 * H)
    return names


def journal(ctx: ServerContext, tenant_id: int = audit.PROVIDER) -> list[Any]:
    a = tables.audit_entries
    with ctx.db.read() as conn:
        return list(conn.execute(sa.select(a).where(a.c.tenant_id == tenant_id).order_by(a.c.seq)))


def ensure_account(ctx: Any, name: str, role: str) -> None:
    """A provider account `name` (sessions of unknown accounts end at once: accounts.Revocations)."""
    from coffre.web.hosted import accounts

    if accounts.get(ctx, name) is None:
        accounts.add(ctx, SETUP, name, role, "un mot de passe assez long 2026")
