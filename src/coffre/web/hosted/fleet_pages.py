"""The fleet (`/`, the console's home): every tenant with its light (server/fleet.py
`assess`), last good backup, lateness against its schedule, stored size and quota use, scrub
and replication state, most at risk first; filters (light, state) and a search by name as GET
parameters, so the page works without a script; the provider's alerts (table fleet_alerts)
with who acknowledged them, and an « acknowledge » button for operators and admins.

A fixed handful of queries whatever the number of tenants (assess reads every tenant's latest
records at once; one more query each for last good backups, disabled tenants and alerts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from coffre.core import i18n
from coffre.core.errors import UsageError
from coffre.core.i18n import _
from coffre.server import admin, fleet, fleet_texts, scrub, tenants
from coffre.server.db import tables
from coffre.web.guard import form_of
from coffre.web.hosted.app import ACT, READ, ConsoleKit
from coffre.web.hosted.contexts import FleetAlert, FleetPage, FleetRow
from coffre.web.security import session_of
from coffre.web.urls import segment

NS = 1_000_000_000
LIGHTS = ("red", "orange", "green", "off")
STATES = tenants.STATES
ALERTS_KEPT_S = 30 * 86400  # cleared alerts shown this long
TZ = "Europe/Paris"


@dataclass(frozen=True)
class Facts:
    """What the fleet page is made of, read in one go."""

    risks: list[fleet.TenantRisk]
    disabled: list[tenants.Tenant]
    last_good: dict[int, int]
    alerts: list[Any]                 # fleet_alerts rows joined with names and acks
    last_scrub: int | None


def read_facts(kit: ConsoleKit, now_ns: int) -> Facts:
    s, a, k, te = tables.status_reports, tables.fleet_alerts, tables.fleet_alert_acks, tables.tenants
    with kit.ctx.db.read() as conn:
        risks = fleet.assess(conn, now_ns)
        disabled = [tenants.Tenant(*r) for r in conn.execute(
            sa.select(*[te.c[f] for f in tenants.Tenant.__dataclass_fields__])
            .where(te.c.state == "disabled").order_by(te.c.name))]
        good = sa.func.max(sa.func.coalesce(s.c.finished_ns, s.c.received_ns))
        last_good = {int(t): int(v) for t, v in conn.execute(
            sa.select(s.c.tenant_id, good).where(s.c.outcome.in_(("ok", "warning")))
            .group_by(s.c.tenant_id))}
        alerts = list(conn.execute(
            sa.select(a.c.tenant_id, a.c.problem, a.c.since_ns, a.c.notified_ns, a.c.cleared_ns,
                      te.c.name, te.c.display_name, k.c.acknowledged_ns, k.c.acknowledged_by)
            .select_from(a.join(te, te.c.id == a.c.tenant_id).outerjoin(k, sa.and_(
                k.c.tenant_id == a.c.tenant_id, k.c.problem == a.c.problem, k.c.since_ns == a.c.since_ns)))
            .where(sa.or_(a.c.cleared_ns.is_(None), a.c.cleared_ns >= now_ns - ALERTS_KEPT_S * NS))
            .order_by(a.c.cleared_ns.is_not(None), a.c.since_ns, te.c.name, a.c.problem)))
        last = scrub.read_state(conn, scrub.LAST_KEY) or {}
    finished = last.get("finished_ns")
    return Facts(risks, disabled, last_good, alerts, finished if isinstance(finished, int) else None)


def tenant_link(kit: ConsoleKit) -> Callable[[str], str]:
    """The URL of a tenant's page (tenant_pages.py)."""
    return lambda name: kit.urls.to("/tenants/" + segment(name))


def _row(r: fleet.TenantRisk, last_good: int | None, now_ns: int, link: str, lang: str) -> FleetRow:
    overdue = [now_ns - j.next_due_ns for j in r.jobs if j.next_due_ns is not None and now_ns > j.next_due_ns]
    q = r.quota
    used = int(q.get("stored") or 0) + int(q.get("binned") or 0)
    limit = q.get("hard") or q.get("soft")
    scrub_count = sum(int(x.detail.get("count", 0)) for x in r.reasons if x.code == "scrub")
    replica = sum(int(x.detail.get("count", 0)) for x in r.reasons
                  if x.code == "copies" and "problems" in x.detail)
    copies = any(x.code == "copies" and "copies" in x.detail for x in r.reasons)
    reasons = tuple(fleet_texts.reason_text(x, lang, TZ) for x in r.reasons)
    since = r.since_ns
    return FleetRow(
        tenant=r.tenant, display_name=r.display_name, url=link, state=r.state, light=r.light,
        light_text=fleet_texts.light_word(r.light, lang), reasons=reasons,
        since=None if since is None else since / NS,
        last_good=None if last_good is None else last_good / NS,
        last_report=None if r.last_report_ns is None else r.last_report_ns / NS,
        overdue_s=max(overdue) / NS if overdue else None,
        stored=int(q.get("stored") or 0), binned=int(q.get("binned") or 0),
        quota_hard=q.get("hard"), quota_soft=q.get("soft"),
        quota_share=used / limit if limit else None,
        scrub="damaged" if scrub_count else "ok", scrub_count=scrub_count,
        replication="differs" if replica else "ok", replication_count=replica,
        copies="differs" if copies else "ok")


def _disabled_row(t: tenants.Tenant, last_good: int | None, link: str) -> FleetRow:
    used = t.stored_bytes + t.binned_bytes
    limit = t.quota_hard or t.quota_soft
    return FleetRow(
        tenant=t.name, display_name=t.display_name, url=link, state=t.state, light="off",
        light_text=_("disabled"), reasons=(), since=None,
        last_good=None if last_good is None else last_good / NS, last_report=None, overdue_s=None,
        stored=t.stored_bytes, binned=t.binned_bytes, quota_hard=t.quota_hard, quota_soft=t.quota_soft,
        quota_share=used / limit if limit else None, scrub="ok", scrub_count=0, replication="ok",
        replication_count=0, copies="ok")


def _keep(row: FleetRow, light: str, state: str, q: str) -> bool:
    if light and row.light != light:
        return False
    if state and row.state != state:
        return False
    return not q or q in row.tenant.lower() or q in row.display_name.lower()


def fleet_page(kit: ConsoleKit, request: Request) -> FleetPage:
    now_ns = kit.ctx.clock.now_ns()
    params = request.query_params
    light = params.get("light", "")
    light = light if light in LIGHTS else ""
    state = params.get("state", "")
    state = state if state in STATES else ""
    q = " ".join(params.get("q", "").split())[:100]
    facts = read_facts(kit, now_ns)
    link = tenant_link(kit)
    lang = i18n.language()
    rows = [_row(r, facts.last_good.get(r.tenant_id), now_ns, link(r.tenant), lang) for r in facts.risks]
    rows += [_disabled_row(t, facts.last_good.get(t.id), link(t.name)) for t in facts.disabled]
    counts = {x: 0 for x in LIGHTS}
    for row in rows:
        counts[row.light] += 1
    kept = tuple(row for row in rows if _keep(row, light, state, q.lower()))
    s = session_of(request)
    can_act = s is not None and s.role in ACT
    by_problem = {r.tenant_id: {x.code: x for x in r.reasons} for r in facts.risks}
    alerts = []
    for a in facts.alerts:
        reason = by_problem.get(a.tenant_id, {}).get(a.problem)
        text = fleet_texts.reason_text(reason, lang, TZ) if reason is not None else _problem_word(a.problem)
        open_ = a.cleared_ns is None
        alerts.append(FleetAlert(
            tenant=a.name, display_name=a.display_name, url=link(a.name), problem=a.problem,
            problem_text=text, since=a.since_ns / NS,
            notified=None if a.notified_ns is None else a.notified_ns / NS,
            cleared=None if a.cleared_ns is None else a.cleared_ns / NS,
            acknowledged_by=a.acknowledged_by,
            acknowledged=None if a.acknowledged_ns is None else a.acknowledged_ns / NS,
            can_acknowledge=can_act and open_ and a.acknowledged_ns is None,
            ack_url=kit.urls.to("/alerts/" + segment(a.name) + "/" + segment(a.problem) + "/acknowledge")))
    return FleetPage(title=_("Fleet"), rows=kept, total=len(rows), counts=counts, light=light, state=state,
                     q=q, query=request.url.query, alerts=tuple(alerts), can_act=can_act,
                     last_scrub=None if facts.last_scrub is None else facts.last_scrub / NS)


_PROBLEMS = {"failing": i18n.N_("a backup failed"), "late": i18n.N_("a backup is late"),
             "quota_full": i18n.N_("the hard quota is reached"),
             "scrub": i18n.N_("the scrub found damaged objects"),
             "copies": i18n.N_("a copy differs")}


def _problem_word(code: str) -> str:
    return _(_PROBLEMS[code]) if code in _PROBLEMS else code


def routes(kit: ConsoleKit) -> list[BaseRoute]:
    def home(request: Request) -> Response:
        return kit.pages.render(request, "hosted/fleet.html", fleet_page(kit, request))

    def acknowledge(request: Request) -> Response:
        s = session_of(request)
        tenant, problem = request.path_params["tenant"], request.path_params["problem"]
        try:
            admin.acknowledge_alert(kit.ctx, kit.actor(request), tenant, problem,
                                    s.user if s is not None and s.user else "-")
            if s is not None:
                s.flash(_("Alert acknowledged: {tenant}, {problem}.").format(
                    tenant=tenant, problem=_problem_word(problem)), "ok")
        except UsageError as exc:
            if s is not None:
                s.flash(exc.message, "error")
        back = parse_qs(form_of(request).get("back", "").lstrip("?"))
        return kit.guard.redirect("/", **{k: back[k][0] for k in ("light", "state", "q") if back.get(k)})

    return [
        Route("/", kit.guard.page(home, roles=READ), methods=["GET"]),
        Route("/alerts/{tenant}/{problem}/acknowledge", kit.guard.page(acknowledge, roles=ACT),
              methods=["POST"]),
    ]
