"""The provider's console accounts: a name, a role (viewer, operator, admin), a password
hashed with Argon2id (argon2-cffi) and a TOTP second factor (pyotp; RFC 6238: 30-second
steps, 6 digits, the step before and after accepted for clocks that drift, and never the same
code twice: the last accepted step is kept and a code of that step or an earlier one is
refused). Kept in the server's metadata database (table `provider_accounts`), so every
instance of a scaled-out server knows them.

Every change (add, disable, enable, password, TOTP reset) and every login, accepted or
refused, is appended to the provider's audit chain (audit.PROVIDER) with the account acting,
the name concerned and, for a refusal, why (unknown, disabled, password, code, replay) —
never a typed password or code. The check runs Argon2 also for an unknown or disabled name,
so the time taken does not tell which names exist.
"""

from __future__ import annotations

import hmac
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pyotp
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.engine import Connection

from coffre.core.errors import UsageError
from coffre.core.i18n import _
from coffre.server import audit
from coffre.server.admin import Actor, Conflict, Unknown, check_motive, detail
from coffre.server.context import ServerContext
from coffre.server.db import tables

ROLES = ("viewer", "operator", "admin")  # as web/hosted/app.py ROLES
STEP_S = 30
DIGITS = 6
WINDOW = 1                 # steps accepted before and after the current one
MIN_PASSWORD = 12
ISSUER = "Coffre"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
NS = 1_000_000_000


@cache
def hasher() -> PasswordHasher:
    """Argon2id with argon2-cffi's defaults (RFC 9106's second recommendation: 64 MiB, t=3)."""
    return PasswordHasher()


@cache
def _decoy() -> str:
    """A hash verified when the name is unknown, so that a refusal costs the same time."""
    return hasher().hash("decoy password that matches nothing")


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    created_ns: int
    changed_ns: int
    disabled_ns: int | None
    last_login_ns: int | None

    @property
    def active(self) -> bool:
        return self.disabled_ns is None


@dataclass(frozen=True)
class Enrolment:
    """What the new holder of an account types into an authenticator app, shown once."""

    secret: str    # base32
    uri: str       # otpauth://totp/...


@dataclass(frozen=True)
class Verdict:
    """The outcome of a login: the account (None when refused) and why it was refused."""

    account: Account | None
    reason: str = ""  # "" | unknown | disabled | password | code | replay | malformed


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(_("invalid account name {name}").format(name=repr(name)),
                         _("lower-case letters, digits and . _ @ -, at most 64 characters"))
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise UsageError(_("unknown role {role}").format(role=role),
                         _("choose one of: {roles}").format(roles=", ".join(ROLES)))
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UsageError(_("the password is shorter than {n} characters").format(n=MIN_PASSWORD),
                         _("choose a longer one: a sentence is easier to remember"))
    if len(password) > 1024:
        raise UsageError(_("the password is longer than 1024 characters"))
    return password


def enrolment(name: str, secret: str) -> Enrolment:
    return Enrolment(secret, pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S).provisioning_uri(
        name=name, issuer_name=ISSUER))


def _account(row: Any) -> Account:
    return Account(row.name, row.role, int(row.created_ns), int(row.changed_ns),
                   None if row.disabled_ns is None else int(row.disabled_ns),
                   None if row.last_login_ns is None else int(row.last_login_ns))


def _journal(ctx: ServerContext, conn: Connection, actor: Actor, operation: str, now_ns: int,
             outcome: str = "ok", **fields: Any) -> None:
    audit.append(ctx.db, conn, audit.Entry(audit.PROVIDER, operation, outcome, actor.token_id,
                                           actor.client, "", 1, 0, detail(**fields)), now_ns)


def _find(conn: Connection, name: str, lock: Callable[[Any], Any] | None = None) -> Any:
    a = tables.provider_accounts
    q = sa.select(a).where(a.c.name == name)
    row = conn.execute(lock(q) if lock is not None else q).first()
    if row is None:
        raise Unknown(_("no console account named {name}").format(name=repr(name)),
                      _("'coffre server account list' shows them"))
    return row


# -- management --------------------------------------------------------------------------------

def add(ctx: ServerContext, actor: Actor, name: str, role: str, password: str) -> tuple[Account, Enrolment]:
    """A new account; its TOTP enrolment, to show once."""
    check_name(name)
    check_role(role)
    check_password(password)
    hashed = hasher().hash(password)
    secret = pyotp.random_base32()
    now = ctx.clock.now_ns()
    a = tables.provider_accounts
    with ctx.db.begin() as conn:
        if conn.execute(sa.select(a.c.name).where(a.c.name == name)).first() is not None:
            raise Conflict(_("a console account named {name} already exists").format(name=name))
        conn.execute(a.insert().values(name=name, role=role, password_hash=hashed, totp_secret=secret,
                                       totp_last_step=None, created_ns=now, changed_ns=now,
                                       disabled_ns=None, last_login_ns=None))
        _journal(ctx, conn, actor, "admin.account.add", now, name=name, role=role)
        account = _account(_find(conn, name))
    return account, enrolment(name, secret)


def listing(ctx: ServerContext) -> list[Account]:
    a = tables.provider_accounts
    with ctx.db.read() as conn:
        return [_account(r) for r in conn.execute(sa.select(a).order_by(a.c.name))]


def get(ctx: ServerContext, name: str) -> Account | None:
    a = tables.provider_accounts
    with ctx.db.read() as conn:
        row = conn.execute(sa.select(a).where(a.c.name == name)).first()
    return None if row is None else _account(row)


def disable(ctx: ServerContext, actor: Actor, name: str, motive: str | None) -> Account:
    """Refuse every login of the account; its open sessions end at their next request."""
    motive = check_motive(motive)
    now = ctx.clock.now_ns()
    a = tables.provider_accounts
    with ctx.db.begin() as conn:
        row = _find(conn, name, ctx.db.for_update)
        if row.disabled_ns is None:
            conn.execute(a.update().where(a.c.name == name).values(disabled_ns=now, changed_ns=now))
        _journal(ctx, conn, actor, "admin.account.disable", now, name=name, motive=motive,
                 already=row.disabled_ns is not None or None)
        return _account(_find(conn, name))


def enable(ctx: ServerContext, actor: Actor, name: str, motive: str | None = None) -> Account:
    motive = check_motive(motive, required=False)
    now = ctx.clock.now_ns()
    a = tables.provider_accounts
    with ctx.db.begin() as conn:
        _find(conn, name, ctx.db.for_update)
        conn.execute(a.update().where(a.c.name == name).values(disabled_ns=None, changed_ns=now))
        _journal(ctx, conn, actor, "admin.account.enable", now, name=name, motive=motive)
        return _account(_find(conn, name))


def set_password(ctx: ServerContext, actor: Actor, name: str, password: str) -> Account:
    """A new password; the account's open sessions end."""
    check_password(password)
    hashed = hasher().hash(password)
    now = ctx.clock.now_ns()
    a = tables.provider_accounts
    with ctx.db.begin() as conn:
        _find(conn, name, ctx.db.for_update)
        conn.execute(a.update().where(a.c.name == name).values(password_hash=hashed, changed_ns=now))
        _journal(ctx, conn, actor, "admin.account.password", now, name=name)
        return _account(_find(conn, name))


def reset_totp(ctx: ServerContext, actor: Actor, name: str) -> Enrolment:
    """A new TOTP secret (a lost phone); the old codes stop working, open sessions end."""
    secret = pyotp.random_base32()
    now = ctx.clock.now_ns()
    a = tables.provider_accounts
    with ctx.db.begin() as conn:
        _find(conn, name, ctx.db.for_update)
        conn.execute(a.update().where(a.c.name == name).values(totp_secret=secret, totp_last_step=None,
                                                               changed_ns=now))
        _journal(ctx, conn, actor, "admin.account.totp", now, name=name)
    return enrolment(name, secret)


# -- login -------------------------------------------------------------------------------------

def _matching_step(secret: str, code: str, now_s: float) -> int | None:
    """The step (of now-1, now, now+1) whose code is `code`, compared in constant time."""
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S)
    current = int(now_s // STEP_S)
    found = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        if hmac.compare_digest(totp.at(step * STEP_S).encode(), code.encode()):
            found = step if found is None else found
    return found


def verify(ctx: ServerContext, name: str, password: str, code: str) -> Verdict:
    """Check a login (nothing journaled: `login` does). Argon2 runs whatever the name."""
    a = tables.provider_accounts
    name = name.strip()
    code = "".join(code.split())
    with ctx.db.read() as conn:
        row = conn.execute(sa.select(a).where(a.c.name == name)).first() if _NAME.match(name) else None
    stored = row.password_hash if row is not None else _decoy()
    try:
        good: bool = hasher().verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        good = False
    if row is None:
        return Verdict(None, "unknown")
    if not good:
        return Verdict(None, "password")
    if row.disabled_ns is not None:
        return Verdict(None, "disabled")
    if not (len(code) == DIGITS and code.isdigit()):
        return Verdict(None, "code")
    now_ns = ctx.clock.now_ns()
    step = _matching_step(row.totp_secret, code, now_ns / NS)
    if step is None:
        return Verdict(None, "code")
    rehash = hasher().check_needs_rehash(row.password_hash)
    with ctx.db.begin() as conn:  # the step taken under the row's lock: two logins, one code
        fresh = _find(conn, name, ctx.db.for_update)
        if fresh.totp_secret != row.totp_secret or fresh.password_hash != row.password_hash \
                or fresh.disabled_ns is not None:
            return Verdict(None, "changed")
        if fresh.totp_last_step is not None and step <= int(fresh.totp_last_step):
            return Verdict(None, "replay")
        values: dict[str, Any] = {"totp_last_step": step, "last_login_ns": now_ns}
        if rehash:
            values["password_hash"] = hasher().hash(password)
        conn.execute(a.update().where(a.c.name == name).values(**values))
        account = _account(_find(conn, name))
    return Verdict(account)


def login(ctx: ServerContext, fields: dict[str, str], address: str) -> Verdict:
    """`verify`, with a refusal journaled (the name as typed, cut to 64 characters; the
    reason; never the password or the code)."""
    name = fields.get("user", "")
    verdict = verify(ctx, name, fields.get("password", ""), fields.get("code", ""))
    if verdict.account is None:
        journal_login(ctx, name, address, verdict.reason)
    return verdict


def journal_login(ctx: ServerContext, name: str, address: str, refused: str = "") -> None:
    """`console.login` in the provider's chain: ok, or refused with why."""
    now = ctx.clock.now_ns()
    actor = Actor("", ("console:" + (name or "-") + "@" + address)[:64])
    with ctx.db.begin() as conn:
        _journal(ctx, conn, actor, "console.login", now, "refused" if refused else "ok",
                 name=name[:64], reason=refused or None)


class Revocations:
    """Which accounts' sessions must end: disabled, or changed (password, TOTP, state) after
    the session began. Reads the whole (small) accounts table at most every `ttl_s`."""

    def __init__(self, ctx: ServerContext, ttl_s: float = 2.0) -> None:
        self.ctx, self.ttl_s = ctx, ttl_s
        self._lock = threading.Lock()
        self._read_at = -1e18
        self._states: dict[str, tuple[int | None, int]] = {}

    def _current(self, fresh: bool = False) -> dict[str, tuple[int | None, int]]:
        now = time.monotonic()
        with self._lock:
            if fresh or now - self._read_at >= self.ttl_s:
                a = tables.provider_accounts
                with self.ctx.db.read() as conn:
                    self._states = {r.name: (r.disabled_ns, int(r.changed_ns)) for r in conn.execute(
                        sa.select(a.c.name, a.c.disabled_ns, a.c.changed_ns))}
                self._read_at = now
            return self._states

    def ended(self, name: str, session_created_s: float) -> bool:
        state = self._current().get(name)
        if state is None:  # an account added since the last read is not a removed one
            state = self._current(fresh=True).get(name)
        if state is None:
            return True
        disabled, changed = state
        return disabled is not None or changed > session_created_s * NS
