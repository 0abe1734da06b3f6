"""The provider console's tenant pages, in-process: who may read and act (viewer, operator,
admin), every action journaled in the tenant's chain with the account's name and motive, a
new token shown once then gone, quotas and states set, the recycle bin restored and purged
(after a confirmation), the chain's verification showing a tampered journal as broken, the
exports byte-identical to the CLI's, and untrusted text rendered as text."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.testclient import TestClient

from coffre.core.clock import FixedClock
from coffre.server import audit, metering, tenants, tokens
from coffre.server.context import ServerContext
from coffre.server.db import tables
from coffre.storage.base import Handle
from coffre.web.hosted.app import ConsoleKit, kit_for, mount
from coffre.web.security import Session
from console_support import ensure_account
from server_support import T0, add_tenant, delete, make_context, put

TENANT = "pharmacie-du-port"
BASE = "/console/tenants/" + TENANT
XSS = "<script>alert(1)</script>"
GiB = 1024**3


def ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 10**9


class Console:
    """The console over one server context, and a browser per account."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.kit: ConsoleKit = kit_for(ctx, secure=False)
        self.app = Starlette(routes=[mount(self.kit)])

    def as_(self, user: str, role: str) -> tuple[TestClient, Session]:
        c = TestClient(self.app, base_url="http://127.0.0.1", headers={"Accept-Language": "en"})
        ensure_account(self.ctx, user, role)
        s = self.kit.sessions.new(user, role)
        c.cookies.set(self.kit.sessions.cookie_name, s.id)
        return c, s


@pytest.fixture
def ctx(tmp_path: Path) -> ServerContext:
    return make_context(tmp_path / "srv")


@pytest.fixture
def console(ctx: ServerContext) -> Console:
    return Console(ctx)


def tenant_of(ctx: ServerContext, name: str = TENANT) -> tenants.Tenant:
    with ctx.db.read() as conn:
        t = tenants.by_name(conn, name)
    assert t is not None
    return t


def journal(ctx: ServerContext, name: str = TENANT) -> list[Any]:
    e = tables.audit_entries
    with ctx.db.read() as conn:
        mine = e.c.tenant_id == tenant_of(ctx, name).id
        return list(conn.execute(sa.select(e).where(mine).order_by(e.c.seq)))


def token_row(ctx: ServerContext, token: str) -> tokens.TokenRow:
    tid = tokens.token_id_of(token)
    with ctx.db.read() as conn:
        return next(r for r in tokens.listing(conn) if r.id == tid)


def flashes(html: str) -> list[str]:
    return re.findall(r'<p class="flash flash-(?:ok|error|info)" role="status">([^<]*)</p>', html)


def test_a_viewer_reads_every_page_but_cannot_act(ctx: ServerContext, console: Console) -> None:
    toks = add_tenant(ctx, TENANT, quota_soft=40 * GiB, quota_hard=50 * GiB)
    put(ctx, tenant_of(ctx).id, "officine", b"x" * 1000)
    c, s = console.as_("victor", "viewer")
    for tail in ("", "/usage", "/tokens", "/bin", "/audit"):
        r = c.get(BASE + tail)
        assert r.status_code == 200, (tail, r.text[:500])
        assert "/revoke" not in r.text and 'action="/console/tenants/pharmacie-du-port/quota"' not in r.text
    page = c.get(BASE).text
    assert "officine" in page and "pharmacie-du-port" in page
    # The viewer's POSTs are refused, whatever they carry, and change nothing.
    backup_id = tokens.token_id_of(toks["backup"])
    for tail, data in ((f"/tokens/{backup_id}/revoke", {"motive": "no"}), ("/quota", {"hard": "1G"}),
                       ("/state", {"state": "disabled", "motive": "no"}), ("/tokens", {"role": "prune"}),
                       ("/bin/restore", {"motive": "no"})):
        r = c.post(BASE + tail, data={"csrf": s.csrf, **data}, follow_redirects=False)
        assert r.status_code == 403, tail
    assert token_row(ctx, toks["backup"]).revoked_ns is None
    assert tenant_of(ctx).state == "active" and tenant_of(ctx).quota_hard == 50 * GiB
    changes = [e for e in journal(ctx)
               if e.operation.startswith("admin.") and e.operation != "admin.tenant.show"]
    assert not changes
    # No token: no action (CSRF), even for an admin.
    a, _s = console.as_("anne", "admin")
    assert a.post(BASE + f"/tokens/{backup_id}/revoke", data={"motive": "x"}).status_code == 403
    assert token_row(ctx, toks["backup"]).revoked_ns is None
    # An unknown tenant is a 404; nobody logged in is sent to the login page.
    assert c.get("/console/tenants/nobody").status_code == 404
    anonymous = TestClient(console.app, base_url="http://127.0.0.1")
    assert anonymous.get(BASE, follow_redirects=False).status_code == 303


def test_an_operator_revokes_a_token_with_a_motive_journaled_with_the_account(
        ctx: ServerContext, console: Console) -> None:
    toks = add_tenant(ctx, TENANT)
    other = add_tenant(ctx, "pharmacie-b")
    c, s = console.as_("anne", "operator")
    backup_id = tokens.token_id_of(toks["backup"])
    # Without a motive: refused, said on the page.
    r = c.post(BASE + f"/tokens/{backup_id}/revoke", data={"csrf": s.csrf, "motive": "  "})
    assert r.status_code == 200 and any("motive is required" in f for f in flashes(r.text))
    assert token_row(ctx, toks["backup"]).revoked_ns is None
    # Another tenant's token cannot be revoked from this tenant's page.
    other_id = tokens.token_id_of(other["backup"])
    r = c.post(BASE + f"/tokens/{other_id}/revoke", data={"csrf": s.csrf, "motive": "wrong page"})
    assert any("no token" in f for f in flashes(r.text))
    assert token_row(ctx, other["backup"]).revoked_ns is None
    r = c.post(BASE + f"/tokens/{backup_id}/revoke",
               data={"csrf": s.csrf, "motive": "ticket 4521: laptop stolen"},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == BASE + "/tokens"
    page = c.get(BASE + "/tokens").text
    assert f"Token {backup_id} revoked" in page
    assert token_row(ctx, toks["backup"]).revoked_ns == T0
    with ctx.db.read() as conn, pytest.raises(tokens.Unauthorized):
        tokens.authenticate(conn, "Bearer " + toks["backup"], ctx.clock.now_ns())
    (entry,) = [e for e in journal(ctx) if e.operation == "admin.token.revoke"]
    assert entry.client == "console:anne@testclient" and entry.token_id == ""
    assert json.loads(entry.detail) == {"id": backup_id, "motive": "ticket 4521: laptop stolen"}
    assert audit.verify(ctx.db, tenant_of(ctx).id) == []


def test_a_new_token_is_shown_once_then_gone(ctx: ServerContext, console: Console) -> None:
    add_tenant(ctx, TENANT, ())
    c, s = console.as_("anne", "operator")
    r = c.post(BASE + "/tokens", data={"csrf": s.csrf, "role": "prune", "label": "poste comptoir",
                                        "expires": "90d"}, follow_redirects=False)
    assert r.status_code == 303
    assert "cft_" not in r.headers.get("set-cookie", "") + r.headers["location"]  # never in a cookie or URL
    first = c.get(BASE + "/tokens").text
    (secret,) = re.findall(r"cft_[a-z2-7]{16}_[A-Za-z0-9_-]{43}", first)
    with ctx.db.read() as conn:
        p = tokens.authenticate(conn, "Bearer " + secret, ctx.clock.now_ns())
    assert p.role == "prune" and p.tenant_name == TENANT
    row = token_row(ctx, secret)
    assert row.label == "poste comptoir" and row.expires_ns == T0 + 90 * 86_400 * 10**9
    again = c.get(BASE + "/tokens").text
    assert "cft_" not in again and tokens.token_id_of(secret) in again  # listed by its id only
    assert all("cft_" not in json.dumps(v) for v in s.data.values())
    (entry,) = [e for e in journal(ctx) if e.operation == "admin.token.add"]
    assert entry.client == "console:anne@testclient" and "cft_" not in entry.detail
    # A role the console does not give, a date in the past: refused.
    for bad in ({"role": "admin"}, {"role": "backup", "expires": "2020-01-01"},
                {"role": "read", "expires": "soon"}):
        r = c.post(BASE + "/tokens", data={"csrf": s.csrf, **bad})
        assert flashes(r.text) and "cft_" not in r.text
    assert len([e for e in journal(ctx) if e.operation == "admin.token.add"]) == 1


def test_quotas_and_state_are_set_and_journaled(ctx: ServerContext, console: Console) -> None:
    add_tenant(ctx, TENANT, ())
    c, s = console.as_("anne", "operator")
    r = c.post(BASE + "/quota", data={"csrf": s.csrf, "soft": "40G", "hard": "50GiB", "motive": "contract"})
    assert tenant_of(ctx).quota_soft == 40 * GiB and tenant_of(ctx).quota_hard == 50 * GiB
    assert 'value="40GiB"' in r.text and 'value="50GiB"' in r.text  # typed back as it was given
    r = c.post(BASE + "/quota", data={"csrf": s.csrf, "soft": "50", "hard": "60G"})
    assert any("50 what?" in f for f in flashes(r.text))
    assert tenant_of(ctx).quota_hard == 50 * GiB
    r = c.post(BASE + "/quota", data={"csrf": s.csrf, "soft": "60G", "hard": "50G"})
    assert any("soft quota must not be above" in f for f in flashes(r.text))
    c.post(BASE + "/quota", data={"csrf": s.csrf, "soft": "", "hard": "1.5TB"})
    assert (tenant_of(ctx).quota_soft, tenant_of(ctx).quota_hard) == (None, 1_500_000_000_000)
    quotas = [json.loads(e.detail) for e in journal(ctx) if e.operation == "admin.tenant.quota"]
    assert quotas[0] == {"soft": 40 * GiB, "hard": 50 * GiB, "previous_soft": None, "previous_hard": None,
                         "motive": "contract"}
    assert quotas[-1]["soft"] is None and len(quotas) == 2

    r = c.post(BASE + "/state", data={"csrf": s.csrf, "state": "read-only", "motive": ""})
    assert any("motive is required" in f for f in flashes(r.text)) and tenant_of(ctx).state == "active"
    r = c.post(BASE + "/state", data={"csrf": s.csrf, "state": "read-only", "motive": "unpaid invoice"})
    assert tenant_of(ctx).state == "read-only" and "now read-only" in r.text
    c.post(BASE + "/state", data={"csrf": s.csrf, "state": "active"})  # back to active: no motive needed
    states = [(e.client, json.loads(e.detail)) for e in journal(ctx) if e.operation == "admin.tenant.state"]
    assert states == [("console:anne@testclient", {"state": "read-only", "previous": "active",
                                                    "motive": "unpaid invoice"}),
                      ("console:anne@testclient", {"state": "active", "previous": "read-only"})]
    assert c.post(BASE + "/state", data={"csrf": s.csrf, "state": "gone"}).status_code == 200
    assert tenant_of(ctx).state == "active"


def test_the_bin_is_restored_with_a_motive_and_purged_by_an_admin_after_confirming(
        ctx: ServerContext, console: Console) -> None:
    add_tenant(ctx, TENANT, ())
    tid = tenant_of(ctx).id
    kept = put(ctx, tid, "officine", b"kept" * 100)
    first = [put(ctx, tid, "officine", bytes([i]) * 500) for i in range(3)]
    other = put(ctx, tid, "compta", b"c" * 700)
    for name in [*first, other]:
        delete(ctx, tid, name)
    ctx.clock = FixedClock(T0 + 3600 * 10**9)  # type: ignore[misc]
    late = put(ctx, tid, "officine", b"late" * 100)
    delete(ctx, tid, late)
    c, s = console.as_("olivia", "operator")
    page = c.get(BASE + "/bin").text
    assert all(n in page for n in [*first, other, late]) and kept not in page  # hashes, only of the bin
    assert "compta" in page and "officine" in page
    r = c.post(BASE + "/bin/restore", data={"csrf": s.csrf, "motive": ""})
    assert any("motive is required" in f for f in flashes(r.text))
    # Since a date: only what was deleted after it.
    r = c.post(BASE + "/bin/restore", data={"csrf": s.csrf, "motive": "prune by mistake", "since": "30min"})
    assert any("1 object (400 B) restored" in f for f in flashes(r.text)), flashes(r.text)
    # One repository.
    r = c.post(BASE + "/bin/restore",
               data={"csrf": s.csrf, "motive": "stolen prune token", "repository": "officine"})
    assert any("3 objects" in f for f in flashes(r.text))
    stored, binned = tenant_of(ctx).stored_bytes, tenant_of(ctx).binned_bytes
    assert (stored, binned) == (400 + 1500 + 400, 700)
    restores = [(e.client, e.count, json.loads(e.detail)) for e in journal(ctx)
                if e.operation == "admin.recycle.restore"]
    assert restores[1] == ("console:olivia@testclient", 3,
                           {"motive": "stolen prune token", "repository": "officine"})
    assert restores[0][2]["motive"] == "prune by mistake" and restores[0][2]["since_ns"] == T0 + 1800 * 10**9
    # Purge: admins only, and only after confirming.
    r = c.post(BASE + "/bin/purge", data={"csrf": s.csrf, "motive": "end of contract"},
               follow_redirects=False)
    assert r.status_code == 403
    a, sa_ = console.as_("anne", "admin")
    confirm = a.post(BASE + "/bin/purge", data={"csrf": sa_.csrf, "motive": "end of contract"})
    assert confirm.status_code == 200 and 'name="confirm" value="yes"' in confirm.text
    assert "1 object (700 B) will be removed" in confirm.text
    assert tenant_of(ctx).binned_bytes == 700  # nothing purged yet
    r = a.post(BASE + "/bin/purge", data={"csrf": sa_.csrf, "motive": "end of contract", "confirm": "yes"})
    assert any("purged from the recycle bin" in f for f in flashes(r.text))
    assert tenant_of(ctx).binned_bytes == 0
    with pytest.raises(Exception):  # noqa: B017 - gone from storage
        ctx.store.backend(tid, "compta").load(Handle("data", other))
    (purge,) = [e for e in journal(ctx) if e.operation == "admin.recycle.purge"]
    assert purge.client == "console:anne@testclient"
    assert json.loads(purge.detail)["motive"] == "end of contract"
    assert audit.verify(ctx.db, tid) == []


def test_the_verification_shows_a_tampered_chain_as_broken(ctx: ServerContext, console: Console) -> None:
    add_tenant(ctx, TENANT, ())
    tid = tenant_of(ctx).id
    with ctx.db.begin() as conn:
        for i in range(5):
            audit.append(ctx.db, conn, audit.Entry(tid, "put", kind="data", count=1, bytes=100 * i), T0)
    c, s = console.as_("victor", "viewer")
    assert "Not verified since the console started" in c.get(BASE + "/audit").text
    r = c.post(BASE + "/audit/verify", data={"csrf": s.csrf})
    assert "The audit journal is intact." in flashes(r.text)
    assert "intact" in r.text and "5 entries checked up to entry 5" in r.text and "by victor" in r.text
    e = tables.audit_entries
    with ctx.db.begin() as conn:
        conn.execute(e.update().where(e.c.tenant_id == tid, e.c.seq == 2).values(bytes=5))
    page = c.get(BASE + "/audit").text
    assert "broken" not in page  # the last result stays until verified again
    r = c.post(BASE + "/audit/verify", data={"csrf": s.csrf})
    assert "The audit journal has 1 problem: see below." in flashes(r.text)
    assert "broken" in r.text and "entry 2 was edited: its content no longer matches its hash" in r.text
    assert "by victor" in r.text


def test_the_journal_is_paginated_newest_first(ctx: ServerContext, console: Console) -> None:
    add_tenant(ctx, TENANT, ())
    tid = tenant_of(ctx).id
    with ctx.db.begin() as conn:
        for i in range(120):
            entry = audit.Entry(tid, "put", "ok", "tok123", "10.0.0.7", "data", 1, i)
            audit.append(ctx.db, conn, entry, T0 + i)
    c, _s = console.as_("victor", "viewer")
    page = c.get(BASE + "/audit").text
    seqs = [int(x) for x in re.findall(r'<tr><td class="num">(\d+)</td>', page)]
    assert seqs == list(range(120, 70, -1)) and "10.0.0.7" in page and "tok123" in page
    older = re.search(r'href="([^"]*before=(\d+))"', page)
    assert older is not None and older.group(2) == "71"
    page2 = c.get(older.group(1).replace("&amp;", "&")).text
    assert [int(x) for x in re.findall(r'<tr><td class="num">(\d+)</td>', page2)] == list(range(70, 20, -1))
    page3 = c.get(BASE + "/audit?before=21").text
    assert [int(x) for x in re.findall(r'<tr><td class="num">(\d+)</td>', page3)] == list(range(20, 0, -1))
    assert "before=" not in page3


def test_usage_plot_months_and_csv(ctx: ServerContext, console: Console) -> None:
    add_tenant(ctx, TENANT, (), quota_hard=10 * 10**9)
    tid = tenant_of(ctx).id
    for day in range(1, 29):
        with ctx.db.begin() as conn:
            conn.execute(tables.tenants.update().where(tables.tenants.c.id == tid).values(
                stored_bytes=day * 10**8, binned_bytes=10**7))
        metering.sample(ctx.db, ns(f"2026-05-{day:02d}T23:00:00"))
    c, _s = console.as_("victor", "viewer")
    page = c.get(BASE + "/usage").text
    assert '<svg class="plot"' in page and "28 days sampled" in page
    report = metering.report(ctx.db, "2026-05", T0, tid)
    assert f">{report.rows[0].gb_month}<" in page and "in progress" in page
    assert "At this pace, the hard quota is reached around" in page
    r = c.get(BASE + "/usage.csv?month=2026-05")
    assert r.headers["content-type"].startswith("text/csv")
    assert 'filename="usage-pharmacie-du-port-2026-05.csv"' in r.headers["content-disposition"]
    assert r.content.decode() == metering.csv_text(report.rows)
    assert c.get(BASE + "/usage.csv?month=2026-13").status_code == 400


def test_exports_are_byte_identical_to_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    ctx = make_context(data, clock=FixedClock(ns("2026-04-20T10:00:00")))
    add_tenant(ctx, "aaa-first", ())
    add_tenant(ctx, TENANT, (), quota_soft=8 * 10**9)
    ctx.clock = FixedClock(ns("2026-06-15T10:00:00"))  # May is over, for the console as for the CLI
    tid = tenant_of(ctx).id
    for day, stored in (("2026-05-03", 2 * 10**9), ("2026-05-20", 3 * 10**9)):
        with ctx.db.begin() as conn:
            conn.execute(tables.tenants.update().where(tables.tenants.c.id == tid)
                         .values(stored_bytes=stored))
            metering.count(ctx.db, conn, tid, ns(day + "T10:00:00"), uploads=7, uploaded_bytes=12345)
            audit.append(ctx.db, conn, audit.Entry(tid, "put", kind="data", bytes=12345, detail="é"),
                         ns(day + "T10:00:00"))
        metering.sample(ctx.db, ns(day + "T23:00:00"))
    console = Console(ctx)
    c, _s = console.as_("victor", "viewer")
    csv_page = c.get(BASE + "/usage.csv?month=2026-05").content
    jsonl = c.get(BASE + "/audit.jsonl?from=2026-05-01&to=2026-05-31")
    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    # The exports are reads the journal counts (at the next flush), with the account's name.
    pending = {(op, client.split("@")[0]) for _t, _id, client, op, _k, _o in ctx.tally._counts}
    assert {("admin.usage.export", "console:victor"), ("admin.audit.export", "console:victor")} <= pending
    ctx.db.close()
    env = {**os.environ, "LANG": "C.UTF-8", "LANGUAGE": "", "LC_ALL": ""}

    def cli(*args: str) -> bytes:
        done = subprocess.run([sys.executable, "-m", "coffre", "server", "--data", str(data), *args],
                              capture_output=True, env=env, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    whole = cli("usage", "--month", "2026-05", "--csv").decode().splitlines(keepends=True)
    mine = [line for line in whole[1:] if line.split(",")[1] == TENANT]
    assert len(whole) == 3 and csv_page.decode() == whole[0] + mine[0]
    assert ",5000000000," not in csv_page.decode() and "2026-05,pharmacie-du-port," in csv_page.decode()
    exported = cli("audit", "export", "--tenant", TENANT, "--from", "2026-05-01", "--to", "2026-05-31")
    assert jsonl.content == exported and exported.count(b"\n") == 2


def test_untrusted_text_is_rendered_as_text(ctx: ServerContext, console: Console) -> None:
    toks = add_tenant(ctx, TENANT)
    with ctx.db.begin() as conn:
        conn.execute(tables.tenants.update().where(tables.tenants.c.name == TENANT).values(
            display_name=XSS, contact=XSS + " 04 91"))
    c, s = console.as_("anne", "admin")
    c.post(BASE + "/tokens", data={"csrf": s.csrf, "role": "backup", "label": XSS})
    c.post(BASE + f"/tokens/{tokens.token_id_of(toks['read'])}/revoke", data={"csrf": s.csrf, "motive": XSS})
    c.post(BASE + "/state", data={"csrf": s.csrf, "state": "read-only", "motive": XSS})
    for tail in ("", "/usage", "/tokens", "/bin", "/audit"):
        page = c.get(BASE + tail).text
        assert "<script>alert" not in page, tail
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, tail
    assert json.loads(journal(ctx)[-1].detail)["motive"] == XSS  # journaled as typed


def test_routes_show_nothing_but_metadata(ctx: ServerContext, console: Console) -> None:
    """Zero knowledge: the console can only show what the server holds — names are hashes, and
    only the bin lists objects."""
    add_tenant(ctx, TENANT, ())
    tid = tenant_of(ctx).id
    live = put(ctx, tid, "officine", b"ordonnance de Mme Martin")
    gone = put(ctx, tid, "officine", b"facture")
    delete(ctx, tid, gone)
    c, _s = console.as_("anne", "admin")
    tails = ("", "/usage", "/tokens", "/bin", "/audit")
    pages: dict[str, str] = {tail: c.get(BASE + tail).text for tail in tails}
    assert all("Martin" not in p and live not in p for p in pages.values())
    assert [t for t, p in pages.items() if gone in p] == ["/bin"]

