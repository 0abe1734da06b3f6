"""A tenant in the provider's console: `/tenants/NAME` and its tabs.

    GET  /tenants/NAME                   light and reasons, state, repositories, quota   (viewer)
    POST /tenants/NAME/state             {state, motive}                                  (operator)
    POST /tenants/NAME/quota             {soft, hard, motive?}: "50GiB", "" = none        (operator)
    GET  /tenants/NAME/usage             stored bytes per day (plot), GB-month per month  (viewer)
    GET  /tenants/NAME/usage.csv?month=  this tenant's line of `coffre server usage --csv` (viewer)
    GET  /tenants/NAME/tokens            the tokens; a new one's secret shown once        (viewer)
    POST /tenants/NAME/tokens            {role, label, expires}                           (operator)
    POST /tenants/NAME/tokens/ID/revoke  {motive}                                         (operator)
    GET  /tenants/NAME/bin               the recycle bin per repository, its objects      (viewer)
    POST /tenants/NAME/bin/restore       {motive, repository?, since?}                    (operator)
    POST /tenants/NAME/bin/purge         {motive, older_than?, confirm?}: asks first      (admin)
    GET  /tenants/NAME/audit?before=SEQ  the journal, newest first; verification          (viewer)
    POST /tenants/NAME/audit/verify      verify the chain now                             (viewer)
    GET  /tenants/NAME/audit.jsonl?from=&to=  `coffre server audit export`, streamed      (viewer)

Every change goes through `coffre.server.admin`, as the CLI and the admin API do, with the
account as the actor (`console:NAME@ADDRESS`): it is journaled in the tenant's chain in the
transaction that makes it. A new token's secret is kept in the server-side session for the
one page that shows it, never in a cookie, a log or a URL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from coffre.core.errors import UsageError
from coffre.core.human import human_size
from coffre.core.i18n import _, language, locale_name, ngettext
from coffre.core.sizes import parse_size
from coffre.server import admin, audit, bin, fleet, fleet_texts, metering, tenants
from coffre.web.guard import form_of
from coffre.web.hosted.app import ACT, ADMIN, READ, ConsoleKit
from coffre.web.hosted.tenant_contexts import (
    AuditPage,
    AuditRow,
    BinObject,
    BinPage,
    BinRepository,
    MonthRow,
    NewToken,
    PurgeConfirmPage,
    QuotaView,
    RepositoryRow,
    TenantHead,
    TenantPage,
    TokensPage,
    TokenView,
    UsagePage,
    Verification,
)
from coffre.web.plots import fit, line_plot
from coffre.web.security import session_of
from coffre.web.urls import segment

NS = 1_000_000_000
DAY_NS = 86_400 * NS
TOKEN_ROLES = ("backup", "prune", "read")
AUDIT_PAGE = 50
BIN_PAGE = 200
PLOT_DAYS = 183
MONTHS_SHOWN = 12
NEW_TOKEN_KEY = "console-tenant.new-token"  # noqa: S105 - a key of session.data, no secret
VERIFY_KEY = "console-tenant.verifications"


def state_label(state: str) -> str:
    return {"active": _("active"), "read-only": _("read-only"), "disabled": _("disabled")}.get(state, state)


def role_label(role: str) -> str:
    return {"backup": _("backup: adds, never deletes"), "prune": _("prune: also deletes (into the bin)"),
            "read": _("read: restores only")}.get(role, role)


def token_state_label(state: str) -> str:
    return {"active": _("valid"), "revoked": _("revoked"), "expired": _("expired")}.get(state, state)


def size_input(n: int | None) -> str:
    """A size as it can be typed back into the form (`parse_size` reads it): "40GiB"."""
    if n is None:
        return ""
    if n == 0:
        return "0"
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024),
                         ("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def quota_input(text: str, what: str) -> int | None:
    """A quota typed in the form: a size ("50G", "40GiB"); empty or "none" for no quota."""
    text = text.strip()
    if not text or text.lower() in ("none", "aucun", "-"):
        return None
    return parse_size(text, what)


def month_label(month: str) -> str:
    from babel.dates import format_date

    year, mon = metering.parse_month(month)
    return str(format_date(date(year, mon, 1), format="MMMM y", locale=locale_name()))


def short_day(ts: float, tz: str) -> str:
    from babel.dates import format_date

    return str(format_date(datetime.fromtimestamp(ts, UTC).astimezone(ZoneInfo(tz)).date(),
                           format="d MMM", locale=locale_name()))


def months_back(now_ns: int, created_ns: int, n: int = MONTHS_SHOWN) -> list[str]:
    """YYYY-MM of the last `n` months (this one first), not before the tenant's creation."""
    first = audit.day_of(created_ns)[:7]
    year, mon = (int(x) for x in audit.day_of(now_ns)[:7].split("-"))
    out = []
    for _i in range(n):
        month = f"{year:04d}-{mon:02d}"
        if month < first:
            break
        out.append(month)
        year, mon = (year, mon - 1) if mon > 1 else (year - 1, 12)
    return out


def valid_day(text: str) -> str:
    try:
        if len(text) == 10:
            return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    raise UsageError(_("{text} is not a day").format(text=repr(text)),
                     _("write it as YYYY-MM-DD, e.g. 2026-11-30"))


def error_text(exc: UsageError) -> str:
    """A refusal as the console says it: the message, and its hint unless the hint is about
    the command line's options (a motive "with --motive")."""
    if exc.hint and "--" not in exc.hint:
        return exc.message + " — " + exc.hint
    return exc.message


def routes(kit: ConsoleKit) -> list[BaseRoute]:
    ctx = kit.ctx
    verifications: dict[int, Verification] = {}
    verify_lock = threading.Lock()
    kit.extras[VERIFY_KEY] = verifications

    def tz() -> str:
        return kit.pages.tz()

    def path(name: str, tail: str = "") -> str:
        return "/tenants/" + segment(name) + tail

    def not_found(request: Request, name: str) -> Response:
        return kit.guard.message(request, _("There is no tenant named {name}.").format(name=name), 404)

    def head(t: tenants.Tenant, tab: str) -> TenantHead:
        with ctx.db.read() as conn:
            risks = fleet.assess(conn, ctx.clock.now_ns(), t.id)
        light = risks[0].light if risks else fleet.GREEN
        return TenantHead(t.name, path(t.name), t.display_name, t.contact, t.state, state_label(t.state),
                          light, fleet_texts.light_word(light, language()), tab)

    def tenant(name: str) -> tenants.Tenant | None:
        with ctx.db.read() as conn:
            return tenants.by_name(conn, name)

    def title(t: tenants.Tenant, what: str) -> str:
        return f"{what} — {t.display_name or t.name}"

    def page(handler: Callable[[Request, tenants.Tenant], Response]) -> Callable[[Request], Response]:
        """The handler with the tenant the path names (404 when there is none)."""

        def run(request: Request) -> Response:
            name = request.path_params["tenant"]
            t = tenant(name)
            if t is None:
                return not_found(request, name)
            return handler(request, t)

        return run

    def acted(request: Request, t: tenants.Tenant, tail: str, action: Callable[[], str]) -> Response:
        """Run `action` (returns the message to show), then back to the tab (post-redirect-get)."""
        s = session_of(request)
        try:
            said = action()
            level = "ok"
        except UsageError as exc:
            said, level = error_text(exc), "error"
        if s is not None:
            s.flash(said, level)
        return kit.guard.redirect(path(t.name, tail))

    # -- the tenant -------------------------------------------------------------------------

    def overview(request: Request, t: tenants.Tenant) -> Response:
        now = ctx.clock.now_ns()
        doc = admin.show_tenant(ctx, kit.actor(request), t.name)
        with ctx.db.read() as conn:
            risks = fleet.assess(conn, now, t.id)
        risk = risks[0] if risks else None
        lang = language()
        reasons = tuple(fleet_texts.reason_text(r, lang, tz()) for r in risk.reasons) if risk else ()
        used = t.stored_bytes + t.binned_bytes
        share = min(999, round(100 * used / t.quota_hard)) if t.quota_hard else None
        quota = QuotaView(t.quota_soft, t.quota_hard, t.stored_bytes, t.binned_bytes, used,
                          admin.quota_state(t), share,
                          size_input(t.quota_soft), size_input(t.quota_hard))
        repos = tuple(RepositoryRow(r["name"], r["created_ns"] / NS, r["objects"], r["bytes"],
                                    r["binned_objects"], r["binned_bytes"]) for r in doc["repositories"])
        return kit.pages.render(request, "hosted/tenant.html", TenantPage(
            title=title(t, _("Tenant")), tenant=head(t, "tenant"), reasons=reasons,
            last_report=risk.last_report_ns / NS if risk and risk.last_report_ns else None,
            created=t.created_ns / NS, states=tuple((s, state_label(s)) for s in tenants.STATES),
            repositories=repos, quota=quota, bin_objects=doc["bin"]["objects"], bin_bytes=doc["bin"]["bytes"],
            active_tokens=sum(1 for k in doc["tokens"] if k["state"] == "active")))

    def set_state(request: Request, t: tenants.Tenant) -> Response:
        form = form_of(request)

        def action() -> str:
            state = form.get("state", "")
            if state not in tenants.STATES:
                raise UsageError(_("unknown tenant state {state}").format(state=state))
            done = admin.set_state(ctx, kit.actor(request), t.name, state, form.get("motive"))
            return _("The tenant is now {state} (it was {previous}).").format(
                state=state_label(done["state"]), previous=state_label(done["previous"]))

        return acted(request, t, "", action)

    def set_quota(request: Request, t: tenants.Tenant) -> Response:
        form = form_of(request)

        def action() -> str:
            soft = quota_input(form.get("soft", ""), _("soft quota"))
            hard = quota_input(form.get("hard", ""), _("hard quota"))
            admin.set_quota(ctx, kit.actor(request), t.name, soft, hard, form.get("motive"))
            none = _("no quota")
            return _("Quotas set: soft {soft}, hard {hard}.").format(
                soft=human_size(soft) if soft is not None else none,
                hard=human_size(hard) if hard is not None else none)

        return acted(request, t, "", action)

    # -- usage ------------------------------------------------------------------------------

    def usage(request: Request, t: tenants.Tenant) -> Response:
        now = ctx.clock.now_ns()
        admin.record_read(ctx, kit.actor(request), t.id, "usage")
        with ctx.db.read() as conn:
            days = metering.samples(conn, t.id, audit.day_of(now - PLOT_DAYS * DAY_NS))
        zone = tz()

        def at(day: str) -> float:
            return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()

        stored = [(at(d.day), float(d.stored_bytes)) for d in days]
        binned = [(at(d.day), float(d.binned_bytes)) for d in days if d.binned_bytes]
        recent = [(ts, v) for ts, v in stored if ts >= now / NS - 60 * 86400]
        trend = fit(recent, limit=t.quota_hard) if t.quota_hard else fit(recent)
        reached = trend.reaches_limit_at if trend is not None else None
        if reached is not None and not now / NS < reached < now / NS + 3 * 365 * 86400:
            reached = None
        plot = line_plot(_("Stored bytes per day (blue), in the recycle bin (purple)"), stored,
                         lambda v: human_size(v), lambda ts: short_day(ts, zone), second=binned,
                         limit=float(t.quota_hard) if t.quota_hard else None, trend=trend,
                         until=reached) if stored else line_plot("", [], str, str)
        months = []
        for month in months_back(now, t.created_ns):
            rows = metering.report(ctx.db, month, now, t.id).rows
            if not rows:
                continue
            r = rows[0]
            months.append(MonthRow(month, month_label(month), r.days_counted == r.days_in_month,
                                   str(r.gb_month), r.peak_stored_bytes, r.stored_bytes_end,
                                   str(r.binned_gb_month), r.uploads, r.uploaded_bytes, r.downloads,
                                   r.downloaded_bytes))
        return kit.pages.render(request, "hosted/tenant_usage.html", UsagePage(
            title=title(t, _("Usage")), tenant=head(t, "usage"), plot=plot, samples=len(stored),
            since=stored[0][0] if stored else None, quota_reached=reached, months=tuple(months)))

    def usage_csv(request: Request, t: tenants.Tenant) -> Response:
        now = ctx.clock.now_ns()
        month = request.query_params.get("month") or audit.day_of(now)[:7]
        try:
            metering.parse_month(month)
        except UsageError as exc:
            return kit.guard.message(request, exc.message, 400)
        admin.record_read(ctx, kit.actor(request), t.id, "usage.export")
        text = metering.csv_text(metering.report(ctx.db, month, now, t.id).rows)
        return Response(text.encode("utf-8"), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="usage-{t.name}-{month}.csv"'})

    # -- tokens -----------------------------------------------------------------------------

    def tokens_page(request: Request, t: tenants.Tenant) -> Response:
        docs = admin.list_tokens(ctx, kit.actor(request), t.name)
        s = session_of(request)
        shown = s.data.pop(NEW_TOKEN_KEY, None) if s is not None else None  # once, then gone
        new = NewToken(shown["id"], shown["role"], shown["secret"]) \
            if isinstance(shown, dict) and shown.get("tenant") == t.name else None
        views = tuple(TokenView(d["id"], d["role"], role_label(d["role"]), d["label"], d["state"],
                                token_state_label(d["state"]), d["created_ns"] / NS,
                                d["last_used_ns"] / NS if d["last_used_ns"] else None,
                                d["expires_ns"] / NS if d["expires_ns"] else None,
                                d["revoked_ns"] / NS if d["revoked_ns"] else None)
                      for d in sorted(docs, key=lambda d: (d["state"] != "active", -d["created_ns"])))
        return kit.pages.render(request, "hosted/tenant_tokens.html", TokensPage(
            title=title(t, _("Tokens")), tenant=head(t, "tokens"), tokens=views,
            roles=tuple((r, role_label(r)) for r in TOKEN_ROLES), new_token=new))

    def add_token(request: Request, t: tenants.Tenant) -> Response:
        form = form_of(request)

        def action() -> str:
            role = form.get("role", "")
            if role not in TOKEN_ROLES:
                raise UsageError(_("unknown role {role}").format(role=role))
            expires_text = form.get("expires", "").strip()
            expires = (admin.parse_moment(expires_text, ctx.clock.now_ns(), ahead=True, tz=tz())
                       if expires_text else None)
            label = form.get("label", "").strip()
            doc, secret = admin.add_token(ctx, kit.actor(request), t.name, role, label, expires)
            s = session_of(request)
            if s is not None:
                s.data[NEW_TOKEN_KEY] = {"tenant": t.name, "id": doc["id"], "role": role, "secret": secret}
            return _("Token {id} created: give it to the pharmacy now, it is shown only once.").format(
                id=doc["id"])

        return acted(request, t, "/tokens", action)

    def revoke_token(request: Request, t: tenants.Tenant) -> Response:
        form = form_of(request)
        token_id = request.path_params["id"]

        def action() -> str:
            mine = {d["id"] for d in admin.list_tokens(ctx, kit.actor(request), t.name)}
            if token_id not in mine:
                raise admin.Unknown(_("this tenant has no token {id}").format(id=token_id))
            admin.revoke_token(ctx, kit.actor(request), token_id, form.get("motive"))
            return _("Token {id} revoked: the server refuses it from now on.").format(id=token_id)

        return acted(request, t, "/tokens", action)

    # -- recycle bin ------------------------------------------------------------------------

    def bin_page(request: Request, t: tenants.Tenant) -> Response:
        doc = admin.recycle_list(ctx, kit.actor(request), t.name, objects=False)
        days = int(doc["recycle_days"])
        with ctx.db.read() as conn:
            items = bin.listing(conn, t.id, limit=BIN_PAGE)
            names = tuple(n for _i, n in tenants.repositories_of(conn, t.id))
        repos = tuple(BinRepository(r["repository"], r["objects"], r["bytes"], r["oldest_ns"] / NS,
                                    r["newest_ns"] / NS, r["next_purge_ns"] / NS)
                      for r in doc["repositories"])
        total = sum(r.objects for r in repos)
        objects = tuple(BinObject(b.repository, b.kind, b.name, b.size, b.binned_ns / NS, b.binned_by,
                                  bin.purge_due_ns(b.binned_ns, days) / NS) for b in items)
        return kit.pages.render(request, "hosted/tenant_bin.html", BinPage(
            title=title(t, _("Recycle bin")), tenant=head(t, "bin"), recycle_days=days,
            held=t.state != "active",
            repositories=repos, objects=objects, more=max(0, total - len(objects)), total_objects=total,
            total_bytes=sum(r.bytes for r in repos), repository_names=names))

    def restore(request: Request, t: tenants.Tenant) -> Response:
        form = form_of(request)

        def action() -> str:
            repo = form.get("repository", "").strip() or None
            since_text = form.get("since", "").strip()
            since = (admin.parse_moment(since_text, ctx.clock.now_ns(), ahead=False, tz=tz())
                     if since_text else None)
            done = admin.recycle_restore(ctx, kit.actor(request), t.name, form.get("motive"), repo, since)
            said = ngettext("{n} object ({size}) restored from the recycle bin: the pharmacy's next "
                            "backup and check find it again.",
                            "{n} objects ({size}) restored from the recycle bin: the pharmacy's next "
                            "backup and check find them again.", done["objects"]).format(
                n=done["objects"], size=human_size(done["bytes"]))
            if done["already_gone"]:
                said += " " + ngettext("{n} binned object was no longer stored: removed from the bin.",
                                       "{n} binned objects were no longer stored: removed from the bin.",
                                       done["already_gone"]).format(n=done["already_gone"])
            return said

        return acted(request, t, "/bin", action)

    def purge(request: Request, t: tenants.Tenant) -> Response:
        form = form_of(request)
        older_text = form.get("older_than", "").strip()
        try:
            motive = admin.check_motive(form.get("motive"))
            older = float(older_text.removesuffix("d")) if older_text else None
            if older is not None and older < 0:
                raise ValueError(older_text)
        except (UsageError, ValueError) as exc:
            s = session_of(request)
            if s is not None:
                s.flash(error_text(exc) if isinstance(exc, UsageError) else
                        _("{text}: not a number of days").format(text=repr(older_text)), "error")
            return kit.guard.redirect(path(t.name, "/bin"))
        if form.get("confirm") != "yes":
            cutoff = ctx.clock.now_ns() - int(older * DAY_NS) if older is not None else None
            with ctx.db.read() as conn:
                items = bin.listing(conn, t.id, until_ns=cutoff + 1 if cutoff is not None else None)
            return kit.pages.render(request, "hosted/tenant_purge.html", PurgeConfirmPage(
                title=title(t, _("Purge the recycle bin")), tenant=head(t, "bin"), objects=len(items),
                bytes=sum(b.size for b in items), motive=motive, older_than=older_text))

        def action() -> str:
            done = admin.recycle_purge(ctx, kit.actor(request), t.name, motive, older)
            n = done["objects"] + done["already_gone"]
            said = ngettext("{n} object ({size}) purged from the recycle bin, for good.",
                            "{n} objects ({size}) purged from the recycle bin, for good.", n).format(
                n=n, size=human_size(done["bytes"] + done["already_gone_bytes"]))
            if done["failed"]:
                raise UsageError(said + " " + ngettext(
                    "{n} object could not be removed from storage ({reason}): it stays in the bin.",
                    "{n} objects could not be removed from storage ({reason}): they stay in the bin.",
                    done["failed"]).format(n=done["failed"], reason=done["failure"]))
            return said

        return acted(request, t, "/bin", action)

    # -- audit journal ----------------------------------------------------------------------

    def audit_page(request: Request, t: tenants.Tenant) -> Response:
        now = ctx.clock.now_ns()
        admin.record_read(ctx, kit.actor(request), t.id, "audit.list")
        before_text = request.query_params.get("before", "")
        before = int(before_text) if before_text.isdigit() else None
        with ctx.db.read() as conn:
            rows = audit.latest(conn, t.id, AUDIT_PAGE + 1, before)
        chain = audit.heads(ctx.db, t.id)
        first_seq, head_seq = (chain[0][1], chain[0][2]) if chain else (1, 0)
        entries = tuple(AuditRow(int(r.seq), int(r.time_ns) / NS, r.operation, r.outcome, r.token_id,
                                 r.client, r.kind, int(r.count), int(r.bytes), r.detail)
                        for r in rows[:AUDIT_PAGE])
        today = audit.day_of(now)
        return kit.pages.render(request, "hosted/tenant_audit.html", AuditPage(
            title=title(t, _("Audit journal")), tenant=head(t, "audit"), entries=entries,
            older=entries[-1].seq if len(rows) > AUDIT_PAGE else None, newest=before is None,
            head_seq=head_seq, first_seq=first_seq, verification=verifications.get(t.id),
            export_from=today[:8] + "01", export_to=today, months=tuple(months_back(now, t.created_ns))))

    def verify(request: Request, t: tenants.Tenant) -> Response:
        with verify_lock:  # one verification at a time: they read a whole chain each
            problems = audit.verify(ctx.db, t.id)
            chain = audit.heads(ctx.db, t.id)
        first_seq, head_seq = (chain[0][1], chain[0][2]) if chain else (1, 0)
        s = session_of(request)
        verifications[t.id] = Verification(ctx.clock.now_ns() / NS, (s.user if s else None) or "-",
                                           not problems, max(0, head_seq - first_seq + 1), head_seq,
                                           tuple(p.text for p in problems))
        if s is not None:
            if problems:
                s.flash(ngettext("The audit journal has {n} problem: see below.",
                                 "The audit journal has {n} problems: see below.", len(problems)).format(
                    n=len(problems)), "error")
            else:
                s.flash(_("The audit journal is intact."), "ok")
        return kit.guard.redirect(path(t.name, "/audit"))

    def audit_export(request: Request, t: tenants.Tenant) -> Response:
        today = audit.day_of(ctx.clock.now_ns())
        try:
            first = valid_day(request.query_params.get("from") or today)
            last = valid_day(request.query_params.get("to") or today)
            if first > last:
                raise UsageError(_("the first day {first} comes after the last day {last}").format(
                    first=first, last=last))
        except UsageError as exc:
            return kit.guard.message(request, exc.message, 400)

        admin.record_read(ctx, kit.actor(request), t.id, "audit.export")

        def lines() -> Iterator[bytes]:
            for line in audit.export(ctx.db, t.id, first, last):
                yield (line + "\n").encode("ascii")

        return StreamingResponse(lines(), media_type="application/x-ndjson", headers={
            "Content-Disposition": f'attachment; filename="audit-{t.name}-{first}-{last}.jsonl"'})

    def guarded(handler: Callable[[Request, tenants.Tenant], Response], roles: Any) -> Any:
        return kit.guard.page(page(handler), roles=roles)

    return [
        Route("/tenants/{tenant}", guarded(overview, READ)),
        Route("/tenants/{tenant}/state", guarded(set_state, ACT), methods=["POST"]),
        Route("/tenants/{tenant}/quota", guarded(set_quota, ACT), methods=["POST"]),
        Route("/tenants/{tenant}/usage", guarded(usage, READ)),
        Route("/tenants/{tenant}/usage.csv", guarded(usage_csv, READ)),
        Route("/tenants/{tenant}/tokens", guarded(tokens_page, READ)),
        Route("/tenants/{tenant}/tokens", guarded(add_token, ACT), methods=["POST"]),
        Route("/tenants/{tenant}/tokens/{id}/revoke", guarded(revoke_token, ACT), methods=["POST"]),
        Route("/tenants/{tenant}/bin", guarded(bin_page, READ)),
        Route("/tenants/{tenant}/bin/restore", guarded(restore, ACT), methods=["POST"]),
        Route("/tenants/{tenant}/bin/purge", guarded(purge, ADMIN), methods=["POST"]),
        Route("/tenants/{tenant}/audit", guarded(audit_page, READ)),
        Route("/tenants/{tenant}/audit/verify", guarded(verify, READ), methods=["POST"]),
        Route("/tenants/{tenant}/audit.jsonl", guarded(audit_export, READ)),
    ]

