"""Bearer tokens: issued at random (256 bits), shown once, stored as SHA-256, compared in
constant time, with an optional expiry; revoked tokens stay listed.

A token reads `cft_<id>_<secret>`: the id (public, in lists and the audit journal) finds the
row, the secret is checked against the stored hash. Nothing about a refused token beyond its
id reaches a log or an error."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from coffre.core.errors import UsageError
from coffre.core.i18n import _
from coffre.server.db import tables
from coffre.server.roles import ROLES, Principal

PREFIX = "cft"
_FORM = re.compile(r"^cft_([a-z2-7]{16})_([A-Za-z0-9_-]{43})$")


class Unauthorized(Exception):
    """A request without a valid token. `reason` (missing, malformed, unknown, revoked,
    expired, disabled) goes to the audit journal; the client only learns it was refused."""

    def __init__(self, reason: str, token_id: str = "", tenant_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.token_id = token_id
        self.tenant_id = tenant_id


@dataclass(frozen=True)
class TokenRow:
    id: str
    tenant: str | None
    role: str
    label: str
    created_ns: int
    expires_ns: int | None
    revoked_ns: int | None
    last_used_ns: int | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def issue(conn: Connection, tenant_id: int | None, role: str, label: str, now_ns: int,
          expires_ns: int | None = None) -> tuple[str, str]:
    """A new token: (its id, the whole token to give the user once)."""
    if role not in ROLES:
        raise UsageError(_("unknown role {role}").format(role=role),
                         _("choose one of: {roles}").format(roles=", ".join(ROLES)))
    if (role == "admin") != (tenant_id is None):
        raise UsageError(_("an admin token belongs to no tenant; every other token to one tenant"))
    token_id = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    conn.execute(tables.tokens.insert().values(
        id=token_id, tenant_id=tenant_id, role=role, label=label, secret_sha256=_digest(secret),
        created_ns=now_ns, expires_ns=expires_ns))
    return token_id, f"{PREFIX}_{token_id}_{secret}"


def token_id_of(token: str) -> str:
    """The public id inside a token (empty if it is malformed): for logs."""
    m = _FORM.match(token)
    return m.group(1) if m else ""


def authenticate(conn: Connection, authorization: str | None, now_ns: int) -> Principal:
    """The principal an Authorization header names, or Unauthorized."""
    if not authorization:
        raise Unauthorized("missing")
    scheme, _sep, token = authorization.partition(" ")
    m = _FORM.match(token.strip()) if scheme.lower() == "bearer" else None
    if m is None:
        raise Unauthorized("malformed")
    token_id, secret = m.groups()
    t, te = tables.tokens, tables.tenants
    row = conn.execute(
        sa.select(t.c.secret_sha256, t.c.role, t.c.tenant_id, t.c.expires_ns, t.c.revoked_ns,
                  te.c.name, te.c.state)
        .select_from(t.outerjoin(te, te.c.id == t.c.tenant_id))
        .where(t.c.id == token_id)).first()
    # Compare even when the id is unknown, so timing does not tell ids apart.
    stored = row.secret_sha256 if row is not None else "0" * 64
    if not hmac.compare_digest(stored, _digest(secret)) or row is None:
        raise Unauthorized("unknown", token_id)
    if row.revoked_ns is not None:
        raise Unauthorized("revoked", token_id, row.tenant_id)
    if row.expires_ns is not None and row.expires_ns <= now_ns:
        raise Unauthorized("expired", token_id, row.tenant_id)
    if row.tenant_id is not None and row.state == "disabled":
        raise Unauthorized("disabled", token_id, row.tenant_id)
    return Principal(token_id=token_id, role=row.role, tenant_id=row.tenant_id,
                     tenant_name=row.name, tenant_state=row.state)


def touch(conn: Connection, token_id: str, now_ns: int) -> None:
    """Record the token's last use (callers do it at most once a minute per token)."""
    conn.execute(tables.tokens.update().where(tables.tokens.c.id == token_id)
                 .values(last_used_ns=now_ns))


def revoke(conn: Connection, token_id: str, now_ns: int) -> bool:
    """Revoke a token; False if there is no such token. Revoking twice keeps the first time."""
    t = tables.tokens
    found = conn.execute(sa.select(t.c.revoked_ns).where(t.c.id == token_id)).first()
    if found is None:
        return False
    if found.revoked_ns is None:
        conn.execute(t.update().where(t.c.id == token_id).values(revoked_ns=now_ns))
    return True


def listing(conn: Connection, tenant_id: int | None = None) -> list[TokenRow]:
    """Tokens (never their secrets), of one tenant or all, oldest first."""
    t, te = tables.tokens, tables.tenants
    q = (sa.select(t.c.id, te.c.name, t.c.role, t.c.label, t.c.created_ns, t.c.expires_ns,
                   t.c.revoked_ns, t.c.last_used_ns)
         .select_from(t.outerjoin(te, te.c.id == t.c.tenant_id)).order_by(t.c.created_ns, t.c.id))
    if tenant_id is not None:
        q = q.where(t.c.tenant_id == tenant_id)
    return [TokenRow(*r) for r in conn.execute(q)]
