"""The audit journal: appends from several threads (SQLite, and PostgreSQL with two writers)
stay gapless and verify; every kind of tampering is detected and named; anchors catch what the
chain alone cannot; retention bounds the journal and keeps it verifiable; an export is
re-verified by an independent checker written here in a few lines; the CLI's verify and export."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from coffre.core.clock import FixedClock
from coffre.server import audit
from coffre.server.context import ServerContext
from coffre.server.db import tables
from server_support import T0, add_tenant, make_context

DAY_S = 86_400
E = tables.audit_entries
H = tables.audit_heads
A = tables.audit_anchors


def tenant_id(ctx: ServerContext, name: str) -> int:
    with ctx.db.read() as conn:
        t = tables.tenants
        return int(conn.execute(sa.select(t.c.id).where(t.c.name == name)).scalar_one())


def append(ctx: ServerContext, tenant: int, n: int, **fields: Any) -> None:
    """n entries, each in its own transaction, the clock moving a second between them."""
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    for i in range(n):
        entry = audit.Entry(tenant, fields.get("operation", "put"), fields.get("outcome", "ok"),
                            "tok" + str(i % 3), "192.0.2.7", "data", 1, 1000 + i,
                            fields.get("detail", ""))
        with ctx.db.begin() as conn:
            audit.append(ctx.db, conn, entry, clock.now_ns())
        clock.advance(1)


def codes(problems: list[audit.Problem]) -> list[tuple[str, int]]:
    return [(p.code, p.seq) for p in problems]


def execute(ctx: ServerContext, *statements: Any) -> None:
    with ctx.db.begin() as conn:
        for s in statements:
            conn.execute(s)


def row(ctx: ServerContext, tenant: int, seq: int) -> Any:
    with ctx.db.read() as conn:
        return conn.execute(sa.select(E).where(E.c.tenant_id == tenant, E.c.seq == seq)).one()


def rehash(ctx: ServerContext, tenant: int, seq: int, **changes: Any) -> str:
    """Change entry `seq` and give it the hash its new content deserves (what a forger with
    write access to the database does); returns the new hash."""
    new = dict(row(ctx, tenant, seq)._mapping) | changes
    digest = audit.row_hash(SimpleNamespace(**new))
    execute(ctx, E.update().where(E.c.tenant_id == tenant, E.c.seq == seq)
            .values(**changes, entry_hash=digest))
    return str(digest)


Chain = tuple[ServerContext, int, int]


@pytest.fixture
def chain(tmp_path: Path) -> tuple[ServerContext, int, int]:
    """A context with two tenants: `a` with 10 entries, `b` with 4 (never tampered with)."""
    ctx = make_context(tmp_path / "srv", clock=FixedClock(T0))
    add_tenant(ctx, "a", ("backup",))
    add_tenant(ctx, "b", ("backup",))
    a, b = tenant_id(ctx, "a"), tenant_id(ctx, "b")
    append(ctx, a, 10, detail="motive: été")
    append(ctx, b, 4)
    assert audit.verify(ctx.db) == []
    return ctx, a, b


# --- appends ----------------------------------------------------------------------------------

def appends_from_threads(ctx: ServerContext, tenants: list[int], threads: int, each: int) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(k: int) -> None:
        try:
            start.wait()
            for i in range(each):
                tenant = tenants[(k + i) % len(tenants)]
                with ctx.db.begin() as conn:
                    audit.append(ctx.db, conn, audit.Entry(tenant, "put", token_id=f"t{k}", bytes=i),
                                 T0 + k * 1000 + i)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors, errors
    with ctx.db.read() as conn:
        for tenant in tenants:
            seqs = [r[0] for r in conn.execute(
                sa.select(E.c.seq).where(E.c.tenant_id == tenant).order_by(E.c.seq))]
            head = conn.execute(sa.select(H.c.seq).where(H.c.tenant_id == tenant)).scalar_one()
            assert seqs == list(range(1, len(seqs) + 1)) and head == len(seqs)
        total = conn.execute(
            sa.select(sa.func.count()).select_from(E).where(E.c.tenant_id.in_(tenants))).scalar()
    assert total == threads * each
    assert audit.verify(ctx.db) == []


def test_appends_from_several_threads_are_gapless_and_verify(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "srv")
    add_tenant(ctx, "a", ())
    add_tenant(ctx, "b", ())
    appends_from_threads(ctx, [tenant_id(ctx, "a"), tenant_id(ctx, "b"), audit.PROVIDER], 6, 40)


def test_two_writers_on_postgresql_are_serialized_by_the_head_lock(tmp_path: Path, postgres: Any) -> None:
    from dbservers import DB_PASSWORD, DB_USER

    name = f"audit_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE DATABASE {name}")
    url = f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{postgres.port}/{name}"
    ctx = make_context(tmp_path / "srv", db_url=url)
    try:
        add_tenant(ctx, "a", ())
        appends_from_threads(ctx, [tenant_id(ctx, "a")], 2, 150)
        # Two instances anchoring at once: one anchoring, one copy of the head.
        start = threading.Barrier(2)
        added: list[int] = []

        def anchoring() -> None:
            start.wait()
            added.append(audit.anchor(ctx.db, T0 + 3600 * 10**9))

        threads = [threading.Thread(target=anchoring) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(added) == [0, 1]
        assert audit.verify(ctx.db) == []
    finally:
        ctx.db.close()


# --- tampering --------------------------------------------------------------------------------

@pytest.mark.parametrize("change", [{"bytes": 999_999}, {"outcome": "forbidden"}, {"detail": ""}])
def test_an_edited_entry_is_named(chain: Chain, change: dict[str, Any]) -> None:
    ctx, a, _b = chain
    execute(ctx, E.update().where(E.c.tenant_id == a, E.c.seq == 4).values(**change))
    problems = audit.verify(ctx.db)
    assert codes(problems) == [("edited", 4)]
    assert problems[0].tenant_id == a and "entry 4 was edited" in problems[0].text
    assert audit.verify(ctx.db, a) == problems


def test_a_removed_entry_is_named(chain: Chain) -> None:
    ctx, a, _b = chain
    execute(ctx, E.delete().where(E.c.tenant_id == a, E.c.seq.in_([5, 6])))
    problems = audit.verify(ctx.db)
    assert codes(problems) == [("removed", 5)]
    assert "entries 5 to 6 are missing" in problems[0].text


def test_swapped_entries_are_named_as_reordered(chain: Chain) -> None:
    ctx, a, _b = chain
    r3, r4 = row(ctx, a, 3), row(ctx, a, 4)
    fields = [c.name for c in E.columns if c.name not in ("tenant_id", "seq")]
    execute(ctx,
            E.update().where(E.c.tenant_id == a, E.c.seq == 3).values({f: getattr(r4, f) for f in fields}),
            E.update().where(E.c.tenant_id == a, E.c.seq == 4).values({f: getattr(r3, f) for f in fields}))
    problems = audit.verify(ctx.db)
    assert codes(problems) == [("moved", 3), ("moved", 4)]
    assert "stored as number 3 was written as number 4" in problems[0].text
    assert "stored as number 4 was written as number 3" in problems[1].text


def test_an_inserted_entry_is_named(chain: Chain) -> None:
    """A forged entry slipped in at 5 with a correct hash, the later ones renumbered."""
    ctx, a, _b = chain
    with ctx.db.begin() as conn:
        for seq in range(10, 4, -1):
            conn.execute(E.update().where(E.c.tenant_id == a, E.c.seq == seq).values(seq=seq + 1))
        forged = audit.Entry(a, "delete", token_id="tok0")
        prev = row(ctx, a, 4).entry_hash
        digest = audit.chain_hash(prev, audit.canonical(a, 5, T0 + 4_500_000_000, forged))
        conn.execute(E.insert().values(tenant_id=a, seq=5, day=audit.day_of(T0), time_ns=T0 + 4_500_000_000,
                                       token_id="tok0", client="", operation="delete", kind="", count=1,
                                       bytes=0, outcome="ok", detail="", prev_hash=prev, entry_hash=digest))
        last = conn.execute(sa.select(E.c.entry_hash).where(E.c.tenant_id == a, E.c.seq == 11)).scalar()
        conn.execute(H.update().where(H.c.tenant_id == a).values(seq=11, entry_hash=last))
    problems = audit.verify(ctx.db)
    assert codes(problems) == [("moved", 6)]
    assert "entries stored as numbers 6 to 11 were written as numbers 5 to 10" in problems[0].text


def test_an_entry_added_beyond_the_head_is_named(chain: Chain) -> None:
    ctx, a, _b = chain
    last = row(ctx, a, 10)
    forged = audit.Entry(a, "get")
    digest = audit.chain_hash(last.entry_hash, audit.canonical(a, 11, T0, forged))
    execute(ctx, E.insert().values(tenant_id=a, seq=11, day=audit.day_of(T0), time_ns=T0, token_id="",
                                   client="", operation="get", kind="", count=1, bytes=0, outcome="ok",
                                   detail="", prev_hash=last.entry_hash, entry_hash=digest))
    assert codes(audit.verify(ctx.db)) == [("beyond_head", 11)]


def test_an_entry_edited_and_rehashed_is_caught_by_the_next_entry(chain: Chain) -> None:
    ctx, a, _b = chain
    rehash(ctx, a, 6, bytes=1)
    problems = audit.verify(ctx.db)
    assert codes(problems) == [("rehashed", 6)]
    assert "entry 6 was changed and its hash recomputed" in problems[0].text


def test_the_last_entry_edited_and_rehashed_is_caught_by_the_head(chain: Chain) -> None:
    ctx, a, _b = chain
    rehash(ctx, a, 10, outcome="ok", bytes=0)
    assert codes(audit.verify(ctx.db)) == [("head", 10)]


def test_a_rewritten_chain_and_head_are_caught_by_an_anchor(chain: Chain) -> None:
    """The forger edits entry 6 and recomputes every hash after it, and the head: the chain
    alone is consistent again, but the anchor taken before does not match any more."""
    ctx, a, _b = chain
    assert audit.anchor(ctx.db, ctx.clock.now_ns()) == 2  # a and b (the provider's chain is empty)
    prev = rehash(ctx, a, 6, bytes=1)
    for seq in range(7, 11):
        digest = audit.row_hash(SimpleNamespace(**dict(row(ctx, a, seq)._mapping) | {"prev_hash": prev}))
        execute(ctx, E.update().where(E.c.tenant_id == a, E.c.seq == seq)
                .values(prev_hash=prev, entry_hash=digest))
        prev = digest
    execute(ctx, H.update().where(H.c.tenant_id == a).values(entry_hash=prev))
    problems = audit.verify(ctx.db)
    assert codes(problems) == [("anchor_mismatch", 10)]
    assert "entry 10 no longer has the hash anchored on" in problems[0].text


def test_a_tail_cut_after_an_anchor_is_named(chain: Chain) -> None:
    ctx, a, _b = chain
    audit.anchor(ctx.db, ctx.clock.now_ns())
    h7 = row(ctx, a, 7).entry_hash
    execute(ctx, E.delete().where(E.c.tenant_id == a, E.c.seq > 7))
    assert codes(audit.verify(ctx.db)) == [("truncated", 8), ("anchor_missing", 10)]
    # ...and with the head moved back too, the anchor still tells.
    execute(ctx, H.update().where(H.c.tenant_id == a).values(seq=7, entry_hash=h7))
    problems = audit.verify(ctx.db)
    assert codes(problems) == [("anchor_missing", 10)]
    assert "entry 10, anchored on" in problems[0].text and "is missing" in problems[0].text


def test_a_removed_head_is_named(chain: Chain) -> None:
    ctx, a, _b = chain
    execute(ctx, H.delete().where(H.c.tenant_id == a))
    assert codes(audit.verify(ctx.db)) == [("no_head", 1)]


def test_anchors_are_taken_at_most_once_an_hour_and_only_for_new_heads(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "srv", clock=FixedClock(T0))
    add_tenant(ctx, "a", ())
    a = tenant_id(ctx, "a")
    append(ctx, a, 3)
    now = ctx.clock.now_ns()
    assert audit.anchor(ctx.db, now) == 1          # the provider's empty chain has nothing to anchor
    assert audit.anchor(ctx.db, now + 60 * 10**9) == 0  # within the hour: nothing
    append(ctx, a, 1)
    assert audit.anchor(ctx.db, now + 1800 * 10**9) == 0
    assert audit.anchor(ctx.db, now + 3600 * 10**9) == 1
    assert audit.anchor(ctx.db, now + 7200 * 10**9) == 0  # the head did not move: no copy
    with ctx.db.read() as conn:
        anchors = conn.execute(sa.select(A.c.seq).order_by(A.c.seq)).all()
    assert [r[0] for r in anchors] == [3, 4]


# --- retention --------------------------------------------------------------------------------

def test_retention_removes_whole_old_days_and_the_rest_still_verifies(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "srv", clock=FixedClock(T0), audit_retention_days=3)
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    add_tenant(ctx, "a", ())
    a = tenant_id(ctx, "a")
    for _day in range(6):  # 6 days of 5 entries, an anchoring each day
        append(ctx, a, 5)
        audit.periodic(ctx, clock.now_ns())
        clock.advance(DAY_S)
    with ctx.db.read() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(E).where(E.c.tenant_id == a)).scalar()
    assert before < 30  # retention already ran during those days
    audit.periodic(ctx, clock.now_ns())
    cutoff = audit.day_of(clock.now_ns() - 3 * DAY_S * 10**9)
    with ctx.db.read() as conn:
        days = sorted({r[0] for r in conn.execute(sa.select(E.c.day).where(E.c.tenant_id == a))})
        head = conn.execute(sa.select(H).where(H.c.tenant_id == a)).one()
        first = conn.execute(sa.select(sa.func.min(E.c.seq)).where(E.c.tenant_id == a)).scalar()
        old_anchors = conn.execute(sa.select(sa.func.count()).select_from(A).where(
            A.c.tenant_id == a, A.c.seq < first)).scalar()
    assert days and days[0] >= cutoff and len(days) == 3
    assert head.first_seq == first and head.seq == 30 and old_anchors == 0
    assert head.first_prev_hash != audit.GENESIS
    assert audit.verify(ctx.db) == []
    assert audit.trim(ctx.db, clock.now_ns(), 3) == 0  # idempotent
    # The kept start moved by someone: named.
    execute(ctx, H.update().where(H.c.tenant_id == a).values(first_prev_hash="e" * 64))
    assert codes(audit.verify(ctx.db)) == [("start", first)]
    execute(ctx, H.update().where(H.c.tenant_id == a).values(first_prev_hash=head.first_prev_hash))
    # Tampering in the kept part is still found; so is a change of the kept start.
    execute(ctx, E.update().where(E.c.tenant_id == a, E.c.seq == first).values(prev_hash="f" * 64))
    assert codes(audit.verify(ctx.db)) == [("edited", first)]
    execute(ctx, E.delete().where(E.c.tenant_id == a, E.c.seq == first))
    assert codes(audit.verify(ctx.db)) == [("removed", first)]
    # Everything older than the retention (the damage too): the chain is empty and consistent.
    audit.trim(ctx.db, clock.now_ns() + 10 * DAY_S * 10**9, 3)
    with ctx.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(E).where(E.c.tenant_id == a)).scalar() == 0
    assert audit.verify(ctx.db) == []
    append(ctx, a, 2)
    assert audit.verify(ctx.db) == []


# --- export -----------------------------------------------------------------------------------

def auditor_check(lines: list[str]) -> list[str]:
    """What an auditor writes, knowing only docs/server.md: each line's hash, and each line's
    link to the one before."""
    problems, prev = [], None
    for n, text in enumerate(lines, 1):
        line = json.loads(text)
        hashed = (line["prev_hash"] + "\n" + line["canonical"]).encode()
        if hashlib.sha256(hashed).hexdigest() != line["entry_hash"]:
            problems.append(f"line {n}: hash")
        if prev is not None and line["prev_hash"] != prev:
            problems.append(f"line {n}: link")
        if any(json.loads(line["canonical"])[k] != line[k] for k in ("seq", "bytes", "outcome", "detail")):
            problems.append(f"line {n}: fields")
        prev = line["entry_hash"]
    return problems


def test_an_export_is_reverified_by_an_independent_checker(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "srv", clock=FixedClock(T0))
    clock = ctx.clock
    assert isinstance(clock, FixedClock)
    add_tenant(ctx, "a", ())
    a = tenant_id(ctx, "a")
    days = []
    for _ in range(4):
        days.append(audit.day_of(clock.now_ns()))
        append(ctx, a, 3, detail="motif : contrôle « HDS » \\ \"quoted\"\n")
        audit.anchor(ctx.db, clock.now_ns())
        clock.advance(DAY_S)
    lines = list(audit.export(ctx.db, a, days[1], days[2]))
    assert len(lines) == 6 and auditor_check(lines) == []
    first = json.loads(lines[0])
    assert first["seq"] == 4 and first["prev_hash"] == row(ctx, a, 3).entry_hash
    assert first["tenant"] == "a" and first["day"] == days[1]
    assert json.loads(lines[2])["anchored_ns"] > 0 and "anchored_ns" not in first
    assert all(ord(c) < 128 for text in lines for c in text)
    # A changed figure, a removed line, or two lines swapped: the auditor sees each.
    edited = json.loads(lines[1])
    edited["canonical"] = edited["canonical"].replace('"bytes":1001', '"bytes":1')
    edited["bytes"] = 1
    assert auditor_check([lines[0], json.dumps(edited), *lines[2:]]) == ["line 2: hash"]
    assert auditor_check([lines[0], *lines[2:]]) == ["line 2: link"]
    assert "line 2: link" in auditor_check([lines[0], lines[2], lines[1], *lines[3:]])
    assert list(audit.export(ctx.db, a, "2020-01-01", "2020-01-31")) == []


def test_cli_verify_and_export(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    ctx = make_context(data, clock=FixedClock(T0))
    add_tenant(ctx, "pharmacie-du-port", ())
    a = tenant_id(ctx, "pharmacie-du-port")
    append(ctx, a, 5)
    ctx.db.close()
    base = [sys.executable, "-m", "coffre", "server", "--data", str(data), "audit"]
    env = {**os.environ, "LANG": "C.UTF-8", "LANGUAGE": "", "LC_ALL": ""}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, env=env, timeout=60,
                              check=False)

    ok = run("verify")
    assert ok.returncode == 0 and "intact" in ok.stdout, ok.stderr
    out = tmp_path / "export.jsonl"
    day = audit.day_of(T0)
    done = run("export", "--tenant", "pharmacie-du-port", "--from", day, "--to", day, "--out", str(out))
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 5 and auditor_check(lines) == []
    assert run("export", "--tenant", "nobody", "--from", day, "--to", day).returncode == 2
    assert run("export", "--tenant", "pharmacie-du-port", "--from", "2026-13-01", "--to", day).returncode == 2

    ctx = make_context(data, clock=FixedClock(T0))
    execute(ctx, E.update().where(E.c.tenant_id == a, E.c.seq == 2).values(bytes=5),
            E.delete().where(E.c.tenant_id == a, E.c.seq == 4))
    ctx.db.close()
    bad = run("verify")
    assert bad.returncode == 1
    assert "pharmacie-du-port: entry 2 was edited" in bad.stdout
    assert "pharmacie-du-port: entry 4 is missing" in bad.stdout and "2 problems" in bad.stdout
    report = json.loads(run("verify", "--tenant", "pharmacie-du-port", "--json").stdout)
    assert report["ok"] is False and [p["code"] for p in report["problems"]] == ["edited", "removed"]
    assert report["chains"] == [{"tenant": "pharmacie-du-port", "tenant_id": a, "first_seq": 1, "seq": 5,
                                 "head": report["chains"][0]["head"]}]
    stdout_export = run("export", "--tenant", "pharmacie-du-port", "--from", day, "--to", day)
    assert stdout_export.returncode == 1 and "entry 2 was edited" in stdout_export.stderr
    assert len(stdout_export.stdout.splitlines()) == 4
