"""The provider's administration of the hosting server (docs/server.md): `coffre server init
[--demo]`, `tenant`, `token`, `recycle`, `install` through the real command line; the recycle
bin's restore, purge and periodic purge (crash-safe, idempotent across instances, by the
server's clock); the admin HTTP API; the self-signed certificate.

Objects are put in a tenant's repositories and deleted into the bin here directly (store, then
rows, as the objects API does), so these tests stand without the HTTP object protocol."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import urllib3
from starlette.applications import Starlette

from coffre.core.clock import FixedClock, SystemClock
from coffre.core.errors import StorageError
from coffre.server import admin, admin_api, audit, bin, tenants, tls, tokens
from coffre.server.context import ServerContext
from coffre.server.db import tables
from coffre.server.http import Refusal, refusal_response
from coffre.server.settings import Settings
from coffre.storage.base import Handle
from dbservers import DB_PASSWORD, DB_USER
from server_support import T0, add_tenant, admin_token, delete, make_context, put, serving

from conftest import Coffre, Result

DAY = 86_400 * 10**9
UNIT = "coffre-server.service"


# --------------------------------------------------------------------------- helpers


class Server:
    """`coffre server --data DATA ...` as the provider types it."""

    def __init__(self, coffre: Coffre, data: Path) -> None:
        self.coffre = coffre
        self.data = data

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self.coffre("server", "--data", str(self.data), *args, repo=False, env=env)

    def ok(self, *args: str, env: dict[str, str] | None = None) -> Result:
        res = self(*args, env=env)
        assert res.code == 0, res
        return res

    def context(self, clock: Any = None, **settings: Any) -> ServerContext:
        return ServerContext.open(Settings(data_dir=self.data, **settings), clock or SystemClock())


@contextmanager
def opened(srv: Server, **kw: Any) -> Iterator[ServerContext]:
    """The server's context in this process (another instance on the same files)."""
    ctx = srv.context(**kw)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def server(coffre: Coffre, tmp_path: Path) -> Server:
    s = Server(coffre, tmp_path / "srv")
    s.ok("init")
    return s


def tenant_id(ctx: ServerContext, name: str) -> int:
    with ctx.db.read() as conn:
        t = tenants.by_name(conn, name)
    assert t is not None
    return t.id


def usage(ctx: ServerContext, name: str) -> tuple[int, int]:
    with ctx.db.read() as conn:
        t = tenants.by_name(conn, name)
    assert t is not None
    return t.stored_bytes, t.binned_bytes


def object_rows(ctx: ServerContext, tenant: int) -> dict[str, int | None]:
    """{name: binned_ns} of the tenant's rows."""
    o, r = tables.objects, tables.repositories
    with ctx.db.read() as conn:
        return {n: b for n, b in conn.execute(sa.select(o.c.name, o.c.binned_ns).select_from(
            o.join(r, r.c.id == o.c.repository_id)).where(r.c.tenant_id == tenant))}


def stored(ctx: ServerContext, tenant: int, repo: str, name: str, kind: str = "data") -> bool:
    try:
        ctx.store.backend(tenant, repo).stat(Handle(kind, name))
    except Exception:
        return False
    return True


def journal(ctx: ServerContext, tenant: int | None = None) -> list[Any]:
    e = tables.audit_entries
    q = sa.select(e).order_by(e.c.tenant_id, e.c.seq)
    if tenant is not None:
        q = q.where(e.c.tenant_id == tenant)
    with ctx.db.read() as conn:
        return list(conn.execute(q))


def chain_intact(ctx: ServerContext) -> bool:
    """Every tenant's chain recomputed from its entries and compared with its head, and found
    sound by the journal's own verifier."""
    entries = journal(ctx)
    prev: dict[int, str] = {}
    for row in entries:
        entry = audit.Entry(row.tenant_id, row.operation, row.outcome, row.token_id, row.client, row.kind,
                            row.count, row.bytes, row.detail)
        want = audit.chain_hash(prev.get(row.tenant_id, audit.GENESIS),
                                audit.canonical(row.tenant_id, row.seq, row.time_ns, entry))
        if want != row.entry_hash or row.prev_hash != prev.get(row.tenant_id, audit.GENESIS):
            return False
        prev[row.tenant_id] = row.entry_hash
    with ctx.db.read() as conn:
        heads = dict(conn.execute(sa.select(tables.audit_heads.c.tenant_id,
                                            tables.audit_heads.c.entry_hash)).all())
    return all(heads[t] == h for t, h in prev.items()) and audit.verify(ctx.db) == []


def authenticate(ctx: ServerContext, token: str, now_ns: int | None = None) -> Any:
    with ctx.db.read() as conn:
        return tokens.authenticate(conn, "Bearer " + token, now_ns or ctx.clock.now_ns())


def refused(ctx: ServerContext, token: str, now_ns: int | None = None) -> str:
    try:
        authenticate(ctx, token, now_ns)
    except tokens.Unauthorized as exc:
        return exc.reason
    return ""


TOKEN = re.compile(r"cft_[a-z2-7]{16}_[A-Za-z0-9_-]{43}")


# --------------------------------------------------------------------------- init


def test_init_makes_a_private_server_and_a_second_init_keeps_everything(coffre: Coffre,
                                                                        tmp_path: Path) -> None:
    srv = Server(coffre, tmp_path / "srv")
    log = tmp_path / "server.log"
    first = srv.ok("init", "--tls-name", "backup.example.fr", "--tls-name", "192.0.2.10",
                   "--log-file", str(log))
    data = srv.data
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "objects").is_dir() and (data / "server.sqlite").is_file()
    assert (data / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (data / "admin.token").stat().st_mode & 0o777 == 0o600
    token = (data / "admin.token").read_text().strip()
    assert TOKEN.fullmatch(token)
    # The admin token is in its file only: not on the terminal, not in the log.
    assert token not in first.out + first.err and token not in log.read_text()
    assert "created" in first.out and str(data / "admin.token") in first.out
    cert = tls.describe(data / "tls" / "cert.pem", data / "tls" / "key.pem")
    assert set(cert.names) == {"backup.example.fr", "192.0.2.10"}

    with opened(srv) as ctx:
        assert authenticate(ctx, token).role == "admin"
        [init] = [e for e in journal(ctx, audit.PROVIDER) if e.operation == "admin.init"]
        assert init.client.startswith("console:")

    files = (data / "admin.token", data / "tls" / "cert.pem", data / "tls" / "key.pem")
    before = {p: p.read_bytes() for p in files}
    again = srv.ok("init")
    assert "(created)" not in again.out and "(kept)" in again.out, again
    assert "nothing was changed" in again.out
    assert {p: p.read_bytes() for p in before} == before
    with opened(srv) as ctx, ctx.db.read() as conn:
        assert [t.role for t in tokens.listing(conn)] == ["admin"]  # no second admin token


def test_init_demo_prints_the_commands_of_a_first_backup(coffre: Coffre, tmp_path: Path) -> None:
    srv = Server(coffre, tmp_path / "srv")
    res = srv.ok("init", "--demo")
    data = srv.data
    demo = data / "demo.token"
    assert demo.stat().st_mode & 0o777 == 0o600
    assert f"export COFFRE_SERVER_TOKEN_FILE={demo}" in res.out
    assert f"export SSL_CERT_FILE={data / 'tls' / 'cert.pem'}" in res.out
    assert "coffre init --repo https://127.0.0.1:8443/demo" in res.out
    assert f"coffre server --data {data}" in res.out
    assert not TOKEN.search(res.out + res.err)
    with opened(srv) as ctx:
        p = authenticate(ctx, demo.read_text().strip())
        assert (p.tenant_name, p.role) == ("demo", "backup")
    again = srv.ok("init", "--demo")
    assert "tenant demo: kept" in again.out and f"{demo} (kept)" in again.out
    assert "nothing was changed" in again.out


def test_init_on_postgresql(coffre: Coffre, tmp_path: Path, postgres: Any) -> None:
    postgres.psql("CREATE DATABASE coffre_admin_init")
    dsn = f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{postgres.port}/coffre_admin_init"
    srv = Server(coffre, tmp_path / "srv")
    res = srv.ok("--db", dsn, "init")
    assert "database: postgresql" in res.out and "(created)" in res.out
    assert DB_PASSWORD not in res.out  # the URL is shown without its password
    assert not (srv.data / "server.sqlite").exists()
    srv.ok("--db", dsn, "tenant", "add", "pharmacie-du-port")
    listed = srv.ok("--db", dsn, "tenant", "list", "--json").json()
    assert [t["name"] for t in listed["tenants"]] == ["pharmacie-du-port"]
    again = srv.ok("--db", dsn, "init")
    assert "database: postgresql" in again.out and "(kept)" in again.out


def test_the_certificate_is_valid_for_its_names_and_loadable_by_ssl(tmp_path: Path) -> None:
    cert = tls.create(tmp_path / "tls", ["localhost", "127.0.0.1", "::1"])
    assert cert.created and set(cert.names) == {"localhost", "127.0.0.1", "::1"}
    assert cert.key.stat().st_mode & 0o777 == 0o600
    assert tls.create(tmp_path / "tls", ["other.example.fr"]).created is False  # kept as it is

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert.cert, cert.key)

    def handshake(host: str, family: socket.AddressFamily, server_name: str) -> None:
        with socket.socket(family) as listener:
            listener.bind((host, 0))
            listener.listen()

            def serve() -> None:
                conn, _ = listener.accept()
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as s:
                        s.recv(1)
                except (ssl.SSLError, OSError):
                    pass

            t = threading.Thread(target=serve)
            t.start()
            try:
                client = ssl.create_default_context(cafile=str(cert.cert))
                client.verify_flags |= ssl.VERIFY_X509_STRICT
                with socket.create_connection((host, listener.getsockname()[1]), timeout=10) as raw, \
                        client.wrap_socket(raw, server_hostname=server_name) as s:
                    s.sendall(b"x")
            finally:
                t.join(10)

    handshake("127.0.0.1", socket.AF_INET, "127.0.0.1")
    handshake("127.0.0.1", socket.AF_INET, "localhost")
    if socket.has_ipv6:
        try:
            handshake("::1", socket.AF_INET6, "::1")
        except OSError as exc:
            if not isinstance(exc, ssl.SSLError):
                pass  # no IPv6 loopback here
            else:
                raise
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake("127.0.0.1", socket.AF_INET, "backup.example.fr")


def test_a_bad_tls_name_is_refused(coffre: Coffre, tmp_path: Path) -> None:
    srv = Server(coffre, tmp_path / "srv")
    res = srv("init", "--tls-name", "not a host!")
    assert res.code == 2 and "'not a host!' is neither a host name nor an IP address" in res.err, res


# --------------------------------------------------------------------------- tenants


def test_tenants_are_added_listed_shown_and_limited(server: Server) -> None:
    server.ok("tenant", "add", "pharmacie-du-port", "--display-name", "Pharmacie du Port",
              "--contact", "04 91 00 00 00", "--quota-soft", "40GiB", "--quota-hard", "50GiB")
    server.ok("tenant", "add", "officine-centrale")
    twice = server("tenant", "add", "pharmacie-du-port")
    assert twice.code == 2 and "already exists" in twice.err
    bad = server("tenant", "add", "Pharmacie Du Port")
    assert bad.code == 2 and "not a valid tenant name" in bad.err
    inverted = server("tenant", "add", "x", "--quota-soft", "2GiB", "--quota-hard", "1GiB")
    assert inverted.code == 2 and "soft quota must not be above the hard quota" in inverted.err
    unitless = server("tenant", "add", "y", "--quota-hard", "50")
    assert unitless.code == 2 and "50 what?" in unitless.err

    with opened(server) as ctx:
        port = tenant_id(ctx, "pharmacie-du-port")
        kept = put(ctx, port, "comptoir", b"a" * 1000)
        binned = put(ctx, port, "comptoir", b"b" * 300)
        put(ctx, port, "preparatoire", b"c" * 50, kind="index")
        delete(ctx, port, binned)
        put(ctx, tenant_id(ctx, "officine-centrale"), "poste1", b"other tenant")

    listed = server.ok("tenant", "list", "--json").json()["tenants"]
    assert [t["name"] for t in listed] == ["officine-centrale", "pharmacie-du-port"]
    p = listed[1]
    assert p["quota"] == {"soft": 40 * 2**30, "hard": 50 * 2**30, "state": "ok"}
    assert (p["stored_bytes"], p["binned_bytes"], p["used_bytes"]) == (1050, 300, 1350)
    assert p["repositories"] == 2 and p["bin"]["objects"] == 1 and p["state"] == "active"
    text = server.ok("tenant", "list").out
    assert re.search(r"pharmacie-du-port\s+active\s+1\.03 KiB\s+300 B\s+40 GiB / 50 GiB", text), text

    shown = server.ok("tenant", "show", "pharmacie-du-port", "--json").json()
    assert [(r["name"], r["objects"], r["bytes"], r["binned_objects"], r["binned_bytes"])
            for r in shown["repositories"]] == [("comptoir", 1, 1000, 1, 300), ("preparatoire", 1, 50, 0, 0)]
    assert shown["bin"]["counts_against_quota"] is True and shown["bin"]["objects"] == 1
    assert shown["contact"] == "04 91 00 00 00" and shown["tokens"] == []
    human = server.ok("tenant", "show", "pharmacie-du-port").out
    assert "until then it counts against the quota" in human and "comptoir" in human
    assert "poste1" not in human and kept not in human

    # Quota changes, journaled; a quota below the usage is allowed and said.
    server.ok("tenant", "quota", "pharmacie-du-port", "--soft", "none", "--hard", "1KiB")
    said = server.ok("tenant", "quota", "pharmacie-du-port", "--hard", "1000B").out
    assert "at the hard quota: uploads refused" in said
    assert server("tenant", "quota", "pharmacie-du-port").code == 2
    assert server("tenant", "quota", "pharmacie-du-port", "--soft", "2KiB").code == 2  # above the hard one
    with opened(server) as ctx, ctx.db.read() as conn:
        t = tenants.by_name(conn, "pharmacie-du-port")
        assert t is not None and (t.quota_soft, t.quota_hard) == (None, 1000)
        quotas = [json.loads(e.detail) for e in journal(ctx, port) if e.operation == "admin.tenant.quota"]
        assert quotas[-1] == {"soft": None, "hard": 1000, "previous_soft": None, "previous_hard": 1024}


def test_tenant_states_need_a_motive_and_are_honored_by_tokens(server: Server) -> None:
    server.ok("tenant", "add", "pharmacie-du-port")
    with opened(server) as ctx:
        token = add_tenant(ctx, "other")["backup"]
    mine = TOKEN.search(server.ok("token", "add", "--tenant", "pharmacie-du-port", "--role", "backup").out)
    assert mine is not None
    no_motive = server("tenant", "disable", "pharmacie-du-port")
    assert no_motive.code == 2 and "--motive" in no_motive.err
    blank = server("tenant", "disable", "pharmacie-du-port", "--motive", "   ")
    assert blank.code == 2 and "a motive is required" in blank.err

    res = server.ok("tenant", "disable", "pharmacie-du-port", "--motive", "contrat résilié, ticket 4521")
    assert "disabled (was active)" in res.out
    with opened(server) as ctx:
        assert refused(ctx, mine.group()) == "disabled"
        assert authenticate(ctx, token).tenant_name == "other"  # the other tenant is not touched
    server.ok("tenant", "read-only", "pharmacie-du-port", "--motive", "enquête")
    with opened(server) as ctx:
        assert authenticate(ctx, mine.group()).tenant_state == "read-only"
    server.ok("tenant", "enable", "pharmacie-du-port")
    with opened(server) as ctx:
        assert authenticate(ctx, mine.group()).tenant_state == "active"
        states = [json.loads(e.detail) for e in journal(ctx, tenant_id(ctx, "pharmacie-du-port"))
                  if e.operation == "admin.tenant.state"]
        assert states == [{"state": "disabled", "previous": "active",
                           "motive": "contrat résilié, ticket 4521"},
                          {"state": "read-only", "previous": "disabled", "motive": "enquête"},
                          {"state": "active", "previous": "read-only"}]
        assert chain_intact(ctx)
    unknown = server("tenant", "disable", "nobody-here", "--motive", "x")
    assert unknown.code == 2 and "no tenant named 'nobody-here'" in unknown.err


# --------------------------------------------------------------------------- tokens


def test_a_token_is_shown_once_and_nowhere_else(server: Server, tmp_path: Path) -> None:
    server.ok("tenant", "add", "pharmacie-du-port")
    log = tmp_path / "admin.log"
    res = server.ok("token", "add", "--tenant", "pharmacie-du-port", "--role", "prune",
                    "--label", "poste NAS", "--log-file", str(log))
    secret = TOKEN.search(res.out)
    assert secret is not None
    token = secret.group()
    token_id = tokens.token_id_of(token)
    assert "it is not logged" in log.read_text() and token not in log.read_text()
    assert token_id in log.read_text()  # the id is public: in the log, the lists, the journal

    out = tmp_path / "port.token"
    written = server.ok("token", "add", "--tenant", "pharmacie-du-port", "--role", "backup",
                        "--out", str(out), "--log-file", str(log))
    assert out.stat().st_mode & 0o777 == 0o600
    file_token = out.read_text().strip()
    assert TOKEN.fullmatch(file_token) and file_token not in written.out + written.err
    again = server("token", "add", "--tenant", "pharmacie-du-port", "--role", "backup", "--out", str(out))
    assert again.code == 2 and "exists already" in again.err and out.read_text().strip() == file_token
    admin_res = server.ok("token", "add", "--admin", "--label", "second admin")
    admin_secret = TOKEN.search(admin_res.out)
    assert admin_secret is not None

    listing = server.ok("token", "list").out + server.ok("token", "list", "--json").out
    shown = server.ok("tenant", "show", "pharmacie-du-port", "--json").out
    secrets = [token, file_token, admin_secret.group(), (server.data / "admin.token").read_text().strip()]
    for s in secrets:
        assert s not in listing and s not in shown and s not in log.read_text()
        assert s.split("_", 2)[2] not in listing  # not even the secret part
    assert token_id in listing and "poste NAS" in listing
    with opened(server) as ctx:
        for e in journal(ctx):
            row = json.dumps(list(e))
            assert not any(s.split("_", 2)[2] in row for s in secrets), row
        assert authenticate(ctx, file_token).role == "backup"
        assert authenticate(ctx, admin_secret.group()).role == "admin"
    database = (server.data / "server.sqlite").read_bytes() + b"".join(
        p.read_bytes() for p in server.data.glob("server.sqlite-*"))
    assert not any(s.split("_", 2)[2].encode() in database for s in secrets)  # stored hashed only


def test_revocation_and_expiry_are_honored(server: Server) -> None:
    server.ok("tenant", "add", "pharmacie-du-port")
    short = TOKEN.search(server.ok("token", "add", "--tenant", "pharmacie-du-port", "--role", "read",
                                   "--expires", "2d").out)
    dated = TOKEN.search(server.ok("token", "add", "--tenant", "pharmacie-du-port", "--role", "backup",
                                   "--expires", "2100-01-01").out)
    assert short is not None and dated is not None
    reader = ("token", "add", "--tenant", "pharmacie-du-port", "--role", "read")
    past = server(*reader, "--expires", "2001-01-01")
    assert past.code == 2 and "in the past" in past.err
    far = server(*reader, "--expires", "2999-01-01")
    assert far.code == 2 and "too far" in far.err
    junk = server("token", "add", "--tenant", "pharmacie-du-port", "--role", "read", "--expires", "soon")
    assert junk.code == 2 and "neither a duration nor a date" in junk.err
    with opened(server) as ctx:
        now = ctx.clock.now_ns()
        assert refused(ctx, short.group(), now) == ""
        assert refused(ctx, short.group(), now + 3 * DAY) == "expired"
        assert refused(ctx, dated.group(), now + 3 * DAY) == ""
    listed = server.ok("token", "list", "--json").json()["tokens"]
    by_id = {t["id"]: t for t in listed}
    assert by_id[tokens.token_id_of(short.group())]["expires_ns"] > 0

    ident = tokens.token_id_of(dated.group())
    assert server("token", "revoke", ident).code == 2  # a motive is required
    res = server.ok("token", "revoke", ident, "--motive", "poste volé")
    assert f"token {ident}" in res.out and "revoked" in res.out
    with opened(server) as ctx:
        assert refused(ctx, dated.group()) == "revoked"
        assert refused(ctx, short.group()) == ""
        [entry] = [e for e in journal(ctx, tenant_id(ctx, "pharmacie-du-port"))
                   if e.operation == "admin.token.revoke"]
        assert json.loads(entry.detail) == {"id": ident, "motive": "poste volé"}
    state = {t["id"]: t["state"] for t in server.ok("token", "list", "--json").json()["tokens"]}
    assert state[ident] == "revoked"
    unknown = server("token", "revoke", "aaaaaaaaaaaaaaaa", "--motive", "x")
    assert unknown.code == 2 and "no token with id" in unknown.err
    assert server("token", "add", "--tenant", "pharmacie-du-port").code == 2  # no role
    assert server("token", "add", "--admin", "--role", "backup").code == 2


def test_listings_keep_tenants_apart(server: Server) -> None:
    with opened(server) as ctx:
        a = add_tenant(ctx, "pharmacie-a", ("backup",))
        b = add_tenant(ctx, "pharmacie-b", ("backup", "prune"))
        ta, tb = tenant_id(ctx, "pharmacie-a"), tenant_id(ctx, "pharmacie-b")
        in_a = put(ctx, ta, "repo-a", b"object of a")
        in_b = put(ctx, tb, "repo-b", b"object of b")
        delete(ctx, ta, in_a)
        delete(ctx, tb, in_b)
    ids_a = {tokens.token_id_of(t) for t in a.values()}
    ids_b = {tokens.token_id_of(t) for t in b.values()}
    only_a = server.ok("token", "list", "--tenant", "pharmacie-a", "--json").json()["tokens"]
    assert {t["id"] for t in only_a} == ids_a and {t["tenant"] for t in only_a} == {"pharmacie-a"}
    shown = server.ok("tenant", "show", "pharmacie-a", "--json").json()
    assert {t["id"] for t in shown["tokens"]} == ids_a
    assert [r["name"] for r in shown["repositories"]] == ["repo-a"]
    assert not any(i in json.dumps(shown) for i in ids_b) and "repo-b" not in json.dumps(shown)
    bin_a = server.ok("recycle", "list", "--tenant", "pharmacie-a", "--json").json()
    assert [o["name"] for o in bin_a["objects"]] == [in_a] and in_b not in json.dumps(bin_a)
    everything = server.ok("recycle", "list", "--json").json()
    assert [(s["tenant"], s["repository"]) for s in everything["repositories"]] == [
        ("pharmacie-a", "repo-a"), ("pharmacie-b", "repo-b")]
    assert "objects" not in everything


# --------------------------------------------------------------------------- recycle bin


def test_recycle_restore_and_purge(server: Server) -> None:
    clock = FixedClock(T0)
    with opened(server, clock=clock) as ctx:
        add_tenant(ctx, "pharmacie-du-port")
        add_tenant(ctx, "other")
        port, other = tenant_id(ctx, "pharmacie-du-port"), tenant_id(ctx, "other")
        old = put(ctx, port, "comptoir", b"old" * 100)
        lock = put(ctx, port, "comptoir", b"a lock", kind="locks")
        recent = [put(ctx, port, "comptoir", bytes([i]) * 10) for i in range(3)]
        elsewhere = put(ctx, port, "preparatoire", b"elsewhere")
        theirs = put(ctx, other, "repo", b"theirs")
        delete(ctx, port, old)
        delete(ctx, port, lock)
        delete(ctx, other, theirs)
        clock.advance(5 * 86400)
        for name in [*recent, elsewhere]:
            delete(ctx, port, name)
        assert usage(ctx, "pharmacie-du-port") == (0, 300 + 6 + 30 + 9)

    # An attacker's deletions of the last days undone, in one repository: the older one stays.
    since = datetime.fromtimestamp((T0 + 4 * DAY) / 1e9).strftime("%Y-%m-%d %H:%M:%S")
    assert server("recycle", "restore", "--tenant", "pharmacie-du-port").code == 2  # motive
    res = server.ok("recycle", "restore", "--tenant", "pharmacie-du-port", "--repo", "comptoir",
                    "--since", since, "--motive", "jeton de purge volé, ticket 77")
    assert "3 objects (30 B) of pharmacie-du-port restored" in res.out
    with opened(server) as ctx:
        rows = object_rows(ctx, port)
        assert all(rows[n] is None for n in recent)
        assert rows[old] is not None and rows[lock] is not None and rows[elsewhere] is not None
        assert usage(ctx, "pharmacie-du-port") == (30, 300 + 6 + 9)
    unknown_repo = server("recycle", "restore", "--tenant", "pharmacie-du-port", "--repo", "nope",
                          "--motive", "x")
    assert unknown_repo.code == 2 and "no repository named 'nope'" in unknown_repo.err

    # Lock objects are never restored, even without a filter.
    server.ok("recycle", "restore", "--tenant", "pharmacie-du-port", "--motive", "tout")
    with opened(server) as ctx:
        rows = object_rows(ctx, port)
        assert rows[old] is None and rows[elsewhere] is None and rows[lock] is not None
        assert usage(ctx, "pharmacie-du-port") == (300 + 30 + 9, 6)

        delete(ctx, port, old)
    purged = server.ok("recycle", "purge", "--tenant", "pharmacie-du-port", "--older-than", "0",
                       "--motive", "demande de la pharmacie")
    assert "2 objects (306 B) of pharmacie-du-port purged" in purged.out
    with opened(server) as ctx:
        rows = object_rows(ctx, port)
        assert old not in rows and lock not in rows and not stored(ctx, port, "comptoir", old)
        assert all(stored(ctx, port, "comptoir", n) for n in recent)
        assert usage(ctx, "pharmacie-du-port") == (39, 0)
        assert object_rows(ctx, other)[theirs] is not None and stored(ctx, other, "repo", theirs)  # untouched
        ops = [(e.operation, e.count, e.bytes, json.loads(e.detail).get("motive"))
               for e in journal(ctx, port) if e.operation.startswith("admin.recycle")]
        assert ops == [("admin.recycle.restore", 3, 30, "jeton de purge volé, ticket 77"),
                       ("admin.recycle.restore", 2, 309, "tout"),
                       ("admin.recycle.purge", 2, 306, "demande de la pharmacie")]
        assert chain_intact(ctx)
    empty = server.ok("recycle", "list", "--tenant", "pharmacie-du-port")
    assert "is empty" in empty.out


def test_purge_and_restore_survive_a_purge_cut_short(server: Server) -> None:
    with opened(server) as ctx:
        add_tenant(ctx, "pharmacie-du-port")
        port = tenant_id(ctx, "pharmacie-du-port")
        names = [put(ctx, port, "r", bytes([i]) * 100) for i in range(4)]
        for n in names:
            delete(ctx, port, n)
        # A purge removed two objects from storage, then the process died before their rows went.
        for n in names[:2]:
            ctx.store.backend(port, "r").remove(Handle("data", n))
    # A restore does not bring back an object whose bytes are gone: it completes the purge.
    res = server.ok("recycle", "restore", "--tenant", "pharmacie-du-port", "--motive", "test")
    assert "2 objects (200 B) of pharmacie-du-port restored" in res.out
    assert "2 binned objects were no longer stored" in res.out
    with opened(server) as ctx:
        assert set(object_rows(ctx, port)) == set(names[2:]) and usage(ctx, "pharmacie-du-port") == (200, 0)
        for n in names[2:]:
            delete(ctx, port, n)
        ctx.store.backend(port, "r").remove(Handle("data", names[2]))
    res = server.ok("recycle", "purge", "--tenant", "pharmacie-du-port", "--motive", "test")
    assert "2 objects (200 B) of pharmacie-du-port purged" in res.out
    with opened(server) as ctx:
        assert object_rows(ctx, port) == {} and usage(ctx, "pharmacie-du-port") == (0, 0)
        [entry] = [e for e in journal(ctx, port) if e.operation == "admin.recycle.purge"]
        assert json.loads(entry.detail)["already_gone"] == 1


def test_the_server_purges_the_bin_after_recycle_days_by_its_own_clock(tmp_path: Path) -> None:
    clock = FixedClock(T0)
    ctx = make_context(tmp_path / "srv", clock=clock, recycle_days=30)
    second = ServerContext(ctx.settings, ctx.db, ctx.store, clock)  # another instance, same database
    try:
        add_tenant(ctx, "a")
        add_tenant(ctx, "b")
        a, b = tenant_id(ctx, "a"), tenant_id(ctx, "b")
        first = [put(ctx, a, "r", bytes([i]) * 10) for i in range(3)]
        later = put(ctx, b, "r", b"later" * 10)
        for n in first:
            delete(ctx, a, n)
        clock.advance(10 * 86400)
        delete(ctx, b, later)

        clock.advance(20 * 86400 - 60)   # 30 days minus a minute after the first deletions
        bin.periodic(ctx, clock.now_ns())
        assert len(object_rows(ctx, a)) == 3

        clock.advance(120)
        threads = [threading.Thread(target=bin.periodic, args=(c, clock.now_ns())) for c in (ctx, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert object_rows(ctx, a) == {} and not any(stored(ctx, a, "r", n) for n in first)
        assert usage(ctx, "a") == (0, 0)  # counted down once, though two instances purged
        assert object_rows(ctx, b) == {later: T0 + 10 * DAY} and usage(ctx, "b") == (0, 50)
        entries = [e for e in journal(ctx, a) if e.operation == "bin.purge"]
        assert sum(e.count for e in entries) == 3 and sum(e.bytes for e in entries) == 30
        assert json.loads(entries[0].detail)["days"] == 30

        clock.advance(10 * 86400)
        # A tenant held read-only (an investigation) keeps its bin until it is active again.
        admin.set_state(ctx, admin.Actor(), "b", "read-only", "enquête")
        bin.periodic(second, clock.now_ns())
        assert object_rows(ctx, b) == {later: T0 + 10 * DAY}
        admin.set_state(ctx, admin.Actor(), "b", "active", None)
        bin.periodic(second, clock.now_ns())
        assert object_rows(ctx, b) == {} and usage(ctx, "b") == (0, 0)
        bin.periodic(ctx, clock.now_ns())  # nothing left: nothing journaled
        assert len([e for e in journal(ctx) if e.operation == "bin.purge"]) == len(entries) + 1
        assert chain_intact(ctx)
    finally:
        ctx.close()


def test_a_purge_racing_an_upload_of_the_same_bytes_is_reported(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "srv", recycle_days=0)
    try:
        add_tenant(ctx, "a")
        a = tenant_id(ctx, "a")
        name = put(ctx, a, "r", b"same bytes")
        delete(ctx, a, name)
        backend = ctx.store.backend(a, "r")
        real_remove = backend.remove

        def remove_then_upload(handle: Handle) -> None:
            real_remove(handle)
            o = tables.objects
            with ctx.db.begin() as conn:  # the upload's row, recorded after its bytes were saved
                conn.execute(o.update().where(o.c.name == name).values(binned_ns=None, binned_by=None))

        backend.remove = remove_then_upload  # type: ignore[method-assign]
        out = admin.recycle_purge(ctx, admin.Actor("", "test"), "a", "test")
        assert out["missing_after_upload"] == [f"data/{name}"] and out["objects"] == 0
        with ctx.db.read() as conn:
            [finding] = conn.execute(sa.select(tables.scrub_findings)).all()
        assert (finding.tenant_id, finding.name, finding.problem) == (a, name, "missing")
    finally:
        ctx.close()


def test_an_object_storage_refuses_to_remove_stays_in_the_bin(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "srv", recycle_days=0)
    try:
        add_tenant(ctx, "a")
        a = tenant_id(ctx, "a")
        names = [put(ctx, a, "r", bytes([i]) * 10) for i in range(2)]
        for n in names:
            delete(ctx, a, n)
        backend = ctx.store.backend(a, "r")
        real_remove = backend.remove

        def refuse_first(handle: Handle) -> None:
            if handle.name == names[0]:
                raise StorageError("removing data/...: permission denied")
            real_remove(handle)

        backend.remove = refuse_first  # type: ignore[method-assign]
        out = admin.recycle_purge(ctx, admin.Actor("", "test"), "a", "test")
        assert (out["objects"], out["failed"]) == (1, 1) and "permission denied" in out["failure"]
        assert set(object_rows(ctx, a)) == {names[0]} and usage(ctx, "a") == (0, 10)
        backend.remove = real_remove  # type: ignore[method-assign]
        bin.periodic(ctx, ctx.clock.now_ns())  # tried again at the next purge
        assert object_rows(ctx, a) == {} and usage(ctx, "a") == (0, 0)
    finally:
        ctx.close()


# --------------------------------------------------------------------------- admin API


def api(ctx: ServerContext) -> Starlette:
    async def refusal(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, Refusal)
        return refusal_response(exc)

    return Starlette(routes=admin_api.routes(ctx), exception_handlers={Refusal: refusal})


@pytest.fixture
def admin_http(tmp_path: Path) -> Iterator[tuple[ServerContext, str, urllib3.PoolManager]]:
    ctx = make_context(tmp_path / "srv", clock=FixedClock(T0))
    try:
        with serving(api(ctx)) as base:
            yield ctx, base, urllib3.PoolManager(retries=False)
    finally:
        ctx.close()


def call(http: urllib3.PoolManager, method: str, url: str, token: str | None, body: Any = None,
         **headers: str) -> tuple[int, Any]:
    h = dict(headers)
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        h["Content-Type"] = "application/json"
    r = http.request(method, url, body=data, headers=h)
    return r.status, json.loads(r.data) if r.data else None


def test_admin_api_serves_admin_tokens_only(
        admin_http: tuple[ServerContext, str, urllib3.PoolManager]) -> None:
    ctx, base, http = admin_http
    root = admin_token(ctx)
    pharmacy = add_tenant(ctx, "pharmacie-du-port")
    v1 = base + "/v1/admin"

    assert call(http, "GET", v1 + "/tenants", None)[0] == 401
    assert call(http, "GET", v1 + "/tenants", root[:-2] + "xx")[0] == 401
    for role, token in pharmacy.items():
        for method, path in (("GET", "/tenants"), ("POST", "/tenants"), ("GET", "/tokens"),
                             ("POST", "/recycle/pharmacie-du-port/purge")):
            status, doc = call(http, method, v1 + path, token, {"name": "x", "motive": "m"})
            assert (status, doc["error"]) == (403, "forbidden"), (role, path)
    refusals = [e for e in journal(ctx, tenant_id(ctx, "pharmacie-du-port")) if e.outcome == "forbidden"]
    assert len(refusals) == 12
    assert {e.operation for e in refusals} >= {"admin.tenant.list", "admin.recycle.purge"}

    status, doc = call(http, "POST", v1 + "/tenants", root, {"name": "officine", "display_name": "Officine",
                                                             "quota_soft": "1GiB", "quota_hard": 2 * 2**30})
    assert status == 201 and doc["quota"] == {"soft": 2**30, "hard": 2 * 2**30, "state": "ok"}
    assert call(http, "POST", v1 + "/tenants", root, {"name": "officine"})[0] == 409
    assert call(http, "POST", v1 + "/tenants", root, {"name": "Bad Name"})[0] == 400
    assert call(http, "POST", v1 + "/tenants", root, [1, 2])[0] == 400
    status, doc = call(http, "GET", v1 + "/tenants", root)
    assert status == 200 and [t["name"] for t in doc["tenants"]] == ["officine", "pharmacie-du-port"]
    assert call(http, "GET", v1 + "/tenants/nobody", root)[0] == 404

    status, doc = call(http, "POST", v1 + "/tenants/officine/state", root, {"state": "disabled"})
    assert (status, doc["error"]) == (400, "bad_request") and "motive" in doc["message"]
    status, doc = call(http, "POST", v1 + "/tenants/officine/state", root, {"state": "read-only"},
                       **{"X-Coffre-Motive": "audit HDS"})
    assert status == 200 and doc == {"tenant": "officine", "state": "read-only", "previous": "active"}
    status, doc = call(http, "POST", v1 + "/tenants/officine/quota", root, {"soft": None})
    assert status == 200 and doc["quota"]["soft"] is None and doc["quota"]["hard"] == 2 * 2**30

    status, doc = call(http, "POST", v1 + "/tokens", root, {"tenant": "officine", "role": "backup",
                                                            "label": "comptoir"})
    assert status == 201 and TOKEN.fullmatch(doc["secret"]) and doc["token"]["role"] == "backup"
    secret, ident = doc["secret"], doc["token"]["id"]
    assert authenticate(ctx, secret).tenant_name == "officine"
    status, doc = call(http, "GET", v1 + "/tokens?tenant=officine", root)
    assert status == 200 and [t["id"] for t in doc["tokens"]] == [ident]
    assert secret.split("_", 2)[2] not in json.dumps(doc)
    assert call(http, "POST", v1 + f"/tokens/{ident}/revoke", root, {})[0] == 400
    status, doc = call(http, "POST", v1 + f"/tokens/{ident}/revoke", root, {"motive": "poste volé"})
    assert status == 200 and doc["state"] == "revoked" and refused(ctx, secret) == "revoked"
    assert call(http, "POST", v1 + "/tokens/zzzzzzzzzzzzzzzz/revoke", root, {"motive": "x"})[0] == 404
    status, doc = call(http, "POST", v1 + "/tokens", root, {"admin": True})
    assert status == 201 and doc["token"]["tenant"] is None

    port = tenant_id(ctx, "pharmacie-du-port")
    name = put(ctx, port, "comptoir", b"x" * 64)
    delete(ctx, port, name)
    status, doc = call(http, "GET", v1 + "/recycle?tenant=pharmacie-du-port", root)
    assert status == 200 and [o["name"] for o in doc["objects"]] == [name]
    assert doc["objects"][0]["purge_due_ns"] == T0 + 30 * DAY
    status, doc = call(http, "POST", v1 + "/recycle/pharmacie-du-port/restore", root,
                       {"motive": "annulation"})
    assert status == 200 and (doc["objects"], doc["bytes"]) == (1, 64)
    delete(ctx, port, name)
    status, doc = call(http, "POST", v1 + "/recycle/pharmacie-du-port/purge", root,
                       {"motive": "demande", "older_than_days": 0})
    assert status == 200 and (doc["objects"], doc["bytes"]) == (1, 64)
    assert call(http, "POST", v1 + "/recycle/pharmacie-du-port/purge", root,
                {"motive": "x", "older_than_days": "old"})[0] == 400
    status, doc = call(http, "GET", v1 + "/tenants/pharmacie-du-port", root)
    assert status == 200 and doc["repositories"][0]["objects"] == 0 and doc["binned_bytes"] == 0
    status, doc = call(http, "GET", v1 + "/usage", root)
    assert status == 200 and doc["month"] == audit.day_of(T0)[:7]
    assert [t["tenant"] for t in doc["tenants"]] == ["officine", "pharmacie-du-port"]
    assert call(http, "GET", v1 + "/usage?month=2026-13", root)[0] == 400

    # Every change journaled, with the admin token's id and the client's address; never the secret.
    ctx.tally.flush(ctx.db, ctx.clock.now_ns())
    root_id = tokens.token_id_of(root)
    changes = [e for e in journal(ctx) if e.operation.startswith("admin.") and e.token_id == root_id]
    ops = {e.operation for e in changes}
    assert {"admin.tenant.add", "admin.tenant.state", "admin.tenant.quota", "admin.token.add",
            "admin.token.revoke", "admin.recycle.restore", "admin.recycle.purge", "admin.tenant.list",
            "admin.recycle.list", "admin.usage"} <= ops
    assert {e.client for e in changes} == {"127.0.0.1"}
    assert all(secret.split("_", 2)[2] not in e.detail for e in journal(ctx))
    assert chain_intact(ctx)


# --------------------------------------------------------------------------- install


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def fake_systemctl(tmp_path: Path) -> tuple[dict[str, str], Path]:
    bindir, log = tmp_path / "fakebin", tmp_path / "systemctl.log"
    bindir.mkdir(exist_ok=True)
    script = bindir / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexit 0\n')
    script.chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}, log


@pytest.mark.skipif(os.geteuid() != 0, reason="installing a service needs root")
def test_install_writes_a_hardened_unit_run_by_its_own_account(server: Server, tmp_path: Path) -> None:
    units, env_file = tmp_path / "units", tmp_path / "etc" / "server.env"
    env, log = fake_systemctl(tmp_path)
    res = server.ok("install", "--user", "nobody", "--unit-dir", str(units), "--env-file", str(env_file),
                    env=env)
    assert f"installed: {units / UNIT}" in res.out and "the server is running" in res.out
    assert log.read_text().splitlines() == ["daemon-reload", f"enable --now {UNIT}"]
    unit = units / UNIT
    s = unit_settings(unit.read_text())
    [exec_start] = s["ExecStart"]
    words = exec_start.split()
    assert Path(words[0]).is_absolute() and os.access(words[0], os.X_OK)
    assert words[-4:] == ["server", "--data", str(server.data), "$COFFRE_SERVER_OPTIONS"]
    assert s["User"] == ["nobody"] and s["EnvironmentFile"] == [f"-{env_file}"]
    assert s["ProtectSystem"] == ["strict"] and s["ReadWritePaths"] == [str(server.data)]
    assert s["NoNewPrivileges"] == ["yes"] and s["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert s["UMask"] == ["0077"] and s["Restart"] == ["on-failure"]
    assert unit.stat().st_mode & 0o777 == 0o644
    assert env_file.stat().st_mode & 0o777 == 0o600 and "COFFRE_SERVER_DB" in env_file.read_text()
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True, check=True).stdout)
    assert {p.stat().st_uid for p in [server.data, *server.data.rglob("*")]} == {nobody}
    tool = shutil.which("systemd-analyze")
    if tool is not None:
        done = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                              timeout=60, check=False)
        bad = [line for line in (done.stdout + done.stderr).splitlines()
               if any(w in line for w in ("Unknown key", "Unknown section", "Invalid", "Failed to parse",
                                          "not executable", "Missing"))]
        assert not bad, bad

    env_file.write_text("COFFRE_SERVER_DB=postgresql://kept\n")
    again = server.ok("install", "--user", "nobody", "--unit-dir", str(units), "--env-file", str(env_file),
                      "--no-enable")
    assert "(kept)" in again.out and env_file.read_text() == "COFFRE_SERVER_DB=postgresql://kept\n"

    gone = server.ok("uninstall", "--unit-dir", str(units), env=env)
    assert str(unit) in gone.out and not unit.exists()
    assert log.read_text().splitlines()[-2:] == [f"disable --now {UNIT}", "daemon-reload"]
    assert server("uninstall", "--unit-dir", str(units), "--no-enable").code == 1


def test_install_needs_root(coffre: Coffre, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                *coffre.argv("server", "--data", str(tmp_path / "srv"), "install", "--unit-dir",
                             str(tmp_path / "units"), "--no-enable", repo=False)]
    else:
        argv = coffre.argv("server", "--data", str(tmp_path / "srv"), "install", "--no-enable", repo=False)
    env = {**coffre.env, "COFFRE_CACHE_DIR": "/tmp", "COFFRE_STATE_DIR": "/tmp"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd="/", timeout=60, check=False)
    assert done.returncode == 1, done
    assert "needs root" in done.stderr and "sudo" in done.stderr
    assert not (tmp_path / "units").exists()
