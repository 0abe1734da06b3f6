"""Usage per tenant and day: stored bytes sampled at least daily, uploads and downloads
counted as they happen. `coffre server usage` bills from it (GB-month per calendar month)."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from coffre.server.audit import day_of
from coffre.server.db import Database, tables


def count(db: Database, conn: Connection, tenant_id: int, now_ns: int, *, uploads: int = 0,
          uploaded_bytes: int = 0, downloads: int = 0, downloaded_bytes: int = 0) -> None:
    """Add transfers to the tenant's day, inside the caller's transaction."""
    u = tables.usage_days
    added = {"uploads": uploads, "uploaded_bytes": uploaded_bytes, "downloads": downloads,
             "downloaded_bytes": downloaded_bytes}
    insert = db.insert(u).values(tenant_id=tenant_id, day=day_of(now_ns), stored_bytes=0,
                                 binned_bytes=0, sampled_ns=0, **added)
    conn.execute(insert.on_conflict_do_update(
        index_elements=[u.c.tenant_id, u.c.day],
        set_={k: getattr(u.c, k) + v for k, v in added.items()}))


PERIOD_S = 3600.0


def periodic(ctx: object, now_ns: int) -> None:
    """(daily samples: being written)"""
