"""Per-tenant quotas and usage counters: what is stored and what sits in the recycle bin.

`tenants.stored_bytes` (live objects) and `tenants.binned_bytes` (recycle bin) change only in
the transaction that records the object's row, so they never drift from the objects table
(rest-server's one global quota, counted by walking the tree at start-up, is the pitfall).
Both count against the quotas: a deletion into the recycle bin frees nothing until the bin
is purged.

A hard quota is checked twice: on the declared length before a byte of the body is read
(refuse early), then by a conditional UPDATE in the recording transaction (two uploads
racing for the last free bytes cannot both pass, also across several instances). The soft
quota only warns: every response to the tenant's tokens carries `X-Coffre-Quota-Warning`.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from coffre.core.human import human_size
from coffre.core.i18n import _
from coffre.server.db import Database, tables

WARNING_HEADER = "X-Coffre-Quota-Warning"


@dataclass(frozen=True)
class Usage:
    stored: int
    binned: int
    soft: int | None
    hard: int | None

    @property
    def used(self) -> int:
        return self.stored + self.binned

    def fits(self, size: int) -> bool:
        return self.hard is None or self.used + size <= self.hard

    def warning(self) -> str | None:
        """The X-Coffre-Quota-Warning value (ASCII, machine-readable) once the soft quota is
        reached, else None."""
        if self.soft is None or self.used < self.soft:
            return None
        hard = "none" if self.hard is None else str(self.hard)
        return f"used={self.used}; stored={self.stored}; binned={self.binned}; soft={self.soft}; hard={hard}"


def usage(conn: Connection, tenant_id: int) -> Usage:
    t = tables.tenants
    row = conn.execute(sa.select(t.c.stored_bytes, t.c.binned_bytes, t.c.quota_soft, t.c.quota_hard)
                       .where(t.c.id == tenant_id)).one()
    return Usage(int(row.stored_bytes), int(row.binned_bytes), row.quota_soft, row.quota_hard)


def exceeded_message(tenant: str, u: Usage, size: int) -> str:
    """What a refused upload is told: the quota in bytes and for people, what is used."""
    assert u.hard is not None
    return _("the hard quota of tenant {tenant}, {quota} ({bytes} bytes), would be exceeded: "
             "{used} used (recycle bin included), {size} more refused").format(
        tenant=tenant, quota=human_size(u.hard), bytes=u.hard, used=human_size(u.used),
        size=human_size(size))


def charge(conn: Connection, tenant_id: int, size: int) -> bool:
    """Count `size` more stored bytes, only if the hard quota allows it (conditional UPDATE in
    the caller's transaction). False: refused, nothing changed."""
    t = tables.tenants
    updated = conn.execute(
        t.update()
        .where(t.c.id == tenant_id,
               sa.or_(t.c.quota_hard.is_(None),
                      t.c.stored_bytes + t.c.binned_bytes + size <= t.c.quota_hard))
        .values(stored_bytes=t.c.stored_bytes + size)
        .returning(t.c.id)).first()
    return updated is not None


def reserve(db: Database, conn: Connection, tenant_id: int, size: int, now_ns: int,
            expires_ns: int) -> tuple[int | None, Usage]:
    """Reserve room for an upload of `size` bytes before its bytes are stored: (reservation id,
    usage) when the hard quota allows it counting the other uploads in progress, (None, usage)
    when it does not, or when there is no hard quota (nothing to reserve). The tenant's row is
    locked meanwhile (PostgreSQL; SQLite serializes writers), so two instances cannot both take
    the last room."""
    t, r = tables.tenants, tables.quota_reservations
    row = conn.execute(db.for_update(
        sa.select(t.c.stored_bytes, t.c.binned_bytes, t.c.quota_soft, t.c.quota_hard)
        .where(t.c.id == tenant_id))).one()
    u = Usage(int(row.stored_bytes), int(row.binned_bytes), row.quota_soft, row.quota_hard)
    if u.hard is None:
        return None, u
    pending = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(r.c.bytes), 0)).where(
        r.c.tenant_id == tenant_id, r.c.expires_ns > now_ns)).scalar_one()
    if u.used + int(pending) + size > u.hard:
        return None, u
    conn.execute(r.delete().where(r.c.tenant_id == tenant_id, r.c.expires_ns <= now_ns))
    made = conn.execute(r.insert().values(tenant_id=tenant_id, bytes=size, expires_ns=expires_ns)
                        .returning(r.c.id)).scalar_one()
    return int(made), u


def unreserve(conn: Connection, reservation: int) -> None:
    """The upload was recorded or refused: its room is no longer held."""
    r = tables.quota_reservations
    conn.execute(r.delete().where(r.c.id == reservation))


def to_bin(conn: Connection, tenant_id: int, size: int) -> None:
    """An object moved into the recycle bin: stored → binned (the total does not change)."""
    t = tables.tenants
    conn.execute(t.update().where(t.c.id == tenant_id).values(
        stored_bytes=t.c.stored_bytes - size, binned_bytes=t.c.binned_bytes + size))


def from_bin(conn: Connection, tenant_id: int, size: int) -> None:
    """An object taken back out of the recycle bin: binned → stored."""
    t = tables.tenants
    conn.execute(t.update().where(t.c.id == tenant_id).values(
        stored_bytes=t.c.stored_bytes + size, binned_bytes=t.c.binned_bytes - size))


def release(conn: Connection, tenant_id: int, size: int) -> None:
    """A live object removed for good (a lock its owner removed)."""
    t = tables.tenants
    conn.execute(t.update().where(t.c.id == tenant_id).values(stored_bytes=t.c.stored_bytes - size))


def warning_headers(conn: Connection, tenant_id: int | None) -> dict[str, str]:
    """The X-Coffre-Quota-Warning header for a response to a tenant's token, if its soft quota
    is reached (other routes than the object protocol's use it: every response to a tenant
    token carries the warning)."""
    if tenant_id is None:
        return {}
    warning = usage(conn, tenant_id).warning()
    return {WARNING_HEADER: warning} if warning else {}
