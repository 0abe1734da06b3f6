"""The provider console in-process: accounts (Argon2id, the TOTP window, a code never twice,
disabled and unknown names), roles, the login throttle, the audit journal of logins and
actions, the fleet sorted by risk with its filters and search, acknowledging an alert, the
billing CSV byte for byte the CLI's, the schema migration of an issue-15 database (SQLite and
PostgreSQL), and `coffre server account`."""

from __future__ import annotations

import hashlib
import html
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from coffre.core.clock import FixedClock
from coffre.server import audit
from coffre.server.context import ServerContext
from coffre.server.db import SCHEMA_VERSION, Database, tables
from coffre.server.settings import Settings
from coffre.web.hosted import accounts
from console_support import NS, PASSWORD, console, fleet, journal, login, person
from server_support import T0, make_context

NOW = T0


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ServerContext]:
    c = make_context(tmp_path / "server", clock=FixedClock(NOW))
    yield c
    c.close()


def client(ctx: ServerContext) -> TestClient:
    app, _kit = console(ctx)
    return TestClient(app, base_url="http://127.0.0.1", follow_redirects=True)


# -- accounts ----------------------------------------------------------------------------------

def test_passwords_are_argon2id_and_totp_accepts_one_step_around_and_never_twice(ctx: ServerContext) -> None:
    alice = person(ctx, "alice", "admin")
    with ctx.db.read() as conn:
        stored = conn.execute(sa.select(tables.provider_accounts.c.password_hash)).scalar()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored

    def check(code: str, password: str = PASSWORD, name: str = "alice") -> str:
        v = accounts.verify(ctx, name, password, code)
        return "ok" if v.account is not None else v.reason

    assert check(alice.code(NOW - 30 * NS)) == "ok"              # the step before: a slow clock
    assert check(alice.code(NOW - 30 * NS)) == "replay"          # the same code again
    assert check(alice.code(NOW)) == "ok"                        # the next step still works
    assert check(alice.code(NOW)) == "replay"
    assert check(alice.code(NOW - 30 * NS)) == "replay"          # an older one neither
    assert check(alice.code(NOW + 30 * NS)) == "ok"              # a fast clock
    assert check(alice.code(NOW + 90 * NS)) == "code"            # 3 steps ahead: refused
    assert check(alice.code(NOW + 60 * NS), password="wrong password!!") == "password"
    assert check("12345") == "code" and check("abcdef") == "code"
    assert check(alice.code(NOW), name="bob") == "unknown"
    accounts.disable(ctx, accounts.Actor("", "t"), "alice", "left the company")
    assert check(alice.code(NOW + 60 * NS)) == "disabled"


def test_an_unknown_name_costs_an_argon2_verification_too(ctx: ServerContext, monkeypatch: Any) -> None:
    person(ctx, "alice", "admin")
    calls: list[str] = []
    real = accounts.hasher()

    class Counting:
        def verify(self, stored: str, password: str) -> bool:
            calls.append(stored[:10])
            return real.verify(stored, password)

        def check_needs_rehash(self, stored: str) -> bool:
            return False

    monkeypatch.setattr(accounts, "hasher", lambda: Counting())
    assert accounts.verify(ctx, "nobody", "whatever password", "123456").reason == "unknown"
    assert accounts.verify(ctx, "<script>", "whatever password", "123456").reason == "unknown"
    assert accounts.verify(ctx, "alice", "whatever password", "123456").reason == "password"
    assert calls == ["$argon2id$"] * 3


def test_account_rules(ctx: ServerContext) -> None:
    from coffre.core.errors import UsageError

    with pytest.raises(UsageError):
        accounts.add(ctx, accounts.Actor(), "Alice Smith", "admin", PASSWORD)
    with pytest.raises(UsageError):
        accounts.add(ctx, accounts.Actor(), "alice", "root", PASSWORD)
    with pytest.raises(UsageError):
        accounts.add(ctx, accounts.Actor(), "alice", "admin", "short")
    person(ctx, "alice", "admin")
    with pytest.raises(UsageError):
        accounts.add(ctx, accounts.Actor(), "alice", "viewer", PASSWORD)


# -- login, roles, sessions, audit -------------------------------------------------------------

def test_login_needs_the_three_fields_and_is_journaled_without_secrets(ctx: ServerContext) -> None:
    alice = person(ctx, "alice", "admin")
    c = client(ctx)
    assert c.get("/console/").url.path == "/console/login"
    refused = login(c, alice, NOW, password="not the password")
    assert refused.status_code == 401 and "Connexion refusée" in refused.text
    assert login(c, alice, NOW, code="000000").status_code == 401
    ok = login(c, alice, NOW)
    assert ok.status_code == 200 and ok.url.path == "/console/"
    logins = [(e.outcome, json.loads(e.detail)) for e in journal(ctx) if e.operation == "console.login"]
    assert logins == [("refused", {"name": "alice", "reason": "password"}),
                      ("refused", {"name": "alice", "reason": "code"}), ("ok", {"name": "alice"})]
    text = " ".join(e.detail + e.client for e in journal(ctx))
    assert PASSWORD not in text and "not the password" not in text and alice.secret not in text
    assert accounts.get(ctx, "alice").last_login_ns == NOW  # type: ignore[union-attr]


def test_roles_viewer_reads_operator_acts_admin_manages(ctx: ServerContext) -> None:
    fleet(ctx, 8, NOW)
    people = {r: person(ctx, r + "-1", r) for r in ("viewer", "operator", "admin")}
    results = {}
    for role, who in people.items():
        c = client(ctx)
        assert login(c, who, NOW).status_code == 200
        fleet_page = c.get("/console/")
        csrf = fleet_page.text.split('name="csrf" value="')[1].split('"')[0]
        ack = c.post("/console/alerts/pharmacie-0000/failing/acknowledge", data={"csrf": csrf})
        results[role] = (fleet_page.status_code, "Acquitter" in fleet_page.text, ack.status_code,
                         c.get("/console/accounts").status_code, c.get("/console/billing").status_code)
    assert results["viewer"] == (200, False, 403, 403, 200)
    assert results["operator"] == (200, True, 200, 403, 200)
    assert results["admin"][3] == 200
    with ctx.db.read() as conn:
        acks = list(conn.execute(sa.select(tables.fleet_alert_acks)))
    assert [(a.problem, a.acknowledged_by) for a in acks] == [("failing", "operator-1")]
    tenant_chain = journal(ctx, acks[0].tenant_id)
    assert [(e.operation, e.client.split("@")[0]) for e in tenant_chain] == [
        ("admin.alert.ack", "console:operator-1")]


def test_a_disabled_account_loses_its_sessions_and_cannot_log_in(ctx: ServerContext) -> None:
    bob = person(ctx, "bob", "operator")
    c = client(ctx)
    assert login(c, bob, NOW).status_code == 200
    assert c.get("/console/").url.path == "/console/"
    ctx.clock = FixedClock(NOW + 60 * NS)  # type: ignore[misc]
    accounts.disable(ctx, accounts.Actor("", "console:root"), "bob", "ticket 12")  # as the CLI does
    assert c.get("/console/").url.path == "/console/login"
    assert login(c, bob, NOW + 60 * NS).status_code == 401


def test_a_changed_password_ends_the_sessions(ctx: ServerContext) -> None:
    bob = person(ctx, "bob", "viewer")
    c = client(ctx)
    assert login(c, bob, NOW).status_code == 200
    ctx.clock = FixedClock(NOW + 60 * NS)  # type: ignore[misc]
    accounts.set_password(ctx, accounts.Actor(), "bob", "another long password")
    assert c.get("/console/").url.path == "/console/login"


def test_six_bad_logins_lock_the_address(ctx: ServerContext) -> None:
    alice = person(ctx, "alice", "admin")
    c = client(ctx)
    statuses = [login(c, alice, NOW, password=f"wrong password {i}").status_code for i in range(5)]
    assert statuses == [401] * 5
    sixth = login(c, alice, NOW)  # even right, it must wait
    assert sixth.status_code == 429 and "Trop de tentatives" in sixth.text
    assert not any(e.outcome == "ok" for e in journal(ctx) if e.operation == "console.login")


def test_the_admin_manages_accounts_in_the_page(ctx: ServerContext) -> None:
    root = person(ctx, "root", "admin")
    c = client(ctx)
    login(c, root, NOW)
    page = c.get("/console/accounts")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    added = c.post("/console/accounts", data={"csrf": csrf, "name": "carol", "role": "viewer",
                                              "password": "carol's long password"})
    assert "carol" in added.text and "otpauth://totp/" in added.text
    secret = added.text.split('id="secret" class="path" value="')[1].split('"')[0]
    assert "otpauth://" not in c.get("/console/accounts").text  # shown once
    refused = c.post("/console/accounts/root/disable", data={"csrf": csrf, "motive": "x"})
    assert "Pas votre propre compte" in refused.text
    c.post("/console/accounts/carol/disable", data={"csrf": csrf, "motive": "test"})
    assert accounts.get(ctx, "carol").disabled_ns is not None  # type: ignore[union-attr]
    ops = [e.operation for e in journal(ctx)]
    assert "admin.account.add" in ops and "admin.account.disable" in ops
    assert secret not in " ".join(e.detail for e in journal(ctx))


def test_xss_in_names_from_tenants_and_agents_is_shown_as_text(ctx: ServerContext) -> None:
    fleet(ctx, 3, NOW, display="<script>alert(1)</script> {i}")
    alice = person(ctx, "alice", "admin")
    c = client(ctx)
    login(c, alice, NOW)
    for path in ("/console/", "/console/billing"):
        text = c.get(path).text
        assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


# -- fleet --------------------------------------------------------------------------------------

def names_in(page: str) -> list[str]:
    import re

    return re.findall(r'<th scope="row"><a href="[^"]*">(pharmacie-\d{4})</a>', page.split('id="alerts"')[0])


def test_fleet_is_sorted_by_risk_and_filters_and_search_are_get_parameters(ctx: ServerContext) -> None:
    names = fleet(ctx, 22, NOW)
    with ctx.db.begin() as conn:  # one disabled tenant, one read-only
        t = tables.tenants
        conn.execute(t.update().where(t.c.name == "pharmacie-0005").values(state="disabled"))
        conn.execute(t.update().where(t.c.name == "pharmacie-0006").values(state="read-only"))
    alice = person(ctx, "alice", "viewer")
    c = client(ctx)
    login(c, alice, NOW)
    page = c.get("/console/").text
    shown = names_in(page)
    reds = [n for i, n in enumerate(names) if i % 7 == 0 and i % 11 != 3]
    oranges = [n for i, n in enumerate(names) if i % 11 == 3 and i != 5]
    assert sorted(shown) == sorted(names) and shown[: len(reds)] == reds
    assert shown[len(reds): len(reds) + len(oranges)] == oranges and shown[-1] == "pharmacie-0005"
    assert "EN ÉCHEC" in page
    assert "la sauvegarde « officine » de comptoir a échoué" in page.replace("\u00a0", " ")
    assert names_in(c.get("/console/?light=red").text) == reds
    assert names_in(c.get("/console/?light=orange").text) == oranges
    assert names_in(c.get("/console/?state=read-only").text) == ["pharmacie-0006"]
    assert names_in(c.get("/console/?state=disabled").text) == ["pharmacie-0005"]
    tens = [n for n in shown if n.startswith("pharmacie-001")]
    assert names_in(c.get("/console/?q=PHARMACIE-001").text) == tens
    assert names_in(c.get("/console/?q=Pharmacie 21").text) == ["pharmacie-0021"]  # the display name
    assert names_in(c.get("/console/?light=purple&state=x").text) == shown       # unknown: ignored
    alerts = page.split('id="alerts"')[1]
    assert alerts.count("<tr class=\"alert-open\">") == len(reds)


def test_acknowledging_an_alert_records_who_and_when(ctx: ServerContext) -> None:
    fleet(ctx, 8, NOW)
    op = person(ctx, "olga", "operator")
    c = client(ctx)
    login(c, op, NOW)
    page = c.get("/console/?light=red").text
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    after = c.post("/console/alerts/pharmacie-0007/failing/acknowledge",
                   data={"csrf": csrf, "back": "light=red"})
    assert after.url.query == b"light=red" and "Alerte acquittée" in after.text
    assert "par olga, aujourd'hui" in html.unescape(after.text)
    again = c.post("/console/alerts/pharmacie-0001/failing/acknowledge", data={"csrf": csrf})
    assert "aucune alerte ouverte" in html.unescape(again.text)  # a green tenant has none
    assert c.post("/console/alerts/pharmacie-0007/failing/acknowledge", data={}).status_code == 403  # no CSRF


# -- billing ------------------------------------------------------------------------------------

def test_billing_page_and_its_csv_are_the_clis_byte_for_byte(ctx: ServerContext, tmp_path: Path) -> None:
    fleet(ctx, 12, NOW, days=60)
    alice = person(ctx, "alice", "viewer")
    c = client(ctx)
    login(c, alice, NOW)
    page = c.get("/console/billing?month=2026-04")
    assert page.status_code == 200 and "avril 2026" in page.text and "pharmacie-0011" in page.text
    download = c.get("/console/billing.csv?month=2026-04")
    assert download.headers["content-type"].startswith("text/csv")
    assert 'filename="coffre-usage-2026-04.csv"' in download.headers["content-disposition"]
    cli = subprocess.run([sys.executable, "-m", "coffre", "server", "--data", str(tmp_path / "server"),
                          "usage", "--month", "2026-04", "--csv"], capture_output=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert download.content == cli.stdout and cli.stdout.count(b"\n") == 13
    assert "Ce n'est pas un mois" in html.unescape(c.get("/console/billing?month=2026-13").text)
    ctx.tally.flush(ctx.db, NOW)
    assert [e.operation for e in journal(ctx)].count("admin.usage") >= 1


# -- schema ------------------------------------------------------------------------------------

def version1(url: str) -> None:
    """A database as issue 15 left it: schema 1, without the console's tables."""
    db = Database(url)
    db.create()
    with db.begin() as conn:
        for name in ("provider_accounts", "fleet_alert_acks"):
            conn.execute(sa.text(f"DROP TABLE {name}"))
        conn.execute(tables.schema.update().values(version=1))
    db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.sqlite'}"
    from dbservers import DB_PASSWORD, DB_USER

    postgres = request.getfixturevalue("postgres")
    name = "console_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    postgres.psql(f"CREATE DATABASE {name}")
    return f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{postgres.port}/{name}"


def test_an_issue15_database_gains_the_accounts_table_at_start_and_at_init(
        db_url: str, tmp_path: Path) -> None:
    version1(db_url)
    settings = Settings(data_dir=tmp_path / "data", db_url=db_url)
    ctx = ServerContext.open(settings)  # what `coffre server` does at start
    try:
        with ctx.db.read() as conn:
            assert conn.execute(sa.select(tables.schema.c.version)).scalar() == SCHEMA_VERSION
        person(ctx, "alice", "admin")
        assert [a.name for a in accounts.listing(ctx)] == ["alice"]
    finally:
        ctx.close()
    version1(db_url)
    db = Database(db_url)
    try:
        db.create()  # what `coffre server init` does
        assert sa.inspect(db.engine).has_table("provider_accounts")
        with db.read() as conn:
            assert conn.execute(sa.select(tables.schema.c.version)).scalar() == SCHEMA_VERSION
    finally:
        db.close()


def test_init_and_the_account_commands_on_an_old_database(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    data.mkdir()
    version1(f"sqlite:///{data / 'server.sqlite'}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, "-m", "coffre", "server", *args, "--data", str(data)],
                             capture_output=True, text=True, env=env)
        assert (res.returncode == 0) == ok, res
        return res

    run("init", "--tls-name", "localhost")
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    log = tmp_path / "log.txt"
    added = subprocess.run([sys.executable, "-m", "coffre", "--log-file", str(log), "server", "account",
                            "add", "alice", "--role", "admin", "--password-file", str(pw),
                            "--data", str(data)],
                           capture_output=True, text=True, env=env)
    assert added.returncode == 0, added
    secret = added.stdout.split("secret: ")[1].split()[0]
    assert "otpauth://totp/Coffre:alice?secret=" + secret in added.stdout
    assert secret not in log.read_text() and PASSWORD not in log.read_text()
    assert "alice" in run("account", "list").stdout
    assert json.loads(run("account", "list", "--json").stdout)["accounts"][0]["role"] == "admin"
    run("account", "disable", "alice", ok=False)  # --motive is required
    run("account", "disable", "alice", "--motive", "test")
    reset = run("account", "reset-totp", "alice")
    assert "secret: " in reset.stdout and secret not in reset.stdout
    run("account", "password", "alice", "--password-file", str(pw))
    run("account", "add", "bob", "--role", "root", "--password-file", str(pw), ok=False)
    c = ServerContext.open(Settings(data_dir=data))
    try:
        ops = [e.operation for e in journal(c)]
    finally:
        c.close()
    assert [o for o in ops if o.startswith("admin.account")] == [
        "admin.account.add", "admin.account.disable", "admin.account.totp", "admin.account.password"]
    assert audit.verify(Database(f"sqlite:///{data / 'server.sqlite'}")) == []
