"""Tenants (pharmacies) and their repositories: names, states, quotas.

States: `active`; `read-only` (reads and restores only: a tenant leaving, or under
investigation); `disabled` (every token refused). Names are validated here, once."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    return [Tenant(**r._mapping) for r in conn.execute(sa.select(tables.tenants).order_by(tables.tenants.c.name))]


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
