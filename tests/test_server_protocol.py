"""The object protocol, route by route, against the real application served by uvicorn on
127.0.0.1 (with the product's HTTP protocol class and limits), with an injected clock: roles,
tenants that cannot see each other, bad tokens, hostile names, oversized and slow bodies,
quotas, and the audit journal of every refusal."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import urllib3

from coffre.core.clock import FixedClock
from coffre.server import tokens
from coffre.server.app import create_app
from coffre.server.context import ServerContext
from coffre.server.db import tables
from coffre.server.serve import Protocol
from server_support import T0, add_tenant, admin_token, make_context, serving


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Answer:
    status: int
    body: bytes
    headers: Any

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str | None:
        try:
            return str(self.json.get("error"))
        except ValueError:
            return None


class API:
    def __init__(self, ctx: ServerContext, url: str) -> None:
        self.ctx, self.url = ctx, url
        self.http = urllib3.PoolManager(retries=False, timeout=30)
        self.port = int(url.rsplit(":", 1)[1])
        self.a = add_tenant(ctx, "pharmacie-a", quota_soft=3_000, quota_hard=5_000)
        self.b = add_tenant(ctx, "pharmacie-b")
        self.admin = admin_token(ctx)

    def call(self, method: str, path: str, token: str | None, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> Answer:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        r = self.http.request(method, self.url + path, body=body, headers=h, redirect=False)
        return Answer(r.status, r.data, r.headers)

    def put(self, token: str, repo: str, kind: str, data: bytes, name: str | None = None) -> Answer:
        return self.call("PUT", f"/v1/repos/{repo}/{kind}/{name or sha(data)}", token, data)

    def journal(self, tenant_id: int | None = None) -> list[Any]:
        self.ctx.tally.flush(self.ctx.db, self.ctx.clock.now_ns())  # reads and refused tokens
        a = tables.audit_entries
        q = sa.select(a).order_by(a.c.tenant_id, a.c.seq)
        if tenant_id is not None:
            q = q.where(a.c.tenant_id == tenant_id)
        with self.ctx.db.read() as conn:
            return list(conn.execute(q))

    def tenant(self, name: str) -> Any:
        t = tables.tenants
        with self.ctx.db.read() as conn:
            return conn.execute(sa.select(t).where(t.c.name == name)).one()

    def row(self, kind: str, name: str) -> Any:
        o = tables.objects
        with self.ctx.db.read() as conn:
            return conn.execute(sa.select(o).where(o.c.kind == kind, o.c.name == name)).first()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[API]:
    ctx = make_context(tmp_path / "server", clock=FixedClock(T0), max_object_bytes=100_000,
                       body_grace_s=0.5, min_upload_rate=100_000)
    protocol = type("Protocol", (Protocol,), {"header_timeout": 1.0})
    with serving(create_app(ctx), http=protocol) as url:
        yield API(ctx, url)
    ctx.close()


def test_every_route_of_a_repository(api: API) -> None:
    tok = api.a["backup"]
    assert api.call("POST", "/v1/repos/main", tok).status == 201
    assert api.call("POST", "/v1/repos/main", tok).status == 201  # empty still: idempotent
    config = b'{"repository": "config"}'
    assert api.put(tok, "main", "config", config, "config").status == 201
    assert api.put(tok, "main", "config", config, "config").status == 200  # same bytes
    assert api.put(tok, "main", "config", b"{other}", "config").error == "exists"
    assert api.call("POST", "/v1/repos/main", tok).error == "exists"  # not empty any more

    data = b"pharmacy pack" * 100
    put = api.put(tok, "main", "data", data)
    assert put.status == 201 and put.headers["X-Coffre-Received-Ns"] == str(T0)
    assert api.put(tok, "main", "data", data).status == 200  # idempotent retry
    got = api.call("GET", f"/v1/repos/main/data/{sha(data)}", tok)
    assert (got.status, got.body, got.headers["X-Coffre-Received-Ns"]) == (200, data, str(T0))
    part = api.call("GET", f"/v1/repos/main/data/{sha(data)}", tok, headers={"Range": "bytes=13-25"})
    assert (part.status, part.body) == (206, data[13:26])
    assert part.headers["Content-Range"] == f"bytes 13-25/{len(data)}"
    tail = api.call("GET", f"/v1/repos/main/data/{sha(data)}", tok, headers={"Range": "bytes=1290-"})
    assert (tail.status, tail.body) == (206, data[1290:])
    past = api.call("GET", f"/v1/repos/main/data/{sha(data)}", tok, headers={"Range": "bytes=1300-1400"})
    assert past.status == 416
    head = api.call("HEAD", f"/v1/repos/main/data/{sha(data)}", tok)
    assert (head.status, head.headers["Content-Length"], head.body) == (200, str(len(data)), b"")
    listed = api.call("GET", "/v1/repos/main/data/", tok)
    assert listed.json == {"objects": [[sha(data), len(data), T0]]}
    assert api.call("GET", "/v1/repos/main/config/", tok).json == {"objects": [["config", len(config), T0]]}
    who = api.call("GET", "/v1/whoami", tok).json
    assert who["tenant"] == "pharmacie-a" and who["role"] == "backup"
    assert who["quota"] == {"soft": 3_000, "hard": 5_000, "stored": len(config) + len(data), "binned": 0}

    # Deleted by prune: into the recycle bin, invisible, its bytes still counted (binned).
    assert api.call("DELETE", f"/v1/repos/main/data/{sha(data)}", api.a["prune"]).status == 204
    assert api.call("GET", f"/v1/repos/main/data/{sha(data)}", tok).error == "not_found"
    assert api.call("HEAD", f"/v1/repos/main/data/{sha(data)}", tok).status == 404
    assert api.call("DELETE", f"/v1/repos/main/data/{sha(data)}", api.a["prune"]).status == 404
    assert api.call("GET", "/v1/repos/main/data/", tok).json == {"objects": []}
    row = api.row("data", sha(data))
    assert row.binned_ns == T0 and row.binned_by == tokens.token_id_of(api.a["prune"])
    t = api.tenant("pharmacie-a")
    assert (t.stored_bytes, t.binned_bytes) == (len(config), len(data))
    assert (Path(api.ctx.store.location) / f"t{t.id}/main/data/{sha(data)[:2]}/{sha(data)}").exists()
    # Uploaded again: out of the bin.
    assert api.put(tok, "main", "data", data).status == 201
    assert api.call("GET", f"/v1/repos/main/data/{sha(data)}", tok).body == data
    t = api.tenant("pharmacie-a")
    assert (t.stored_bytes, t.binned_bytes) == (len(config) + len(data), 0)
    assert api.row("data", sha(data)).binned_ns is None

    # Every write was journaled in the tenant's chain, in order; reads at the tally's flush.
    ops = [(e.operation, e.outcome) for e in api.journal(t.id)]
    assert ops[:3] == [("create", "ok"), ("create", "ok"), ("put", "ok")]
    assert ("put", "exists") in ops and ("create", "exists") in ops and ("delete", "not_found") in ops
    assert ("delete", "ok") in ops
    api.ctx.tally.flush(api.ctx.db, T0)
    reads = {(e.operation, e.outcome): (e.count, e.bytes) for e in api.journal(t.id) if e.operation == "get"}
    assert reads[("get", "ok")] == (5, len(data) * 2 + 13 + 10)  # the 416 too, 0 bytes
    assert reads[("get", "not_found")] == (1, 0)


def test_roles(api: API) -> None:
    backup, prune, read = api.a["backup"], api.a["prune"], api.a["read"]
    api.call("POST", "/v1/repos/main", backup)
    data = b"history"
    api.put(backup, "main", "snapshots", data)
    # backup never deletes nor overwrites; read never writes; both still read.
    assert api.call("DELETE", f"/v1/repos/main/snapshots/{sha(data)}", backup).error == "forbidden"
    assert api.put(read, "main", "data", b"new").error == "forbidden"
    assert api.call("POST", "/v1/repos/other", read).error == "forbidden"
    assert api.call("GET", f"/v1/repos/main/snapshots/{sha(data)}", read).body == data
    assert api.call("DELETE", "/v1/repos/main/config/config", prune).error == "forbidden"
    assert api.row("snapshots", sha(data)).binned_ns is None

    # Locks: written by backup and read tokens, removed only by their writer (or prune).
    with api.ctx.db.begin() as conn:
        other_backup = tokens.issue(conn, api.tenant("pharmacie-a").id, "backup", "second", T0)[1]
    mine, reader_lock = b"lock of backup", b"lock of read"
    assert api.put(backup, "main", "locks", mine).status == 201
    assert api.put(read, "main", "locks", reader_lock).status == 201
    assert api.call("DELETE", f"/v1/repos/main/locks/{sha(mine)}", other_backup).error == "forbidden"
    assert api.call("DELETE", f"/v1/repos/main/locks/{sha(mine)}", read).error == "forbidden"
    assert api.call("DELETE", f"/v1/repos/main/locks/{sha(mine)}", backup).status == 204
    assert api.row("locks", sha(mine)) is None  # removed for good, not binned
    assert api.call("DELETE", f"/v1/repos/main/locks/{sha(reader_lock)}", prune).status == 204
    t = api.tenant("pharmacie-a")
    assert (t.stored_bytes, t.binned_bytes) == (len(data), 0)
    assert not list((Path(api.ctx.store.location) / f"t{t.id}" / "main" / "locks").iterdir())

    # Prune deletes into the bin; the provider's admin, with a motive, may remove config.
    assert api.call("DELETE", f"/v1/repos/main/snapshots/{sha(data)}", prune).status == 204
    api.put(backup, "main", "config", b"{}", "config")
    admin_path = "/v1/admin/tenants/pharmacie-a/repos/main/config/config"
    assert api.call("DELETE", admin_path, api.admin).error == "bad_request"  # no motive
    assert api.call("DELETE", admin_path, api.admin, headers={"X-Coffre-Motive": "ticket 4521"}).status == 204
    journal = api.journal(t.id)
    assert [(e.operation, e.outcome) for e in journal if e.operation.startswith("admin.")] == [
        ("admin.delete", "ok")]
    assert "ticket 4521" in next(e.detail for e in journal if e.operation == "admin.delete")
    assert [e.outcome for e in journal if e.outcome == "forbidden"] == ["forbidden"] * 6


def test_admin_reads_need_a_motive_and_are_journaled_with_it(api: API) -> None:
    api.call("POST", "/v1/repos/main", api.a["backup"])
    data = b"prescriptions"
    api.put(api.a["backup"], "main", "data", data)
    base = "/v1/admin/tenants/pharmacie-a/repos/main/data/"
    motive = {"X-Coffre-Motive": "restore requested by the pharmacist, call 2026-11-30"}
    assert api.call("GET", base + sha(data), api.admin).error == "bad_request"
    assert api.call("GET", base + sha(data), api.admin, headers=motive).body == data
    assert api.call("GET", base, api.admin, headers=motive).json["objects"][0][0] == sha(data)
    assert api.call("PUT", base + sha(data), api.admin, data, headers=motive).error == "forbidden"
    # Tenant tokens never use the admin routes; admin tokens never the tenant ones.
    assert api.call("GET", base + sha(data), api.a["prune"], headers=motive).error == "forbidden"
    assert api.call("GET", f"/v1/repos/main/data/{sha(data)}", api.admin).error == "forbidden"
    assert api.call("GET", "/v1/admin/tenants/nobody/repos/main/data/", api.admin,
                    headers=motive).error == "not_found"
    entries = [e for e in api.journal(api.tenant("pharmacie-a").id) if e.operation.startswith("admin.")]
    assert [(e.operation, e.outcome, e.bytes) for e in entries] == [
        ("admin.get", "ok", len(data)), ("admin.list", "ok", 0), ("admin.put", "forbidden", 0),
        ("admin.get", "forbidden", 0)]  # the tenant's own token, on the admin route
    assert all("call 2026-11-30" in e.detail for e in entries if e.token_id == tokens.token_id_of(api.admin))


def test_another_tenants_objects_answer_exactly_like_absent_ones(api: API) -> None:
    a, b = api.a["backup"], api.b["prune"]
    api.call("POST", "/v1/repos/main", a)
    data = b"patient records"
    api.put(a, "main", "data", data)
    api.put(a, "main", "config", b"{}", "config")
    absent = sha(b"never stored")

    def seen_by_b(name: str) -> list[tuple[int, bytes]]:
        out = []
        for method, path, body in [
            ("GET", f"/v1/repos/main/data/{name}", None),
            ("HEAD", f"/v1/repos/main/data/{name}", None),
            ("DELETE", f"/v1/repos/main/data/{name}", None),
            ("PUT", f"/v1/repos/main/data/{name}", data if name == sha(data) else b"never stored"),
            ("GET", "/v1/repos/main/data/", None),
            ("GET", "/v1/repos/main/config/config", None),
            ("GET", "/v1/repos/main/config/", None),
        ]:
            r = api.call(method, path, b, body)
            out.append((r.status, r.body))
        return out

    answers = seen_by_b(sha(data))
    assert answers == seen_by_b(absent)
    assert {status for status, _ in answers} == {404}
    # B's own repository of the same name is a different one: empty.
    assert api.call("POST", "/v1/repos/main", b).status == 201
    assert api.call("GET", "/v1/repos/main/data/", b).json == {"objects": []}
    assert api.call("GET", f"/v1/repos/main/data/{sha(data)}", b).status == 404
    assert api.call("GET", f"/v1/repos/main/data/{sha(data)}", a).body == data
    # The admin routes tell a tenant's token nothing either.
    for tenant in ("pharmacie-a", "pharmacie-b", "nobody"):
        r = api.call("GET", f"/v1/admin/tenants/{tenant}/repos/main/data/", b,
                     headers={"X-Coffre-Motive": "xyz"})
        assert (r.status, r.error) == (403, "forbidden")


def test_wrong_revoked_expired_and_malformed_tokens(api: API, caplog: pytest.LogCaptureFixture) -> None:
    api.call("POST", "/v1/repos/main", api.a["backup"])
    tid = api.tenant("pharmacie-a").id
    with api.ctx.db.begin() as conn:
        revoked = tokens.issue(conn, tid, "backup", "revoked", T0)[1]
        tokens.revoke(conn, tokens.token_id_of(revoked), T0)
        expired = tokens.issue(conn, tid, "backup", "expired", T0 - 10, expires_ns=T0 - 1)[1]
    good = api.a["backup"]
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")  # right id, wrong secret
    path = f"/v1/repos/main/data/{sha(b'x')}"
    answers = set()
    for token in (None, "", "cft_short", "Basic dXNlcjpwYXNz", forged, revoked, expired):
        r = api.call("GET", path, token) if token != "Basic dXNlcjpwYXNz" else api.call(
            "GET", path, None, headers={"Authorization": token})
        answers.add((r.status, r.body, r.headers.get("WWW-Authenticate")))
    assert answers == {(401, b'{"error":"unauthorized","message":"a valid bearer token is required"}',
                        'Bearer realm="coffre"')}
    with api.ctx.db.begin() as conn:
        conn.execute(tables.tenants.update().where(tables.tenants.c.id == tid).values(state="disabled"))
    assert api.call("GET", path, good).status == 401
    outcomes = [e.outcome for e in api.journal(tid) if e.outcome.startswith("unauthorized")]
    assert sorted(outcomes) == ["unauthorized:disabled", "unauthorized:expired", "unauthorized:revoked"]
    provider: dict[str, int] = {}  # no tenant known: the provider's chain (refusals are counted)
    for e in api.journal(0):
        provider[e.outcome] = provider.get(e.outcome, 0) + e.count
    assert provider["unauthorized:missing"] == 1 and provider["unauthorized:malformed"] == 3
    assert provider["unauthorized:unknown"] == 1
    # Read-only tenant: reads only.
    with api.ctx.db.begin() as conn:
        conn.execute(tables.tenants.update().where(tables.tenants.c.id == tid).values(state="read-only"))
    assert api.put(good, "main", "data", b"x").error == "read_only"
    assert api.call("GET", path, good).status == 404
    # The request log names token ids, never a token.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (good, revoked, expired, forged):
        assert secret.split("_", 2)[2] not in logged


def raw(api: API, request: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are (no client normalizing the path) and read the answer (the
    request asks the server to close the connection after it)."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=timeout) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_hostile_names_are_refused_and_journaled(api: API) -> None:
    tok = api.a["backup"]
    api.call("POST", "/v1/repos/main", tok)
    auth = f"Authorization: Bearer {tok}\r\n".encode()
    for path in [b"/v1/repos/main/data/..", b"/v1/repos/main/data/..%2F..%2F..%2Fetc%2Fpasswd",
                 b"/v1/repos/main/data/%2E%2E", b"/v1/repos/../data/" + sha(b"x").encode(),
                 b"/v1/repos/main/data/" + sha(b"x").upper().encode(), b"/v1/repos/main/nope/" + b"0" * 64,
                 b"/v1/repos/main/data/" + b"0" * 63 + b"%00", b"/v1/repos/MAIN/data/" + b"0" * 64,
                 b"/v1/repos/main/config/..%5Cconfig", b"/v1/repos/.hidden/config/config"]:
        answer = raw(api, b"PUT " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth
                     + b"Content-Length: 1\r\n\r\nx")
        assert answer.startswith(b"HTTP/1.1 "), (path, answer)
        status = int(answer.split(b" ", 2)[1])
        assert status in (400, 404), (path, answer)
        assert b'"error":"bad_request"' in answer or b'"error":"not_found"' in answer, answer
    refusals = [e for e in api.journal(api.tenant("pharmacie-a").id) if e.outcome != "ok"]
    assert len(refusals) == 10
    stored = {p.relative_to(api.ctx.store.location) for p in Path(api.ctx.store.location).rglob("*")
              if p.is_file()}
    assert stored == set()
    assert not (Path(api.ctx.settings.data_dir) / "etc").exists()


def test_bodies_too_large_without_length_or_not_matching_their_name(api: API) -> None:
    tok = api.a["backup"]
    api.call("POST", "/v1/repos/main", tok)
    big = b"x" * 100_001
    r = api.put(tok, "main", "data", big)
    assert (r.status, r.error, r.headers.get("Connection")) == (413, "too_large", "close")
    r = api.call("PUT", f"/v1/repos/main/data/{sha(b'abc')}", tok, body=iter([b"a", b"bc"]))
    assert (r.status, r.error) == (411, "length_required")
    r = api.put(tok, "main", "data", b"altered on the way", name=sha(b"what was sent"))
    assert (r.status, r.error) == (400, "hash_mismatch")
    assert api.row("data", sha(b"what was sent")) is None
    assert not list(Path(api.ctx.store.location).rglob(sha(b"what was sent")))
    outcomes = [e.outcome for e in api.journal(api.tenant("pharmacie-a").id)]
    assert {"too_large", "length_required", "hash_mismatch"} <= set(outcomes)


def test_quotas(api: API, monkeypatch: pytest.MonkeyPatch) -> None:
    tok = api.a["backup"]  # soft 3 000, hard 5 000
    api.call("POST", "/v1/repos/main", tok)
    first = b"1" * 2_500
    r = api.put(tok, "main", "data", first)
    assert r.status == 201 and "X-Coffre-Quota-Warning" not in r.headers
    second = b"2" * 1_000
    r = api.put(tok, "main", "data", second)
    assert r.headers["X-Coffre-Quota-Warning"] == "used=3500; stored=3500; binned=0; soft=3000; hard=5000"
    assert "X-Coffre-Quota-Warning" in api.call("GET", "/v1/repos/main/data/", tok).headers
    assert "X-Coffre-Quota-Warning" not in api.call("GET", "/v1/repos/main/data/", api.b["backup"]).headers
    # Over the hard quota, told before the body is read.
    third = b"3" * 2_000
    r = api.put(tok, "main", "data", third)
    assert (r.status, r.error) == (507, "quota_exceeded")
    assert (r.json["quota_hard"], r.json["used"], r.json["size"]) == (5_000, 3_500, 2_000)
    assert "hard quota of tenant pharmacie-a" in r.json["message"] and "5000 bytes" in r.json["message"]
    # The bin counts: deleting frees nothing until purged.
    api.call("DELETE", f"/v1/repos/main/data/{sha(first)}", api.a["prune"])
    assert api.put(tok, "main", "data", third).error == "quota_exceeded"
    # And the recording transaction checks again (were the reservation to let one through):
    # refused, nothing recorded.
    from coffre.server import quota

    monkeypatch.setattr(quota, "reserve", lambda *a, **k: (None, quota.Usage(0, 0, None, None)))
    r = api.put(tok, "main", "data", third)
    assert (r.status, r.error) == (507, "quota_exceeded")
    assert api.row("data", sha(third)) is None
    assert api.call("GET", f"/v1/repos/main/data/{sha(third)}", tok).status == 404
    t = api.tenant("pharmacie-a")
    assert (t.stored_bytes, t.binned_bytes) == (1_000, 2_500)
    assert [e.outcome for e in api.journal(t.id)].count("quota_exceeded") == 3


def test_slow_clients_are_cut_while_others_are_served(api: API) -> None:
    """Slowloris: connections trickling their headers, and uploads trickling their bodies.
    The server cuts both (headers after 1 s, bodies slower than 100 kB/s after a 0.5 s grace:
    the limits of this test's server) and answers a normal client quickly meanwhile."""
    tok = api.b["backup"]
    api.call("POST", "/v1/repos/main", tok)
    cut: list[float] = []
    slow_answers: list[bytes] = []

    def trickle_headers() -> None:
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as s:
            started = time.monotonic()
            for byte in b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.1)  # the slow client's pace: 10 bytes/s
                try:
                    if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                        break  # closed by the server
                except BlockingIOError:
                    continue
                except OSError:
                    break
            else:
                return  # never cut
            cut.append(time.monotonic() - started)

    def trickle_body(i: int) -> None:
        body = bytes([i]) * 50_000
        head = (f"PUT /v1/repos/main/data/{sha(body)} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as s:
            s.sendall(head)
            answer = b""
            for k in range(0, len(body), 100):
                try:
                    s.sendall(body[k:k + 100])
                except OSError:
                    break
                time.sleep(0.05)  # 2 kB/s
                try:
                    answer += s.recv(4096, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                if answer:
                    break
            while chunk := s.recv(4096):  # the rest, until the server closes
                answer += chunk
            slow_answers.append(answer)

    threads = [threading.Thread(target=trickle_headers) for _ in range(4)]
    threads += [threading.Thread(target=trickle_body, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    # Meanwhile a normal client is served at once, again and again.
    started = time.monotonic()
    served = []
    while any(t.is_alive() for t in threads) and time.monotonic() - started < 20:
        t0 = time.monotonic()
        data = f"normal {len(served)}".encode()
        assert api.put(tok, "main", "data", data).status == 201
        served.append(time.monotonic() - t0)
    for t in threads:
        t.join(30)
    assert len(served) > 3 and max(served) < 0.5, served
    assert len(cut) == 4 and all(0.9 <= c < 5 for c in cut), cut
    assert len(slow_answers) == 3
    for a in slow_answers:
        assert a.startswith(b"HTTP/1.1 408 ") and b'"error":"timeout"' in a, a
    assert [e.outcome for e in api.journal(api.tenant("pharmacie-b").id)].count("timeout") == 3


def test_memory_for_bodies_in_flight_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from coffre.server import objects_api

    monkeypatch.setattr(objects_api, "WAIT_FOR_MEMORY_S", 0.5)
    ctx = make_context(tmp_path / "server", clock=FixedClock(T0), max_inflight_bytes=10_000,
                       body_grace_s=30, min_upload_rate=1)
    app = create_app(ctx)
    with serving(app) as url:
        api = API(ctx, url)
        tok = api.b["backup"]
        api.call("POST", "/v1/repos/main", tok)
        held = b"h" * 8_000
        with socket.create_connection(("127.0.0.1", api.port), timeout=10) as s:
            s.sendall((f"PUT /v1/repos/main/data/{sha(held)} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                       f"{tok}\r\nContent-Length: {len(held)}\r\n\r\n").encode() + held[:10])
            deadline = time.monotonic() + 10
            while app.state.objects.budget.used < 8_000:  # the first upload has its room
                assert time.monotonic() < deadline
                time.sleep(0.01)
            r = api.put(tok, "main", "data", b"w" * 5_000)
            assert (r.status, r.error) == (503, "unavailable")
            assert api.put(tok, "main", "data", b"small" * 100).status == 201  # room for that
            s.sendall(held[10:])
            assert s.recv(100).startswith(b"HTTP/1.1 201 ")
        assert api.put(tok, "main", "data", b"w" * 5_000).status == 201
    ctx.close()


def test_unknown_routes_and_methods(api: API) -> None:
    tok = api.a["backup"]
    assert api.call("GET", "/v1/nothing/here", tok).error == "not_found"
    assert api.call("GET", "/v1/nothing/here", None).error == "unauthorized"
    assert api.call("PATCH", f"/v1/repos/main/data/{sha(b'x')}", tok).status == 405
    assert api.call("GET", "/", tok).status == 404


# -- the client's side ---------------------------------------------------------------------
@pytest.mark.parametrize(("url", "display", "base"), [
    ("https://sauvegarde.example.fr/officine", "https://sauvegarde.example.fr/officine",
     "/v1/repos/officine"),
    ("https://h:8443/coffre/proxy/main.2", "https://h:8443/coffre/proxy/main.2",
     "/coffre/proxy/v1/repos/main.2"),
    ("http://127.0.0.1:8080/r", "http://127.0.0.1:8080/r", "/v1/repos/r"),
    ("https://[::1]:8443/r", "https://[::1]:8443/r", "/v1/repos/r"),
])
def test_server_urls(url: str, display: str, base: str) -> None:
    from coffre.storage.url import parse_server

    where = parse_server(url)
    assert (where.display, where.base) == (display, base)


@pytest.mark.parametrize(("url", "words"), [
    ("https://user:secret@host/repo", "credentials do not belong"),
    ("https://host", "no repository name"),
    ("https://host/Repo", "not a valid repository name"),
    ("https://host/a/../repo", "'..'"),
    ("https://host/repo?token=secret", "unexpected ?query"),
    ("http://host/repo", "plain HTTP sends the server token in clear"),
])
def test_bad_server_urls_are_refused(url: str, words: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from coffre.core.errors import UsageError
    from coffre.storage.url import open_backend

    monkeypatch.setenv("COFFRE_SERVER_TOKEN", "cft_aaaaaaaaaaaaaaaa_" + "b" * 43)
    with pytest.raises(UsageError) as info:
        open_backend(url)
    assert words in info.value.message
    assert "secret" not in info.value.message + (info.value.hint or "")


def test_the_token_comes_from_the_environment_or_a_private_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from coffre.core.errors import UsageError
    from coffre.storage.server import server_token

    token = "cft_aaaaaaaaaaaaaaaa_" + "S" * 43
    assert server_token({"COFFRE_SERVER_TOKEN": token}) == token
    f = tmp_path / "token"
    f.write_text(token + "\n")
    f.chmod(0o600)
    assert server_token({"COFFRE_SERVER_TOKEN_FILE": str(f)}) == token
    f.chmod(0o640)
    with pytest.raises(UsageError) as info:
        server_token({"COFFRE_SERVER_TOKEN_FILE": str(f)})
    assert "can be read by other users" in info.value.message and "chmod 600" in (info.value.hint or "")
    with pytest.raises(UsageError) as info:
        server_token({})
    assert "COFFRE_SERVER_TOKEN_FILE" in (info.value.hint or "")
    with pytest.raises(UsageError) as info:
        server_token({"COFFRE_SERVER_TOKEN": "cft_x\r\nX-Injected: 1"})
    assert "malformed" in info.value.message and "Injected" not in info.value.message


def test_the_client_maps_answers_to_storage_errors(api: API, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the client makes of the server's answers: never the token in a message."""
    import coffre.storage.server
    from coffre.core.errors import (
        ObjectNotFound,
        QuotaExceeded,
        StoragePermissionDenied,
        TransientStorageError,
    )
    from coffre.storage.base import Handle
    from coffre.storage.server import ServerBackend
    from coffre.storage.url import parse_server

    monkeypatch.setattr(coffre.storage.server, "_warned", False)
    where = parse_server(api.url + "/main")
    warnings: list[str] = []
    backup = ServerBackend(where, token=api.a["backup"], warn=warnings.append)
    backup.create()
    data = b"x" * 2_900
    backup.save(Handle("data", sha(data)), data)
    with pytest.raises(StoragePermissionDenied) as denied:
        backup.remove(Handle("data", sha(data)))
    assert "refused by the Coffre server" in denied.value.message
    with pytest.raises(ObjectNotFound):
        backup.load(Handle("data", sha(b"absent")))
    with pytest.raises(TransientStorageError) as altered:  # retried by storage/retry.py
        backup.save(Handle("data", sha(b"sent")), b"received")
    assert "altered" in altered.value.message
    with pytest.raises(QuotaExceeded) as over:
        backup.save(Handle("data", sha(b"y" * 3_000)), b"y" * 3_000)
    assert "hard quota of 4.88 KiB (5000 bytes) would be exceeded" in over.value.message
    assert warnings == []
    backup.save(Handle("index", sha(b"z" * 200)), b"z" * 200)  # past the soft quota
    list(backup.list("data"))
    assert warnings == ["the soft quota on the Coffre server is reached: 3.03 KiB used of 2.93 KiB; "
                        "uploads stop at the hard quota, 4.88 KiB"]  # once per process
    wrong = ServerBackend(where, token=api.a["backup"][:-3] + "xyz")
    with pytest.raises(StoragePermissionDenied) as refused:
        wrong.exists()
    text = f"{refused.value.message} {refused.value.hint}"
    assert "refused the token" in text and api.a["backup"].split("_", 2)[2][:10] not in text


def test_a_recorded_config_is_never_replaced_even_when_its_bytes_are_lost(api: API) -> None:
    # config is the one object not named by its hash: with its row recorded, only its very
    # bytes are accepted again, and not at all once storage lost them (nothing proves them).
    tok = api.a["backup"]
    api.call("POST", "/v1/repos/main", tok)
    config = b'{"repository": "first"}'
    assert api.put(tok, "main", "config", config, "config").status == 201
    assert api.put(tok, "main", "config", config, "config").status == 200
    stored = Path(api.ctx.store.location) / f"t{api.tenant('pharmacie-a').id}" / "main" / "config"
    stored.unlink()  # lost by the storage (the scrub reports it missing)
    other = b'{"repository": "other"}'
    assert api.put(tok, "main", "config", other, "config").error == "exists"
    assert api.put(tok, "main", "config", b"x" * len(config), "config").error == "exists"
    assert not stored.exists()
    assert api.row("config", "config").size == len(config)


def test_an_upload_refused_while_another_of_the_same_name_runs_is_journaled(api: API) -> None:
    tok = api.a["backup"]
    api.call("POST", "/v1/repos/main", tok)
    t = api.tenant("pharmacie-a")
    # Another upload's bytes, stored a moment ago and not recorded yet.
    (Path(api.ctx.store.location) / f"t{t.id}" / "main" / "config").write_bytes(b'{"other": 1}')
    assert api.put(tok, "main", "config", b'{"mine": 1}', "config").error == "unavailable"
    assert ("put", "unavailable") in [(e.operation, e.outcome) for e in api.journal(t.id)]


def test_uploads_racing_for_the_last_room_store_no_refused_byte(api: API, tmp_path: Path) -> None:
    """Ten uploads announced at once under a hard quota with room for five: five reserve the
    room before their bodies arrive, five are refused at once, and no refused byte ever
    reaches the storage (no debris that would fill the disk beyond every quota)."""
    tok = api.a["backup"]  # hard 5 000
    api.call("POST", "/v1/repos/main", tok)
    bodies = [bytes([65 + i]) * 1_000 for i in range(10)]
    socks = []
    for body in bodies:
        s = socket.create_connection(("127.0.0.1", api.port), timeout=10)
        s.sendall(f"PUT /v1/repos/main/locks/{sha(body)} HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {tok}\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        socks.append(s)
    deadline = time.monotonic() + 10  # every announcement settled before any body is sent
    while len(reservations(api)) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.bytes for r in reservations(api)] == [1_000] * 5
    for s, body in zip(socks, bodies, strict=True):
        try:
            s.sendall(body)
        except OSError:
            pass  # refused and closed already
    answers = []
    for s in socks:
        answers.append(s.recv(4096).split(b"\r\n", 1)[0])
        s.close()
    assert sorted(answers).count(b"HTTP/1.1 201 Created") == 5, answers
    assert answers.count(b"HTTP/1.1 507 Insufficient Storage") == 5, answers
    t = api.tenant("pharmacie-a")
    assert t.stored_bytes == 5_000
    stored = list((tmp_path / "server" / "objects" / f"t{t.id}" / "main" / "locks").iterdir())
    assert len(stored) == 5  # only the recorded ones
    assert reservations(api) == []


def reservations(api: API) -> list[Any]:
    with api.ctx.db.read() as conn:
        return list(conn.execute(sa.select(tables.quota_reservations)))


def test_s3_repositories_share_one_client_and_keep_their_own_prefix() -> None:
    """Hundreds of tenants on S3: one connection pool for all (a client per repository cost
    1.8 GiB of memory for 200 pharmacies), each repository under its own prefix."""
    from coffre.server.store import ObjectStore
    from coffre.storage.s3 import S3Backend

    store = ObjectStore("s3+http://127.0.0.1:8333/coffre-objects/prod")
    a, b = store.backend(1, "main"), store.backend(2, "main")
    assert isinstance(a, S3Backend) and isinstance(b, S3Backend)
    assert a.client is b.client
    assert (a.where.prefix, b.where.prefix) == ("prod/t1/main/", "prod/t2/main/")
    assert store.backend(1, "main") is a
    store.close()
