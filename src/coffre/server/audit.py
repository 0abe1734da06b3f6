"""The audit journal: every request that touches a tenant's data and every provider action,
appended to a hash-chained journal per tenant (tenant 0: provider actions naming no tenant).

Each entry's hash covers the previous entry's hash and the entry's canonical body, so an
edited, removed or reordered entry breaks the chain from there on. Appending locks the
tenant's head row, so entries are numbered without gaps also across several instances.

Writes, deletions and refusals are appended in the same transaction as what they record.
Reads (load, stat, list) are counted in memory (`ReadTally`) and appended as one entry per
token, client, operation, kind and outcome at each flush (every few seconds and at stop): a
server killed between two flushes loses at most that interval of read entries, never a
write's.

This module also owns what is done with the journal afterwards:
- `verify` walks every chain from its kept start and names each edited, removed, reordered or
  inserted entry, a head that does not match the last entry, and any anchor that no longer
  matches the entry it copied;
- `export` writes a tenant's entries of a range of days as JSON lines an auditor re-verifies
  without Coffre (each line carries the exact bytes that were hashed);
- `periodic` (hourly, every instance, idempotent) copies each chain's head into
  `audit_anchors`, then applies the retention: whole days older than
  `settings.audit_retention_days` are deleted and the head's `first_seq`/`first_prev_hash`
  advanced, so the kept part still verifies from there and the journal's size stays bounded.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from coffre.core.i18n import _, ngettext
from coffre.server.db import Database, tables

if TYPE_CHECKING:
    from coffre.server.context import ServerContext

PROVIDER = 0  # the chain of provider actions that name no tenant
GENESIS = "0" * 64


@dataclass(frozen=True)
class Entry:
    tenant_id: int
    operation: str          # put, get, head, list, delete, create, refused, admin.*, ...
    outcome: str = "ok"     # ok, or what was refused: forbidden, unauthorized, quota, hash, ...
    token_id: str = ""
    client: str = ""
    kind: str = ""
    count: int = 1
    bytes: int = 0
    detail: str = ""        # motive of an admin action, what it changed; never a secret


def day_of(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9, UTC).strftime("%Y-%m-%d")


def canonical(tenant_id: int, seq: int, time_ns: int, e: Entry) -> bytes:
    body = asdict(e) | {"tenant_id": tenant_id, "seq": seq, "time_ns": time_ns}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def chain_hash(prev_hash: str, body: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + body).hexdigest()


def append(db: Database, conn: Connection, entry: Entry, now_ns: int) -> None:
    """Append one entry inside the caller's write transaction."""
    h = tables.audit_heads
    head = conn.execute(db.for_update(
        sa.select(h.c.seq, h.c.entry_hash).where(h.c.tenant_id == entry.tenant_id))).first()
    if head is None:
        conn.execute(h.insert().values(tenant_id=entry.tenant_id, seq=0, entry_hash=GENESIS,
                                       first_seq=1, first_prev_hash=GENESIS))
        seq, prev = 1, GENESIS
    else:
        seq, prev = head.seq + 1, head.entry_hash
    digest = chain_hash(prev, canonical(entry.tenant_id, seq, now_ns, entry))
    conn.execute(tables.audit_entries.insert().values(
        tenant_id=entry.tenant_id, seq=seq, day=day_of(now_ns), time_ns=now_ns,
        token_id=entry.token_id, client=entry.client, operation=entry.operation, kind=entry.kind,
        count=entry.count, bytes=entry.bytes, outcome=entry.outcome, detail=entry.detail,
        prev_hash=prev, entry_hash=digest))
    conn.execute(h.update().where(h.c.tenant_id == entry.tenant_id).values(seq=seq, entry_hash=digest))


class ReadTally:
    """Reads counted in memory, journaled at each flush (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[int, str, str, str, str, str], list[int]] = {}

    def add(self, tenant_id: int, token_id: str, client: str, operation: str, kind: str,
            nbytes: int, outcome: str = "ok") -> None:
        key = (tenant_id, token_id, client, operation, kind, outcome)
        with self._lock:
            c = self._counts.setdefault(key, [0, 0])
            c[0] += 1
            c[1] += nbytes

    def flush(self, db: Database, now_ns: int) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
        if not counts:
            return
        from coffre.server import metering

        with db.begin() as conn:
            for (tenant, token, client, op, kind, outcome), (n, nbytes) in sorted(counts.items()):
                append(db, conn, Entry(tenant, op, outcome, token, client, kind, n, nbytes), now_ns)
                if op == "get" and outcome == "ok" and tenant != PROVIDER:
                    metering.count(db, conn, tenant, now_ns, downloads=n, downloaded_bytes=nbytes)



def latest(conn: Connection, tenant_id: int, limit: int, before_seq: int | None = None) -> list[Any]:
    """The chain's entries newest first (the `limit` before number `before_seq`, or the last
    ones): a page of the journal as stored (`verify` says whether it is intact)."""
    e = tables.audit_entries
    q = sa.select(e).where(e.c.tenant_id == tenant_id)
    if before_seq is not None:
        q = q.where(e.c.seq < before_seq)
    return list(conn.execute(q.order_by(e.c.seq.desc()).limit(limit)).all())


# --- verification ---------------------------------------------------------------------------

WINDOW = 256      # entries looked at on either side to tell a moved entry from an edited one
_PAGE = 2000      # entries read at a time


@dataclass(frozen=True)
class Problem:
    """Something wrong in a chain. `code`: edited, removed, moved, inserted, rehashed, start,
    before_start, truncated, beyond_head, head, no_head, anchor_missing, anchor_mismatch.
    `seq`: the first entry concerned. `text`: what happened, in plain words."""

    tenant_id: int
    code: str
    seq: int
    text: str


def entry_of(row: Any) -> Entry:
    """The Entry a stored row records (what its hash covers, with seq and time)."""
    return Entry(row.tenant_id, row.operation, row.outcome, row.token_id, row.client, row.kind,
                 int(row.count), int(row.bytes), row.detail)


def row_hash(row: Any, seq: int | None = None) -> str:
    """The hash a stored row should carry, had it been written as number `seq` (default: the
    number it is stored as) after the entry whose hash it records as previous."""
    body = canonical(row.tenant_id, row.seq if seq is None else seq, int(row.time_ns), entry_of(row))
    return chain_hash(row.prev_hash, body)


def utc_text(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def chains(conn: Connection) -> list[int]:
    """Every tenant id with a head, an entry or an anchor."""
    ids: set[int] = set()
    for table in (tables.audit_heads, tables.audit_entries, tables.audit_anchors):
        ids.update(r[0] for r in conn.execute(sa.select(table.c.tenant_id).distinct()))
    return sorted(ids)


def heads(db: Database, tenant: int | None = None) -> list[tuple[int, int, int, str]]:
    """(tenant id, first kept seq, head seq, head hash) of every chain, or of one."""
    h = tables.audit_heads
    q = sa.select(h.c.tenant_id, h.c.first_seq, h.c.seq, h.c.entry_hash).order_by(h.c.tenant_id)
    if tenant is not None:
        q = q.where(h.c.tenant_id == tenant)
    with db.read() as conn:
        return [(int(t), int(f), int(s), e) for t, f, s, e in conn.execute(q)]


def verify(db: Database, tenant: int | None = None) -> list[Problem]:
    """Every problem of one chain (`tenant`: its id, PROVIDER for the provider's) or of all,
    read from one snapshot of the database, so appends going on meanwhile are not problems."""
    with db.read() as conn:
        if db.dialect == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        ids = chains(conn) if tenant is None else [tenant]
        problems: list[Problem] = []
        for tenant_id in ids:
            problems += _verify_chain(conn, tenant_id)
        return problems


def _entries(conn: Connection, tenant_id: int) -> Iterator[Any]:
    e = tables.audit_entries
    last = None
    while True:
        q = sa.select(e).where(e.c.tenant_id == tenant_id)
        if last is not None:
            q = q.where(e.c.seq > last)
        page = conn.execute(q.order_by(e.c.seq).limit(_PAGE)).all()
        yield from page
        if len(page) < _PAGE:
            return
        last = page[-1].seq


class _Window:
    """The rows around the one being checked, found by their hash or their previous hash."""

    def __init__(self, rows: Iterator[Any]) -> None:
        self._rows = rows
        self.ahead: deque[Any] = deque()
        self._behind: deque[Any] = deque()
        self.by_hash: dict[str, int] = {}
        self.by_prev: dict[str, int] = {}
        self._fill()

    def _fill(self) -> None:
        while len(self.ahead) <= WINDOW:
            row = next(self._rows, None)
            if row is None:
                return
            self.ahead.append(row)
            self.by_hash[row.entry_hash] = row.seq
            self.by_prev[row.prev_hash] = row.seq

    def next(self) -> Any:
        row = self.ahead.popleft()
        self._behind.append(row)
        if len(self._behind) > WINDOW:
            old = self._behind.popleft()
            if self.by_hash.get(old.entry_hash) == old.seq:
                del self.by_hash[old.entry_hash]
            if self.by_prev.get(old.prev_hash) == old.seq:
                del self.by_prev[old.prev_hash]
        self._fill()
        return row


def _verify_chain(conn: Connection, tenant_id: int) -> list[Problem]:
    h = tables.audit_heads
    head = conn.execute(sa.select(h).where(h.c.tenant_id == tenant_id)).first()
    problems: list[Problem] = []

    def problem(code: str, seq: int, text: str) -> None:
        problems.append(Problem(tenant_id, code, seq, text))

    if head is None:
        first_seq, expected_prev = 1, GENESIS
    else:
        first_seq, expected_prev = int(head.first_seq), head.first_prev_hash
    expected_seq = first_seq
    kept: dict[int, str] = {}  # seq -> stored hash, of anchored entries only (checked below)
    a = tables.audit_anchors
    anchors = conn.execute(sa.select(a).where(a.c.tenant_id == tenant_id).order_by(a.c.seq)).all()
    anchored = {int(r.seq) for r in anchors}
    moved: list[tuple[int, int]] = []  # a run of (stored as, written as), same offset
    written_at: dict[int, int] = {}    # stored as -> written as, of the moved entries seen lately
    had_rows = False
    last_seq = first_seq - 1
    prev_moved = False

    def flush_moved() -> None:
        if moved:
            (first, wfirst), (last, wlast) = moved[0], moved[-1]
            problem("moved", first, ngettext(
                "the entry stored as number {first} was written as number {wfirst}: entries were "
                "reordered, inserted or removed",
                "the {n} entries stored as numbers {first} to {last} were written as numbers "
                "{wfirst} to {wlast}: entries were reordered, inserted or removed",
                len(moved)).format(n=len(moved), first=first, last=last, wfirst=wfirst, wlast=wlast))
            moved.clear()

    window = _Window(_entries(conn, tenant_id))
    while window.ahead:
        row = window.next()
        seq = int(row.seq)
        if seq in anchored:
            kept[seq] = row.entry_hash
        if seq < first_seq:
            flush_moved()
            problem("before_start", seq, _(
                "entry {seq} lies before the start of the kept journal (entry {first}): it was "
                "added afterwards").format(seq=seq, first=first_seq))
            continue
        had_rows = True
        gap = seq > expected_seq
        if gap:
            flush_moved()
            n = seq - expected_seq
            problem("removed", expected_seq, ngettext(
                "entry {first} is missing: it was removed",
                "entries {first} to {last} are missing: they were removed", n).format(
                    first=expected_seq, last=seq - 1))
        written_as = None
        self_ok = row_hash(row) == row.entry_hash
        if not self_ok:
            candidates = []
            if row.prev_hash in window.by_hash:
                before = window.by_hash[row.prev_hash]
                candidates.append(written_at.get(before, before) + 1)
            if row.entry_hash in window.by_prev:
                candidates.append(window.by_prev[row.entry_hash] - 1)
            for c in candidates:
                if c != seq and c >= 0 and row_hash(row, c) == row.entry_hash:
                    written_as = c
                    break
        if written_as is not None:
            written_at[seq] = written_as
            if len(written_at) > 2 * WINDOW:
                for k in [k for k in written_at if k < seq - WINDOW]:
                    del written_at[k]
            if moved and (moved[-1][0] + 1 != seq or moved[-1][1] - moved[-1][0] != written_as - seq):
                flush_moved()
            moved.append((seq, written_as))
        else:
            flush_moved()
            if not self_ok:
                problem("edited", seq, _(
                    "entry {seq} was edited: its content no longer matches its hash").format(seq=seq))
            elif row.prev_hash != expected_prev and not gap and not prev_moved:
                follows = window.by_hash.get(row.prev_hash)
                if seq == first_seq:
                    problem("start", seq, _(
                        "entry {seq} does not follow the start of the kept journal: the hash "
                        "recorded when older entries were removed differs").format(seq=seq))
                elif follows is not None and follows < seq - 1:
                    n = seq - 1 - follows
                    problem("inserted", follows + 1, ngettext(
                        "entry {first} was inserted: entry {next} was written right after entry {prev}",
                        "entries {first} to {last} were inserted: entry {next} was written right "
                        "after entry {prev}", n).format(first=follows + 1, last=seq - 1, next=seq,
                                                         prev=follows))
                elif follows is not None:
                    problem("moved", seq, _(
                        "entry {seq} was written after entry {prev}, which is stored after it: "
                        "entries were reordered").format(seq=seq, prev=follows))
                else:
                    problem("rehashed", seq - 1, _(
                        "entry {prev} was changed and its hash recomputed: entry {seq} recorded a "
                        "different hash for it").format(prev=seq - 1, seq=seq))
        prev_moved = written_as is not None
        expected_seq, expected_prev, last_seq = seq + 1, row.entry_hash, seq
    flush_moved()

    if head is None:
        if had_rows:
            problem("no_head", first_seq, _(
                "the journal has entries but no head: its head was removed"))
    elif int(head.seq) > last_seq:
        n = int(head.seq) - last_seq
        problem("truncated", last_seq + 1, ngettext(
            "entry {first} is missing at the end of the journal, whose head is entry {head}: the "
            "journal was cut",
            "entries {first} to {last} are missing at the end of the journal, whose head is entry "
            "{head}: the journal was cut", n).format(first=last_seq + 1, last=int(head.seq),
                                                     head=int(head.seq)))
    elif int(head.seq) < last_seq:
        n = last_seq - int(head.seq)
        problem("beyond_head", int(head.seq) + 1, ngettext(
            "entry {first} lies beyond the journal's head (entry {head}): it was added outside "
            "the server",
            "entries {first} to {last} lie beyond the journal's head (entry {head}): they were "
            "added outside the server", n).format(first=int(head.seq) + 1, last=last_seq,
                                                  head=int(head.seq)))
    elif head.entry_hash != expected_prev:
        problem("head", last_seq, _(
            "the journal's head does not match its last entry ({seq}): the entry or the head was "
            "changed").format(seq=last_seq))

    for anchor in anchors:
        seq = int(anchor.seq)
        if seq < first_seq:
            continue  # in days removed by the retention
        when = utc_text(int(anchor.anchored_ns))
        if seq not in kept:
            problem("anchor_missing", seq, _(
                "entry {seq}, anchored on {when}, is missing: the journal was cut or the entry "
                "removed").format(seq=seq, when=when))
        elif kept[seq] != anchor.entry_hash:
            problem("anchor_mismatch", seq, _(
                "entry {seq} no longer has the hash anchored on {when}: it, or an entry before it, "
                "was changed and the hashes after it recomputed").format(seq=seq, when=when))
    return problems


# --- export -----------------------------------------------------------------------------------

def export(db: Database, tenant: int, from_day: str, to_day: str) -> Iterator[str]:
    """The tenant's entries of the days from_day..to_day (YYYY-MM-DD, UTC, both included), as
    JSON lines in chain order. Each line holds the entry's fields, `prev_hash`, `entry_hash`
    and `canonical`: the exact text hashed, so that
    SHA-256(prev_hash + "\\n" + canonical) == entry_hash, and each line's prev_hash is the
    entry_hash of the line before (docs/server.md). An anchored entry also has `anchored_ns`.

    The range runs from the first to the last entry of those days in chain order, so the lines
    are contiguous even if the clock stepped back meanwhile."""
    e, a = tables.audit_entries, tables.audit_anchors
    with db.read() as conn:
        if db.dialect == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        in_days = sa.and_(e.c.tenant_id == tenant, e.c.day >= from_day, e.c.day <= to_day)
        lo, hi = conn.execute(sa.select(sa.func.min(e.c.seq), sa.func.max(e.c.seq)).where(in_days)).one()
        if lo is None:
            return
        name = "" if tenant == PROVIDER else conn.execute(
            sa.select(tables.tenants.c.name).where(tables.tenants.c.id == tenant)).scalar() or ""
        anchored = dict(conn.execute(sa.select(a.c.seq, a.c.anchored_ns).where(
            a.c.tenant_id == tenant, a.c.seq >= lo, a.c.seq <= hi)).all())
        last = lo - 1
        while last < hi:
            page = conn.execute(sa.select(e).where(e.c.tenant_id == tenant, e.c.seq > last, e.c.seq <= hi)
                                .order_by(e.c.seq).limit(_PAGE)).all()
            if not page:
                return
            for row in page:
                yield _export_line(row, name, anchored.get(row.seq))
            last = page[-1].seq


def _export_line(row: Any, tenant_name: str, anchored_ns: int | None) -> str:
    entry = entry_of(row)
    line: dict[str, Any] = {
        "tenant": tenant_name, "tenant_id": row.tenant_id, "seq": int(row.seq),
        "time": utc_text(int(row.time_ns)), "time_ns": int(row.time_ns), "day": row.day,
        "token_id": entry.token_id, "client": entry.client, "operation": entry.operation,
        "kind": entry.kind, "count": entry.count, "bytes": entry.bytes, "outcome": entry.outcome,
        "detail": entry.detail, "prev_hash": row.prev_hash, "entry_hash": row.entry_hash,
        "canonical": canonical(row.tenant_id, int(row.seq), int(row.time_ns), entry).decode("ascii"),
    }
    if anchored_ns is not None:
        line["anchored_ns"] = int(anchored_ns)
    return json.dumps(line, ensure_ascii=True, separators=(",", ":"))


# --- anchors and retention --------------------------------------------------------------------

PERIOD_S = 3600.0
ANCHORED_KEY = "audit.anchored_ns"
TRIM_BATCH = 200_000  # entries deleted per chain and run at most (a shortened retention catches up)


def periodic(ctx: ServerContext, now_ns: int) -> None:
    """Anchor the heads (at most once per period, whichever instance comes first), then apply
    the retention."""
    anchor(ctx.db, now_ns)
    trim(ctx.db, now_ns, ctx.settings.audit_retention_days)


def anchor(db: Database, now_ns: int, min_interval_s: float = PERIOD_S - 60) -> int:
    """Copy each chain's head into audit_anchors, unless an anchoring happened less than
    `min_interval_s` ago (the state row is locked, so several instances anchor once). A head
    already anchored is not copied again. Returns the number of new anchors."""
    s, h, a = tables.state, tables.audit_heads, tables.audit_anchors
    with db.begin() as conn:
        conn.execute(db.insert(s).values(key=ANCHORED_KEY, value="0").on_conflict_do_nothing())
        stored = conn.execute(db.for_update(sa.select(s.c.value).where(s.c.key == ANCHORED_KEY))).scalar()
        last = int(stored or 0)
        if last and 0 <= now_ns - last < min_interval_s * 1e9:
            return 0
        added = 0
        heads = conn.execute(sa.select(h.c.tenant_id, h.c.seq, h.c.entry_hash)
                             .where(h.c.seq > 0, h.c.seq >= h.c.first_seq)).all()
        for head in heads:
            new = conn.execute(db.insert(a).values(
                tenant_id=head.tenant_id, seq=head.seq, entry_hash=head.entry_hash,
                anchored_ns=now_ns).on_conflict_do_nothing().returning(a.c.seq)).first()
            added += new is not None
        conn.execute(s.update().where(s.c.key == ANCHORED_KEY).values(value=str(now_ns)))
        return added


def trim(db: Database, now_ns: int, retention_days: int) -> int:
    """Delete the whole days older than `retention_days` from every chain (and their anchors),
    moving each head's first_seq/first_prev_hash to the first kept entry. Returns the number of
    entries deleted."""
    cutoff = day_of(now_ns - retention_days * 86_400 * 10**9)
    h, e, a = tables.audit_heads, tables.audit_entries, tables.audit_anchors
    with db.read() as conn:
        ids = [r[0] for r in conn.execute(sa.select(h.c.tenant_id).order_by(h.c.tenant_id))]
    deleted = 0
    for tenant_id in ids:
        with db.begin() as conn:
            head = conn.execute(db.for_update(sa.select(h).where(h.c.tenant_id == tenant_id))).first()
            if head is None:
                continue
            first_kept = conn.execute(sa.select(sa.func.min(e.c.seq)).where(
                e.c.tenant_id == tenant_id, e.c.seq >= head.first_seq, e.c.day >= cutoff)).scalar()
            cut = int(head.seq) if first_kept is None else int(first_kept) - 1
            cut = min(cut, int(head.first_seq) + TRIM_BATCH - 1)
            if cut < head.first_seq:
                continue
            at_cut = conn.execute(sa.select(e.c.entry_hash).where(
                e.c.tenant_id == tenant_id, e.c.seq == cut)).scalar()
            if at_cut is None:  # that entry was removed already: take what the next one recorded
                at_cut = head.entry_hash if cut == head.seq else conn.execute(
                    sa.select(e.c.prev_hash).where(e.c.tenant_id == tenant_id, e.c.seq == cut + 1)).scalar()
            result = conn.execute(e.delete().where(e.c.tenant_id == tenant_id, e.c.seq <= cut))
            deleted += max(result.rowcount, 0)
            conn.execute(a.delete().where(a.c.tenant_id == tenant_id, a.c.seq <= cut))
            conn.execute(h.update().where(h.c.tenant_id == tenant_id).values(
                first_seq=cut + 1, first_prev_hash=at_cut or GENESIS))
    return deleted
