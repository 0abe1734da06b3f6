"""The recycle bin: what a tenant's tokens delete is only moved here (objects.binned_ns set,
its bytes counted in tenants.binned_bytes instead of stored_bytes), still stored, no longer
listed nor readable. The provider lists it, restores it (`coffre server recycle restore`:
an attacker's deletions undone) or purges it; the server purges what was binned more than
`recycle_days` ago, by its own clock (binned_ns is the server's receipt time of the deletion,
never a client's), in `periodic`, except for tenants held read-only or disabled.

Binned bytes count against the tenant's quota until they are purged.

Purging removes the object from storage first, then its row (and the binned bytes) in one
transaction with the audit entry. A crash in between leaves a binned row whose object is gone:
the next purge (or a restore) finds it absent and only removes the row. Several instances may
purge at once: storage removal tolerates an object already gone, and a row is removed, and its
bytes counted down, by the one transaction that still finds it binned.

One race is left, and reported rather than hidden: an upload of the very bytes of a binned
object (same name) whose storage write happens just before the purge removes the file and
whose row is recorded just after (or the provider's restore at that very moment). The object
is then listed while its bytes are gone; the purge sees it and records a scrub finding
("missing") for the provider, and the client's next `check` reports it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from coffre.core.errors import ObjectNotFound, StorageError
from coffre.core.i18n import _, ngettext
from coffre.server import audit
from coffre.server.context import ServerContext
from coffre.server.db import tables
from coffre.storage.base import Handle

log = logging.getLogger("coffre.server")

NS_PER_DAY = 86_400 * 10**9
BATCH = 500
RESTORED_NEVER = ("locks",)  # a restored lock would only make clients wait for a stale lock
PERIOD_S = 600.0
PERIODIC_BUDGET_S = 120.0    # then the rest waits for the next period; other tasks run meanwhile


@dataclass(frozen=True)
class Binned:
    """One object in the recycle bin."""

    id: int
    tenant_id: int
    repository: str
    kind: str
    name: str
    size: int
    received_ns: int
    binned_ns: int
    binned_by: str


@dataclass(frozen=True)
class Summary:
    """A repository's part of the recycle bin."""

    tenant_id: int
    tenant: str
    repository: str
    objects: int
    bytes: int
    oldest_ns: int
    newest_ns: int


@dataclass
class Outcome:
    """What a restore or a purge did."""

    objects: int = 0              # restored, or removed from storage and purged
    bytes: int = 0
    already_gone: int = 0         # binned rows whose object was no longer stored: removed
    already_gone_bytes: int = 0
    failed: int = 0               # storage refused to remove them: left in the bin
    failure: str = ""             # the first refusal's reason (never a secret: storage errors name none)
    missing_live: list[str] = field(default_factory=list)  # the race above: kind/name

    def add(self, other: Outcome) -> None:
        self.objects += other.objects
        self.bytes += other.bytes
        self.already_gone += other.already_gone
        self.already_gone_bytes += other.already_gone_bytes
        self.failed += other.failed
        self.failure = self.failure or other.failure
        self.missing_live += other.missing_live


def _binned_query(tenant_id: int | None, repository: str | None = None, since_ns: int | None = None,
                  until_ns: int | None = None) -> Any:
    o, r = tables.objects, tables.repositories
    q = (sa.select(o.c.id, r.c.tenant_id, r.c.name.label("repository"), o.c.kind, o.c.name, o.c.size,
                   o.c.received_ns, o.c.binned_ns, o.c.binned_by)
         .select_from(o.join(r, r.c.id == o.c.repository_id)).where(o.c.binned_ns.is_not(None)))
    if tenant_id is not None:
        q = q.where(r.c.tenant_id == tenant_id)
    if repository is not None:
        q = q.where(r.c.name == repository)
    if since_ns is not None:
        q = q.where(o.c.binned_ns >= since_ns)
    if until_ns is not None:
        q = q.where(o.c.binned_ns < until_ns)
    return q


def _binned(row: Any) -> Binned:
    m = row._mapping
    return Binned(int(m["id"]), int(m["tenant_id"]), str(m["repository"]), str(m["kind"]), str(m["name"]),
                  int(m["size"]), int(m["received_ns"]), int(m["binned_ns"]), str(m["binned_by"] or ""))


def listing(conn: Connection, tenant_id: int | None, repository: str | None = None,
            since_ns: int | None = None, until_ns: int | None = None,
            limit: int | None = None) -> list[Binned]:
    """Binned objects, oldest deletion first."""
    q = _binned_query(tenant_id, repository, since_ns, until_ns).order_by(
        tables.objects.c.binned_ns, tables.objects.c.id)
    if limit is not None:
        q = q.limit(limit)
    return [_binned(row) for row in conn.execute(q)]


def summary(conn: Connection, tenant_id: int | None = None) -> list[Summary]:
    """The recycle bin per tenant and repository, by tenant name then repository."""
    o, r, te = tables.objects, tables.repositories, tables.tenants
    q = (sa.select(te.c.id, te.c.name, r.c.name, sa.func.count(), sa.func.sum(o.c.size),
                   sa.func.min(o.c.binned_ns), sa.func.max(o.c.binned_ns))
         .select_from(o.join(r, r.c.id == o.c.repository_id).join(te, te.c.id == r.c.tenant_id))
         .where(o.c.binned_ns.is_not(None))
         .group_by(te.c.id, te.c.name, r.c.name).order_by(te.c.name, r.c.name))
    if tenant_id is not None:
        q = q.where(te.c.id == tenant_id)
    return [Summary(int(i), t, repo, int(n), int(b or 0), int(lo), int(hi))
            for i, t, repo, n, b, lo, hi in conn.execute(q)]


def purge_due_ns(binned_ns: int, recycle_days: int) -> int:
    """When the server purges an object binned at `binned_ns`."""
    return binned_ns + max(recycle_days, 0) * NS_PER_DAY


def _chunks(ids: list[int], n: int = BATCH) -> Iterable[list[int]]:
    for i in range(0, len(ids), n):
        yield ids[i:i + n]


def _stored(ctx: ServerContext, b: Binned) -> bool:
    """Whether the object's bytes are in storage (StorageError other than absence propagates)."""
    try:
        ctx.store.backend(b.tenant_id, b.repository).stat(Handle(b.kind, b.name))
    except ObjectNotFound:
        return False
    return True


def restore(ctx: ServerContext, tenant_id: int, entry: Callable[[Outcome], audit.Entry],
            repository: str | None = None, since_ns: int | None = None,
            until_ns: int | None = None) -> Outcome:
    """Take the tenant's binned objects (of one repository, binned in [since, until)) back
    out of the bin, except lock objects. Their bytes move from binned to stored (the quota's
    total is unchanged). A binned object no longer in storage (a purge cut short) is removed
    instead. One transaction, with `entry(outcome)` appended to the audit journal."""
    candidates = [b for b in listing_all(ctx, tenant_id, repository, since_ns, until_ns)
                  if b.kind not in RESTORED_NEVER]
    present = {b.id: _stored(ctx, b) for b in candidates}
    out = Outcome()
    o, te = tables.objects, tables.tenants
    with ctx.db.begin() as conn:
        ids = [b.id for b in candidates]
        rows: list[Any] = []
        for chunk in _chunks(ids):
            rows += conn.execute(ctx.db.for_update(
                sa.select(o.c.id, o.c.size).where(o.c.id.in_(chunk), o.c.binned_ns.is_not(None)))).all()
        back = [(int(i), int(s)) for i, s in rows if present[int(i)]]
        gone = [(int(i), int(s)) for i, s in rows if not present[int(i)]]
        for chunk in _chunks([i for i, _s in back]):
            conn.execute(o.update().where(o.c.id.in_(chunk)).values(binned_ns=None, binned_by=None))
        for chunk in _chunks([i for i, _s in gone]):
            conn.execute(o.delete().where(o.c.id.in_(chunk)))
        out.objects, out.bytes = len(back), sum(s for _i, s in back)
        out.already_gone, out.already_gone_bytes = len(gone), sum(s for _i, s in gone)
        if back or gone:
            conn.execute(te.update().where(te.c.id == tenant_id).values(
                stored_bytes=te.c.stored_bytes + out.bytes,
                binned_bytes=te.c.binned_bytes - out.bytes - out.already_gone_bytes))
        audit.append(ctx.db, conn, entry(out), ctx.clock.now_ns())
    return out


def listing_all(ctx: ServerContext, tenant_id: int | None, repository: str | None = None,
                since_ns: int | None = None, until_ns: int | None = None) -> list[Binned]:
    with ctx.db.read() as conn:
        return listing(conn, tenant_id, repository, since_ns, until_ns)


def purge(ctx: ServerContext, entry: Callable[[int, Outcome], audit.Entry], tenant_id: int | None = None,
          binned_by_ns: int | None = None, budget_s: float | None = None,
          always_journal: bool = False, active_only: bool = False) -> Outcome:
    """Purge binned objects (of one tenant or all; binned at or before `binned_by_ns`, or any):
    each removed from storage, then, a batch at a time, their rows removed and the tenant's
    binned bytes counted down in one transaction with `entry(tenant_id, outcome of the batch)`.
    An object storage refuses to remove stays in the bin (counted in `failed`). `budget_s`:
    stop after that much time (the rest is purged next time). `always_journal`: append an
    entry for `tenant_id` even when nothing was purged (an admin's request is journaled).
    `active_only`: leave the bins of read-only and disabled tenants alone."""
    total = Outcome()
    journaled = False
    after_id = 0
    started = time.monotonic()
    while budget_s is None or time.monotonic() - started < budget_s:
        q = _binned_query(tenant_id).where(tables.objects.c.id > after_id)
        if binned_by_ns is not None:
            q = q.where(tables.objects.c.binned_ns <= binned_by_ns)
        if active_only:
            te = tables.tenants
            q = q.where(tables.repositories.c.tenant_id.in_(sa.select(te.c.id).where(te.c.state == "active")))
        with ctx.db.read() as conn:
            batch = [_binned(r) for r in conn.execute(q.order_by(tables.objects.c.id).limit(BATCH))]
        if not batch:
            break
        after_id = batch[-1].id
        removed, absent, failed = [], [], 0
        for b in batch:
            try:
                ctx.store.backend(b.tenant_id, b.repository).remove(Handle(b.kind, b.name))
                removed.append(b)
            except ObjectNotFound:
                absent.append(b)
            except (StorageError, OSError, ValueError) as exc:
                failed += 1
                total.failure = total.failure or f"{type(exc).__name__}: {exc}"[:300]
        done = _forget(ctx, removed, absent, entry)
        total.failed += failed
        for tenant, outcome in done.items():
            total.add(outcome)
            journaled = journaled or tenant == tenant_id
    if always_journal and not journaled and tenant_id is not None:
        with ctx.db.begin() as conn:
            audit.append(ctx.db, conn, entry(tenant_id, total), ctx.clock.now_ns())
    return total


def _forget(ctx: ServerContext, removed: list[Binned], absent: list[Binned],
            entry: Callable[[int, Outcome], audit.Entry]) -> dict[int, Outcome]:
    """The rows of objects no longer in storage, removed if still binned; per tenant."""
    o, te = tables.objects, tables.tenants
    by_id = {b.id: (b, True) for b in removed} | {b.id: (b, False) for b in absent}
    outcomes: dict[int, Outcome] = {}
    live: list[Binned] = []
    if not by_id:
        return outcomes
    with ctx.db.begin() as conn:
        rows: list[Any] = []
        for chunk in _chunks(list(by_id)):
            rows += conn.execute(ctx.db.for_update(
                sa.select(o.c.id, o.c.binned_ns).where(o.c.id.in_(chunk)))).all()
        gone = []
        for i, binned_ns in rows:
            b, by_us = by_id[int(i)]
            if binned_ns is None:
                live.append(b)      # taken out of the bin meanwhile (an upload of the same bytes)
                continue
            gone.append(int(i))
            out = outcomes.setdefault(b.tenant_id, Outcome())
            if by_us:
                out.objects += 1
                out.bytes += b.size
            else:
                out.already_gone += 1
                out.already_gone_bytes += b.size
        for chunk in _chunks(gone):
            conn.execute(o.delete().where(o.c.id.in_(chunk)))
        now = ctx.clock.now_ns()
        for tenant, out in sorted(outcomes.items()):
            conn.execute(te.update().where(te.c.id == tenant).values(
                binned_bytes=te.c.binned_bytes - out.bytes - out.already_gone_bytes))
            audit.append(ctx.db, conn, entry(tenant, out), now)
    for b in live:
        if _stored_quietly(ctx, b):
            continue
        log.error(_("recycle bin: an object of tenant {tenant} was uploaded again while it was "
                    "purged, and its bytes are gone: a scrub finding is recorded").format(tenant=b.tenant_id))
        _record_missing(ctx, b)
        outcomes.setdefault(b.tenant_id, Outcome()).missing_live.append(f"{b.kind}/{b.name}")
    return outcomes


def _stored_quietly(ctx: ServerContext, b: Binned) -> bool:
    try:
        return _stored(ctx, b)
    except (StorageError, OSError):
        return True  # cannot tell: the scrub will


def _record_missing(ctx: ServerContext, b: Binned) -> None:
    with ctx.db.begin() as conn:
        repo = conn.execute(sa.select(tables.repositories.c.id).where(
            tables.repositories.c.tenant_id == b.tenant_id,
            tables.repositories.c.name == b.repository)).scalar()
        conn.execute(tables.scrub_findings.insert().values(
            tenant_id=b.tenant_id, repository_id=int(repo or 0), kind=b.kind, name=b.name,
            found_ns=ctx.clock.now_ns(), problem="missing"))


def detail(**fields: object) -> str:
    """An audit entry's detail: compact JSON, keys sorted."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def periodic(ctx: ServerContext, now_ns: int) -> None:
    """Purge what was binned more than `recycle_days` ago (by the server's clock), for every
    active tenant; one audit entry per tenant and batch (operation `bin.purge`). The bin of a
    read-only or disabled tenant is held as it is (an investigation, a dispute): the provider
    purges it by hand, or it resumes when the tenant is active again."""
    days = ctx.settings.recycle_days

    def entry(tenant: int, out: Outcome) -> audit.Entry:
        return audit.Entry(tenant, "bin.purge", "ok", "", "server", "", out.objects + out.already_gone,
                           out.bytes + out.already_gone_bytes,
                           detail(reason="recycle_days", days=days, already_gone=out.already_gone))

    cutoff = now_ns - max(days, 0) * NS_PER_DAY
    out = purge(ctx, entry, None, binned_by_ns=cutoff, budget_s=PERIODIC_BUDGET_S, active_only=True)
    if out.objects or out.already_gone:
        n = out.objects + out.already_gone
        log.info(ngettext("recycle bin: {n} object purged after {days} days",
                          "recycle bin: {n} objects purged after {days} days", n).format(n=n, days=days))
    if out.failed:
        log.warning(ngettext("recycle bin: {n} object could not be removed from storage ({reason}); it is "
                             "tried again at the next purge",
                             "recycle bin: {n} objects could not be removed from storage ({reason}); they "
                             "are tried again at the next purge", out.failed).format(n=out.failed,
                                                                                     reason=out.failure))
