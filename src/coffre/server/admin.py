"""The provider's operations, each written once and journaled: what `coffre server tenant |
token | recycle` (cli/server_admin.py) and the admin HTTP API (admin_api.py) both call, and
the JSON documents both give.

Every change is appended to the audit journal in the transaction that makes it (operation
`admin.<what>`, the detail saying what changed and the motive), in the tenant's chain, or the
provider's (audit.PROVIDER) for what names no tenant. Reads are counted in the read tally like
any other read. A motive is required where the provider touches a tenant's data or access:
disabling or making read-only, restoring or purging its recycle bin, revoking a token.
A token's secret is returned once to the caller and never written anywhere else: not in the
journal, not in a log, not in a listing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from coffre.core.errors import UsageError
from coffre.core.i18n import _
from coffre.server import audit, bin, metering, tenants, tokens
from coffre.server.context import ServerContext
from coffre.server.db import tables
from coffre.server.tenants import Tenant

MAX_MOTIVE = 1000


class Unknown(UsageError):
    """No such tenant, token or repository (404 over HTTP)."""


class Conflict(UsageError):
    """It exists already (409 over HTTP)."""


@dataclass(frozen=True)
class Actor:
    """Who asks: an admin token over HTTP (its id, the client's address), or the console."""

    token_id: str = ""
    client: str = ""


def console_actor() -> Actor:
    """The provider at this machine's console, named by its account."""
    from coffre.core import posix

    return Actor("", ("console:" + posix.current_user())[:64])


def check_motive(text: str | None, required: bool = True) -> str:
    """The motive as journaled: one line, at most MAX_MOTIVE characters."""
    motive = " ".join((text or "").split())
    if required and not motive:
        raise UsageError(_("a motive is required: it is recorded in the tenant's audit journal"),
                         _("say why with --motive, e.g. --motive \"ticket 4521: the pharmacy's "
                           "prune token was stolen\""))
    if len(motive) > MAX_MOTIVE:
        raise UsageError(_("the motive is longer than {n} characters").format(n=MAX_MOTIVE))
    return motive


def parse_moment(text: str, now_ns: int, *, ahead: bool, tz: str | None = None, option: str = "") -> int:
    """A time a provider typed (`--expires`, `--since`, a console form): a duration from now
    (ahead) or ago ("90d", "2d12h"), or a date with an optional time, in `tz` (else the
    machine's local time)."""
    from coffre.policy.retention import parse_duration

    text = text.strip()
    try:
        delta = parse_duration(text)
        return now_ns + delta if ahead else now_ns - delta
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        if option:
            raise UsageError(_("{option} {text}: neither a duration nor a date").format(
                option=option, text=repr(text)),
                _("e.g. 90d, 1y, 2027-06-30 or '2026-11-30 14:00'")) from None
        raise UsageError(_("{text}: neither a duration nor a date").format(text=repr(text)),
                         _("e.g. 90d, 1y, 2027-06-30 or 2026-11-30 14:00")) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(tz)) if tz else when.astimezone()
    return int(when.timestamp()) * 10**9


def detail(**fields: Any) -> str:
    return json.dumps({k: v for k, v in fields.items() if v is not None and v != ""},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _entry(actor: Actor, tenant_id: int, operation: str, count: int = 1, nbytes: int = 0,
           **fields: Any) -> audit.Entry:
    return audit.Entry(tenant_id, "admin." + operation, "ok", actor.token_id, actor.client, "",
                       count, nbytes, detail(**fields))


def _read(ctx: ServerContext, actor: Actor, tenant_id: int, operation: str) -> None:
    ctx.tally.add(tenant_id, actor.token_id, actor.client, "admin." + operation, "", 0)


def record_read(ctx: ServerContext, actor: Actor, tenant_id: int, operation: str) -> None:
    """Counts a read of a tenant's metadata that goes through no function here (the console's
    usage and audit pages and exports): journaled as `admin.OPERATION`, like the others."""
    _read(ctx, actor, tenant_id, operation)


def tenant_named(conn: sa.Connection, name: str) -> Tenant:
    found = tenants.by_name(conn, name)
    if found is None:
        raise Unknown(_("no tenant named {name}").format(name=repr(name)),
                      _("'coffre server tenant list' shows them"))
    return found


# -- JSON documents ----------------------------------------------------------------------------

def quota_state(t: Tenant) -> str:
    """ok, soft (at or above the soft quota: warned), hard (at or above the hard quota:
    uploads refused). Binned bytes count until purged."""
    used = t.stored_bytes + t.binned_bytes
    if t.quota_hard is not None and used >= t.quota_hard:
        return "hard"
    if t.quota_soft is not None and used >= t.quota_soft:
        return "soft"
    return "ok"


def tenant_json(t: Tenant) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "display_name": t.display_name, "contact": t.contact,
            "state": t.state, "created_ns": t.created_ns,
            "quota": {"soft": t.quota_soft, "hard": t.quota_hard, "state": quota_state(t)},
            "stored_bytes": t.stored_bytes, "binned_bytes": t.binned_bytes,
            "used_bytes": t.stored_bytes + t.binned_bytes}


def token_state(row: tokens.TokenRow, now_ns: int) -> str:
    if row.revoked_ns is not None:
        return "revoked"
    if row.expires_ns is not None and row.expires_ns <= now_ns:
        return "expired"
    return "active"


def token_json(row: tokens.TokenRow, now_ns: int) -> dict[str, Any]:
    return {"id": row.id, "tenant": row.tenant, "role": row.role, "label": row.label,
            "state": token_state(row, now_ns), "created_ns": row.created_ns,
            "expires_ns": row.expires_ns, "revoked_ns": row.revoked_ns,
            "last_used_ns": row.last_used_ns}


def outcome_json(out: bin.Outcome) -> dict[str, Any]:
    return {"objects": out.objects, "bytes": out.bytes, "already_gone": out.already_gone,
            "already_gone_bytes": out.already_gone_bytes, "failed": out.failed, "failure": out.failure,
            "missing_after_upload": out.missing_live}


# -- tenants -----------------------------------------------------------------------------------

def add_tenant(ctx: ServerContext, actor: Actor, name: str, display_name: str = "", contact: str = "",
               quota_soft: int | None = None, quota_hard: int | None = None) -> dict[str, Any]:
    tenants.check_tenant_name(name)
    now = ctx.clock.now_ns()
    with ctx.db.begin() as conn:
        if tenants.by_name(conn, name) is not None:
            raise Conflict(_("a tenant named {name} already exists").format(name=name))
        tenant_id = tenants.add(conn, name, now, display_name[:200], contact[:320], quota_soft, quota_hard)
        audit.append(ctx.db, conn, _entry(actor, tenant_id, "tenant.add", name=name,
                                          display_name=display_name[:200], quota_soft=quota_soft,
                                          quota_hard=quota_hard), now)
        t = tenants.by_id(conn, tenant_id)
    assert t is not None
    return tenant_json(t)


def list_tenants(ctx: ServerContext, actor: Actor) -> list[dict[str, Any]]:
    now = ctx.clock.now_ns()
    with ctx.db.read() as conn:
        rows = tenants.usage_listing(conn, now)
    _read(ctx, actor, audit.PROVIDER, "tenant.list")
    days = ctx.settings.recycle_days
    return [tenant_json(u.tenant) | {
        "repositories": u.repositories, "active_tokens": u.active_tokens,
        "bin": {"objects": u.binned_objects, "bytes": u.tenant.binned_bytes,
                "oldest_ns": u.oldest_binned_ns,
                "next_purge_ns": bin.purge_due_ns(u.oldest_binned_ns, days)
                if u.oldest_binned_ns is not None else None}} for u in rows]


def show_tenant(ctx: ServerContext, actor: Actor, name: str) -> dict[str, Any]:
    now = ctx.clock.now_ns()
    days = ctx.settings.recycle_days
    with ctx.db.read() as conn:
        t = tenant_named(conn, name)
        repos = tenants.repository_usage(conn, t.id)
        toks = tokens.listing(conn, t.id)
        binned = bin.summary(conn, t.id)
    _read(ctx, actor, t.id, "tenant.show")
    oldest = min((b.oldest_ns for b in binned), default=None)
    return tenant_json(t) | {
        "repositories": [{"name": r.name, "created_ns": r.created_ns, "objects": r.objects,
                          "bytes": r.bytes, "binned_objects": r.binned_objects,
                          "binned_bytes": r.binned_bytes} for r in repos],
        "tokens": [token_json(k, now) for k in toks],
        "bin": {"objects": sum(b.objects for b in binned), "bytes": t.binned_bytes,
                "oldest_ns": oldest, "recycle_days": days,
                "next_purge_ns": bin.purge_due_ns(oldest, days) if oldest is not None else None,
                "counts_against_quota": True},
    }


def set_state(ctx: ServerContext, actor: Actor, name: str, state: str, motive: str | None) -> dict[str, Any]:
    """active, read-only or disabled; a motive is required for the last two."""
    motive = check_motive(motive, required=state != "active")
    now = ctx.clock.now_ns()
    with ctx.db.begin() as conn:
        t = tenant_named(conn, name)
        before = tenants.set_state(conn, t.id, state)
        audit.append(ctx.db, conn, _entry(actor, t.id, "tenant.state", state=state, previous=before,
                                          motive=motive), now)
    return {"tenant": name, "state": state, "previous": before}


def set_quota(ctx: ServerContext, actor: Actor, name: str, soft: int | None = tenants.KEEP,
              hard: int | None = tenants.KEEP, motive: str | None = None) -> dict[str, Any]:
    """Change the soft and/or hard quota (bytes, None = none, tenants.KEEP = unchanged)."""
    motive = check_motive(motive, required=False)
    now = ctx.clock.now_ns()
    with ctx.db.begin() as conn:
        t = tenant_named(conn, name)
        before, after = tenants.set_quota(conn, t.id, soft, hard)
        audit.append(ctx.db, conn, audit.Entry(
            t.id, "admin.tenant.quota", "ok", actor.token_id, actor.client, "", 1, 0,
            json.dumps({"soft": after[0], "hard": after[1], "previous_soft": before[0],
                        "previous_hard": before[1], **({"motive": motive} if motive else {})},
                       sort_keys=True, separators=(",", ":"), ensure_ascii=False)), now)
        changed = tenants.by_id(conn, t.id)
    assert changed is not None
    return tenant_json(changed) | {"previous": {"soft": before[0], "hard": before[1]}}


# -- tokens ------------------------------------------------------------------------------------

def add_token(ctx: ServerContext, actor: Actor, tenant: str | None, role: str, label: str = "",
              expires_ns: int | None = None) -> tuple[dict[str, Any], str]:
    """A new token: its description, and the token itself (to give once, never stored)."""
    now = ctx.clock.now_ns()
    if expires_ns is not None and expires_ns <= now:
        raise UsageError(_("the expiry date is in the past"),
                         _("give a duration from now (90d, 1y) or a future date (2027-06-30)"))
    if expires_ns is not None and expires_ns >= 2**63:
        raise UsageError(_("the expiry date is too far in the future"),
                         _("give a date before the year 2262, or no expiry"))
    with ctx.db.begin() as conn:
        tenant_id = tenant_named(conn, tenant).id if tenant is not None else None
        token_id, secret = tokens.issue(conn, tenant_id, role, label[:200], now, expires_ns)
        audit.append(ctx.db, conn, _entry(
            actor, tenant_id if tenant_id is not None else audit.PROVIDER, "token.add",
            id=token_id, role=role, label=label[:200], expires_ns=expires_ns), now)
        row = next(r for r in tokens.listing(conn, tenant_id) if r.id == token_id)
    return token_json(row, now), secret


def list_tokens(ctx: ServerContext, actor: Actor, tenant: str | None = None) -> list[dict[str, Any]]:
    now = ctx.clock.now_ns()
    with ctx.db.read() as conn:
        if tenant is None:
            rows = tokens.listing(conn)
            where = audit.PROVIDER
        else:
            where = tenant_named(conn, tenant).id
            rows = tokens.listing(conn, where)
    _read(ctx, actor, where, "token.list")
    return [token_json(r, now) for r in rows]


def revoke_token(ctx: ServerContext, actor: Actor, token_id: str, motive: str | None) -> dict[str, Any]:
    motive = check_motive(motive)
    token_id = token_id.strip().lower()
    if token_id.startswith(tokens.PREFIX + "_"):  # a whole token pasted: its id only
        token_id = tokens.token_id_of(token_id) or token_id.split("_")[1]
    now = ctx.clock.now_ns()
    t = tables.tokens
    with ctx.db.begin() as conn:
        found = conn.execute(sa.select(t.c.tenant_id, t.c.revoked_ns).where(t.c.id == token_id)).first()
        if found is None:
            raise Unknown(_("no token with id {id}").format(id=repr(token_id)),
                          _("'coffre server token list' shows the ids"))
        tokens.revoke(conn, token_id, now)
        tenant_id = found.tenant_id if found.tenant_id is not None else audit.PROVIDER
        audit.append(ctx.db, conn, _entry(actor, tenant_id, "token.revoke", id=token_id, motive=motive,
                                          already=found.revoked_ns is not None or None), now)
        row = next(r for r in tokens.listing(conn, found.tenant_id) if r.id == token_id)
    return token_json(row, now)


# -- recycle bin -------------------------------------------------------------------------------

def binned_json(b: bin.Binned, days: int) -> dict[str, Any]:
    return {"repository": b.repository, "kind": b.kind, "name": b.name, "size": b.size,
            "received_ns": b.received_ns, "binned_ns": b.binned_ns, "binned_by": b.binned_by,
            "purge_due_ns": bin.purge_due_ns(b.binned_ns, days)}


def recycle_list(ctx: ServerContext, actor: Actor, tenant: str | None = None,
                 objects: bool = True) -> dict[str, Any]:
    """The bin per tenant and repository; with a tenant, each of its binned objects too."""
    days = ctx.settings.recycle_days
    with ctx.db.read() as conn:
        tenant_id = tenant_named(conn, tenant).id if tenant is not None else None
        rows = bin.summary(conn, tenant_id)
        items = bin.listing(conn, tenant_id) if tenant_id is not None and objects else None
    _read(ctx, actor, tenant_id if tenant_id is not None else audit.PROVIDER, "recycle.list")
    doc: dict[str, Any] = {
        "recycle_days": days,
        "repositories": [{"tenant": s.tenant, "repository": s.repository, "objects": s.objects,
                          "bytes": s.bytes, "oldest_ns": s.oldest_ns, "newest_ns": s.newest_ns,
                          "next_purge_ns": bin.purge_due_ns(s.oldest_ns, days)} for s in rows]}
    if items is not None:
        doc["objects"] = [binned_json(b, days) for b in items]
    return doc


def recycle_restore(ctx: ServerContext, actor: Actor, tenant: str, motive: str | None,
                    repository: str | None = None, since_ns: int | None = None,
                    until_ns: int | None = None) -> dict[str, Any]:
    motive = check_motive(motive)
    with ctx.db.read() as conn:
        t = tenant_named(conn, tenant)
        if repository is not None and tenants.repository_id(conn, t.id, repository) is None:
            raise Unknown(_("tenant {tenant} has no repository named {repo}").format(
                tenant=tenant, repo=repr(repository)))

    def entry(out: bin.Outcome) -> audit.Entry:
        return _entry(actor, t.id, "recycle.restore", out.objects, out.bytes, motive=motive,
                      repository=repository, since_ns=since_ns, until_ns=until_ns,
                      already_gone=out.already_gone or None)

    out = bin.restore(ctx, t.id, entry, repository, since_ns, until_ns)
    return {"tenant": tenant} | outcome_json(out)


def recycle_purge(ctx: ServerContext, actor: Actor, tenant: str, motive: str | None,
                  older_than_days: float | None = None) -> dict[str, Any]:
    """Purge the tenant's bin now (what was binned more than `older_than_days` ago, or all)."""
    motive = check_motive(motive)
    if older_than_days is not None and older_than_days < 0:
        raise UsageError(_("--older-than is a number of days, zero or more"))
    with ctx.db.read() as conn:
        t = tenant_named(conn, tenant)
    cutoff = (ctx.clock.now_ns() - int(older_than_days * bin.NS_PER_DAY)
              if older_than_days is not None else None)

    def entry(tenant_id: int, out: bin.Outcome) -> audit.Entry:
        return _entry(actor, tenant_id, "recycle.purge", out.objects + out.already_gone,
                      out.bytes + out.already_gone_bytes, motive=motive, older_than_days=older_than_days,
                      already_gone=out.already_gone or None)

    out = bin.purge(ctx, entry, t.id, binned_by_ns=cutoff, always_journal=True)
    return {"tenant": tenant} | outcome_json(out)


# -- usage -------------------------------------------------------------------------------------

def usage_report(ctx: ServerContext, actor: Actor, month: str | None = None) -> metering.MonthReport:
    """The month's usage report (metering.report; the current month by the server's clock by
    default), its reading journaled."""
    now = ctx.clock.now_ns()
    month = month or audit.day_of(now)[:7]
    metering.parse_month(month)
    report = metering.report(ctx.db, month, now)
    _read(ctx, actor, audit.PROVIDER, "usage")
    return report


def usage(ctx: ServerContext, actor: Actor, month: str | None = None) -> dict[str, Any]:
    """The month's usage report (metering.report), as `coffre server usage --json` prints it;
    the current month (by the server's clock) by default."""
    report = usage_report(ctx, actor, month)
    rows = []
    for r in report.rows:
        d = r.as_dict(json_ready=True)
        d.pop("month")
        rows.append(d)
    return {"month": report.month, "generated_ns": report.generated_ns, "complete": report.complete,
            "gb_bytes": metering.GB, "tenants": rows,
            "provider_audit": {"seq": report.provider_audit_seq, "head": report.provider_audit_head}}


# -- fleet alerts ------------------------------------------------------------------------------

def acknowledge_alert(ctx: ServerContext, actor: Actor, tenant: str, problem: str,
                      by: str) -> dict[str, Any]:
    """Record that `by` (a console account) has seen an open alert of the tenant (table
    fleet_alert_acks): it holds while the alert keeps its start; a problem that comes back
    after it cleared is a new alert. Journaled in the tenant's chain."""
    now = ctx.clock.now_ns()
    a, k = tables.fleet_alerts, tables.fleet_alert_acks
    with ctx.db.begin() as conn:
        t = tenant_named(conn, tenant)
        row = conn.execute(sa.select(a.c.since_ns, a.c.cleared_ns).where(
            a.c.tenant_id == t.id, a.c.problem == problem)).first()
        if row is None or row.cleared_ns is not None:
            raise Unknown(_("tenant {tenant} has no open alert {problem}").format(
                tenant=tenant, problem=repr(problem)))
        where = (k.c.tenant_id == t.id, k.c.problem == problem)
        before = conn.execute(sa.select(k.c.since_ns, k.c.acknowledged_by).where(*where)).first()
        if before is not None and before.since_ns == row.since_ns:
            raise Conflict(_("this alert was acknowledged already, by {name}").format(
                name=before.acknowledged_by))
        conn.execute(k.delete().where(*where))
        conn.execute(k.insert().values(tenant_id=t.id, problem=problem, since_ns=row.since_ns,
                                       acknowledged_ns=now, acknowledged_by=by[:64]))
        audit.append(ctx.db, conn, _entry(actor, t.id, "alert.ack", problem=problem,
                                          since_ns=int(row.since_ns), by=by[:64]), now)
    return {"tenant": tenant, "problem": problem, "since_ns": int(row.since_ns),
            "acknowledged_ns": now, "acknowledged_by": by[:64]}
