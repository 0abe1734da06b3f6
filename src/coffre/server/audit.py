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
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from coffre.server.db import Database, tables

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


PERIOD_S = 3600.0


def periodic(ctx: object, now_ns: int) -> None:
    """(anchoring and retention: being written)"""
