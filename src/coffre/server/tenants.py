"""Tenants (pharmacies) and their repositories: names, states, quotas.

States: `active`; `read-only` (reads and restores only: a tenant leaving, or under
investigation); `disabled` (every token refused). Names are validated here, once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from coffre.core.errors import UsageError
from coffre.core.i18n import _
from coffre.server.db import tables

STATES = ("active", "read-only", "disabled")
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
REPOSITORY_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class Tenant:
    id: int
    name: str
    display_name: str
    contact: str
    state: str
    quota_soft: int | None
    quota_hard: int | None
    stored_bytes: int
    binned_bytes: int
    created_ns: int


def check_tenant_name(name: str) -> str:
    if not TENANT_NAME.match(name):
        raise UsageError(_("{name} is not a valid tenant name").format(name=repr(name)),
                         _("use lower-case letters, digits and '-', up to 63 characters, "
                           "e.g. pharmacie-du-port"))
    return name


def valid_repository_name(name: str) -> bool:
    return bool(REPOSITORY_NAME.match(name)) and name not in (".", "..")


def add(conn: Connection, name: str, now_ns: int, display_name: str = "", contact: str = "",
        quota_soft: int | None = None, quota_hard: int | None = None) -> int:
    """A new tenant's id; UsageError if the name is taken or invalid."""
    check_tenant_name(name)
    if by_name(conn, name) is not None:
        raise UsageError(_("a tenant named {name} already exists").format(name=name))
    if quota_soft is not None and quota_hard is not None and quota_soft > quota_hard:
        raise UsageError(_("the soft quota must not be above the hard quota"))
    result = conn.execute(tables.tenants.insert().values(
        name=name, display_name=display_name, contact=contact, state="active",
        quota_soft=quota_soft, quota_hard=quota_hard, stored_bytes=0, binned_bytes=0,
        created_ns=now_ns))
    tenant_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    conn.execute(tables.audit_heads.insert().values(
        tenant_id=tenant_id, seq=0, entry_hash="0" * 64, first_seq=1, first_prev_hash="0" * 64))
    return tenant_id


def _row(r: sa.Row[tuple[object, ...]] | None) -> Tenant | None:
    return Tenant(**r._mapping) if r is not None else None


def by_name(conn: Connection, name: str) -> Tenant | None:
    return _row(conn.execute(sa.select(tables.tenants).where(tables.tenants.c.name == name)).first())


def by_id(conn: Connection, tenant_id: int) -> Tenant | None:
    return _row(conn.execute(sa.select(tables.tenants).where(tables.tenants.c.id == tenant_id)).first())


def all_tenants(conn: Connection) -> list[Tenant]:
    q = sa.select(tables.tenants).order_by(tables.tenants.c.name)
    return [Tenant(**r._mapping) for r in conn.execute(q)]


def repository_id(conn: Connection, tenant_id: int, name: str) -> int | None:
    r = tables.repositories
    return conn.execute(sa.select(r.c.id).where(r.c.tenant_id == tenant_id, r.c.name == name)).scalar()


def add_repository(conn: Connection, tenant_id: int, name: str, now_ns: int) -> int:
    """The repository's id, created if new (callers validated the name)."""
    found = repository_id(conn, tenant_id, name)
    if found is not None:
        return found
    result = conn.execute(tables.repositories.insert().values(tenant_id=tenant_id, name=name,
                                                              created_ns=now_ns))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def repositories_of(conn: Connection, tenant_id: int) -> list[tuple[int, str]]:
    r = tables.repositories
    return [(i, n) for i, n in conn.execute(
        sa.select(r.c.id, r.c.name).where(r.c.tenant_id == tenant_id).order_by(r.c.name))]


# -- what the provider sees of its tenants, and changes (admin.py journals each change) -------

@dataclass(frozen=True)
class TenantUsage:
    """A tenant and its counts, for `coffre server tenant list`."""

    tenant: Tenant
    repositories: int
    binned_objects: int
    oldest_binned_ns: int | None
    active_tokens: int


@dataclass(frozen=True)
class RepositoryUsage:
    """One repository of a tenant: live objects, and those in the recycle bin."""

    id: int
    name: str
    created_ns: int
    objects: int
    bytes: int
    binned_objects: int
    binned_bytes: int


def usage_listing(conn: Connection, now_ns: int) -> list[TenantUsage]:
    """Every tenant with its repositories, recycle bin and valid tokens, by name."""
    r, o, t = tables.repositories, tables.objects, tables.tokens
    repos: dict[int, int] = dict(conn.execute(
        sa.select(r.c.tenant_id, sa.func.count()).group_by(r.c.tenant_id)).all())
    binned = {row.tenant_id: (row.n, row.oldest) for row in conn.execute(
        sa.select(r.c.tenant_id, sa.func.count().label("n"), sa.func.min(o.c.binned_ns).label("oldest"))
        .select_from(o.join(r, r.c.id == o.c.repository_id))
        .where(o.c.binned_ns.is_not(None)).group_by(r.c.tenant_id))}
    valid = sa.and_(t.c.tenant_id.is_not(None), t.c.revoked_ns.is_(None),
                    sa.or_(t.c.expires_ns.is_(None), t.c.expires_ns > now_ns))
    active: dict[int, int] = dict(conn.execute(sa.select(t.c.tenant_id, sa.func.count()).where(valid)
                               .group_by(t.c.tenant_id)).all())
    return [TenantUsage(te, int(repos.get(te.id, 0)), int(binned.get(te.id, (0, None))[0]),
                        binned.get(te.id, (0, None))[1], int(active.get(te.id, 0)))
            for te in all_tenants(conn)]


def repository_usage(conn: Connection, tenant_id: int) -> list[RepositoryUsage]:
    """The tenant's repositories with their live and binned object counts and bytes, by name."""
    r, o = tables.repositories, tables.objects
    is_live = sa.and_(o.c.id.is_not(None), o.c.binned_ns.is_(None))  # (a repository without objects:
    live = sa.case((is_live, 1), else_=0)                              # one row of NULLs)
    live_bytes = sa.case((is_live, o.c.size), else_=0)
    binned = sa.case((o.c.binned_ns.is_not(None), 1), else_=0)
    binned_bytes = sa.case((o.c.binned_ns.is_not(None), o.c.size), else_=0)
    q = (sa.select(r.c.id, r.c.name, r.c.created_ns,
                   sa.func.coalesce(sa.func.sum(live), 0), sa.func.coalesce(sa.func.sum(live_bytes), 0),
                   sa.func.coalesce(sa.func.sum(binned), 0), sa.func.coalesce(sa.func.sum(binned_bytes), 0))
         .select_from(r.outerjoin(o, o.c.repository_id == r.c.id))
         .where(r.c.tenant_id == tenant_id).group_by(r.c.id, r.c.name, r.c.created_ns).order_by(r.c.name))
    return [RepositoryUsage(int(i), n, int(c), int(a), int(b), int(d), int(e))
            for i, n, c, a, b, d, e in conn.execute(q)]


def set_state(conn: Connection, tenant_id: int, state: str) -> str:
    """Put the tenant in `state` (one of STATES); its previous state."""
    if state not in STATES:
        raise UsageError(_("unknown tenant state {state}").format(state=state),
                         _("choose one of: {states}").format(states=", ".join(STATES)))
    te = tables.tenants
    before = conn.execute(sa.select(te.c.state).where(te.c.id == tenant_id)).scalar()
    if before is None:
        raise UsageError(_("no tenant with id {id}").format(id=tenant_id))
    conn.execute(te.update().where(te.c.id == tenant_id).values(state=state))
    return str(before)


KEEP = -1  # set_quota: leave this quota as it is


def set_quota(conn: Connection, tenant_id: int, soft: int | None = KEEP,
              hard: int | None = KEEP) -> tuple[tuple[int | None, int | None], tuple[int | None, int | None]]:
    """Change the soft and/or hard quota (bytes; None = no quota, KEEP = unchanged):
    ((soft, hard) before, (soft, hard) after). The soft quota must not be above the hard one.
    A quota below what the tenant already stores is allowed: uploads are then refused until
    the provider raises it or the tenant's data shrinks (binned bytes purged)."""
    te = tables.tenants
    row = conn.execute(db_lock(conn, sa.select(te.c.quota_soft, te.c.quota_hard)
                                     .where(te.c.id == tenant_id))).first()
    if row is None:
        raise UsageError(_("no tenant with id {id}").format(id=tenant_id))
    for value in (soft, hard):
        if value is not None and value != KEEP and value < 0:
            raise UsageError(_("a quota is a size of zero or more"))
    new_soft = row.quota_soft if soft == KEEP else soft
    new_hard = row.quota_hard if hard == KEEP else hard
    if new_soft is not None and new_hard is not None and new_soft > new_hard:
        raise UsageError(_("the soft quota must not be above the hard quota"))
    conn.execute(te.update().where(te.c.id == tenant_id).values(quota_soft=new_soft, quota_hard=new_hard))
    return (row.quota_soft, row.quota_hard), (new_soft, new_hard)


def db_lock(conn: Connection, select: Any) -> Any:
    """`select` locking its rows on PostgreSQL (SQLite's write transactions are serialized)."""
    return select.with_for_update() if conn.dialect.name == "postgresql" else select
