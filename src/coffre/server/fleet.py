"""The fleet: which tenants' sites are at risk, and telling the provider when one stays red.

`assess(conn, now_ns)` ranks every tenant (disabled ones aside) from what the server holds:
the status records its agents posted (reports_api.py), its quota, the scrub's findings. The
reasons, each with the instant it began:

| code       | light  | when |
|------------|--------|------|
| failing    | red    | a job's latest record says it failed |
| late       | red    | no record of a job since its next due time plus its window and `LATE_MARGIN_S` |
| quota_full | red    | stored + binned bytes reached the hard quota (uploads are refused) |
| scrub      | red    | the server's scrub found objects whose bytes no longer match (unresolved) |
| copies     | red    | an agent's copy differs from its primary, or the second site diverges |
| quota_near | orange | stored + binned reached the soft quota, or 90 % of the hard one |
| never      | orange | no status record ever received |

Times are the server's: a record's next due time was moved onto the server's clock when it
was received (reports_api.py), so a site with a wrong clock is judged right.

`periodic(ctx, now_ns)` (every `PERIOD_S`, one instance per round through a lease in
`state`) keeps `fleet_alerts` (one row per tenant and red reason: since, notified, cleared)
and, when an alerts file is configured (fleet_alerts.py), tells the provider once a site
has stayed red `delay`, reminds every `reminder_every` while it lasts, and says when it is
back to normal. A notice is marked sent once one channel delivered it; until then each
round tries again. It also forgets status records older than `KEEP_DAYS` (each job's
latest is kept).

Scrub findings whose `problem` starts with "replica" (written by replication.py) count as
copies diverging; the others as scrub errors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from coffre.core.i18n import _
from coffre.server import tenants
from coffre.server.context import ServerContext
from coffre.server.db import tables

log = logging.getLogger("coffre.server")

PERIOD_S = 300.0
LATE_MARGIN_S = 3600.0      # past next due + the job's window: the run and its report take time
DEFAULT_WINDOW_S = 7200.0   # the agent's default window, for a record that gives none
NEAR_HARD_SHARE = 0.90
KEEP_DAYS = 400
RED, ORANGE, GREEN = "red", "orange", "green"
CODES = {"failing": RED, "late": RED, "quota_full": RED, "scrub": RED, "copies": RED,
         "quota_near": ORANGE, "never": ORANGE}
_LIGHT_RANK = {RED: 0, ORANGE: 1, GREEN: 2}
_ROUND_KEY = "fleet.round"
_PRUNED_KEY = "fleet.pruned"
NS = 1_000_000_000


@dataclass(frozen=True)
class Reason:
    code: str       # one of CODES
    since_ns: int
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return CODES[self.code]


@dataclass(frozen=True)
class JobState:
    """A job of one site as its latest status record tells it."""

    site: str
    job: str
    outcome: str
    received_ns: int
    next_due_ns: int | None
    late_at_ns: int | None   # when it becomes (or became) late without a newer record


@dataclass(frozen=True)
class TenantRisk:
    tenant_id: int
    tenant: str
    display_name: str
    contact: str
    state: str
    light: str                       # red | orange | green
    reasons: tuple[Reason, ...]
    jobs: tuple[JobState, ...]
    last_report_ns: int | None
    quota: dict[str, int | None]     # soft, hard, stored, binned

    @property
    def since_ns(self) -> int | None:
        """When its worst trouble began (None when green)."""
        worst = [r.since_ns for r in self.reasons if r.severity == self.light]
        return min(worst) if worst else None


def quota_state(t: tenants.Tenant) -> str:
    """"full" (hard quota reached), "near" (soft quota, or 90 % of the hard one) or "ok"."""
    used = t.stored_bytes + t.binned_bytes
    if t.quota_hard is not None and used >= t.quota_hard:
        return "full"
    if (t.quota_soft is not None and used >= t.quota_soft) or (
            t.quota_hard is not None and used >= NEAR_HARD_SHARE * t.quota_hard):
        return "near"
    return "ok"


def _record(body: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def assess(conn: Connection, now_ns: int, tenant_id: int | None = None) -> list[TenantRisk]:
    """Every tenant but the disabled ones (or only `tenant_id`), most at risk first."""
    if tenant_id is not None:
        found = tenants.by_id(conn, tenant_id)
        candidates = [found] if found is not None else []
    else:
        candidates = [t for t in tenants.all_tenants(conn) if t.state != "disabled"]
    if not candidates:
        return []
    ids = [t.id for t in candidates]
    s = tables.status_reports
    latest_ids = (sa.select(sa.func.max(s.c.id)).where(s.c.tenant_id.in_(ids))
                  .group_by(s.c.tenant_id, s.c.site, s.c.job))
    latest: dict[int, list[Any]] = {}
    for row in conn.execute(sa.select(s).where(s.c.id.in_(latest_ids)).order_by(s.c.site, s.c.job)):
        latest.setdefault(row.tenant_id, []).append(row)
    f = tables.scrub_findings
    findings: dict[int, list[Any]] = {}
    for row in conn.execute(
            sa.select(f.c.tenant_id, f.c.problem, sa.func.count().label("n"),
                      sa.func.min(f.c.found_ns).label("since"))
            .where(f.c.resolved_ns.is_(None), f.c.tenant_id.in_(ids)).group_by(f.c.tenant_id, f.c.problem)):
        findings.setdefault(row.tenant_id, []).append(row)
    out = []
    for t in candidates:
        reasons: list[Reason] = []
        jobs: list[JobState] = []
        rows = latest.get(t.id, [])
        for row in rows:
            record = _record(row.body)
            window = record.get("window")
            grace = (window if isinstance(window, int | float) else DEFAULT_WINDOW_S) + LATE_MARGIN_S
            late_at = None if row.next_due_ns is None else row.next_due_ns + int(grace * NS)
            jobs.append(JobState(row.site, row.job, row.outcome, row.received_ns, row.next_due_ns, late_at))
            where = {"site": row.site, "job": row.job, "received_ns": row.received_ns}
            if row.outcome == "failed":
                failed = [st.get("name") for st in record.get("steps", [])
                          if isinstance(st, dict) and not st.get("ok")]
                reasons.append(Reason("failing", _failing_since(conn, t.id, row), {**where, "steps": failed}))
            if late_at is not None and now_ns >= late_at:
                reasons.append(Reason("late", late_at, {**where, "next_due_ns": row.next_due_ns}))
            diverging = [c.get("name") for c in record.get("copies", [])
                         if isinstance(c, dict) and c.get("state") == "diverges"]
            if diverging:
                reasons.append(Reason("copies", row.received_ns, {**where, "copies": diverging}))
        replica: dict[str, int] = {}
        scrub: dict[str, int] = {}
        since = {"replica": now_ns, "scrub": now_ns}
        for row in findings.get(t.id, []):
            which = "replica" if row.problem.startswith("replica") else "scrub"
            (replica if which == "replica" else scrub)[row.problem] = int(row.n)
            since[which] = min(since[which], int(row.since))
        if scrub:
            reasons.append(Reason("scrub", since["scrub"], {"count": sum(scrub.values()), "problems": scrub}))
        if replica:
            reasons.append(Reason("copies", since["replica"], {"count": sum(replica.values()),
                                                               "problems": replica}))
        quota = {"soft": t.quota_soft, "hard": t.quota_hard, "stored": t.stored_bytes,
                 "binned": t.binned_bytes}
        q = quota_state(t)
        if q != "ok":
            reasons.append(Reason("quota_full" if q == "full" else "quota_near", now_ns, dict(quota)))
        if not rows:
            reasons.append(Reason("never", t.created_ns, {}))
        reasons.sort(key=lambda r: (_LIGHT_RANK[r.severity], r.since_ns, r.code))
        light = reasons[0].severity if reasons else GREEN
        last = max((j.received_ns for j in jobs), default=None)
        out.append(TenantRisk(t.id, t.name, t.display_name, t.contact, t.state, light, tuple(reasons),
                              tuple(jobs), last, quota))
    out.sort(key=_rank)
    return out


def _rank(r: TenantRisk) -> tuple[int, int, int, str]:
    reds = sum(1 for x in r.reasons if x.severity == RED)
    return (_LIGHT_RANK[r.light], -reds, r.since_ns if r.since_ns is not None else 0, r.tenant)


def _failing_since(conn: Connection, tenant_id: int, row: Any) -> int:
    """When the job's current run of failures began: its first failed record after the last
    good one."""
    s = tables.status_reports
    same = (s.c.tenant_id == tenant_id, s.c.site == row.site, s.c.job == row.job)
    last_good = conn.execute(sa.select(sa.func.max(s.c.id)).where(
        *same, s.c.outcome.in_(("ok", "warning")))).scalar() or 0
    first = conn.execute(sa.select(sa.func.min(s.c.received_ns)).where(
        *same, s.c.outcome == "failed", s.c.id > last_good)).scalar()
    return int(first) if first is not None else int(row.received_ns)


# --------------------------------------------------------------------------- the round


def periodic(ctx: ServerContext, now_ns: int) -> None:
    """Track red sites, alert the provider, forget old records (one instance per round)."""
    if not _take_round(ctx, now_ns):
        return
    from coffre.server import fleet_alerts

    settings = None
    path = ctx.settings.extra.get(fleet_alerts.SETTINGS_KEY)
    if path:
        try:
            settings = fleet_alerts.load(path)
        except Exception as exc:  # the round goes on: the fleet is tracked, nothing is sent
            log.error(_("the fleet alerts file {path} cannot be used, nothing is sent: {reason}").format(
                path=path, reason=getattr(exc, "message", exc)))
    fleet_alerts.run(ctx, now_ns, settings)
    _prune(ctx, now_ns)


def _take_round(ctx: ServerContext, now_ns: int) -> bool:
    """Whether this instance does this round (another did one less than half a period ago:
    no). A clock that went back takes the round."""
    st = tables.state
    with ctx.db.begin() as conn:
        conn.execute(ctx.db.insert(st).values(key=_ROUND_KEY, value="0")
                     .on_conflict_do_nothing(index_elements=[st.c.key]))
        value = conn.execute(ctx.db.for_update(sa.select(st.c.value).where(st.c.key == _ROUND_KEY))).scalar()
        try:
            last = int(value or 0)
        except ValueError:
            last = 0
        if 0 <= now_ns - last < PERIOD_S * NS / 2:
            return False
        conn.execute(st.update().where(st.c.key == _ROUND_KEY).values(value=str(now_ns)))
    return True


def _prune(ctx: ServerContext, now_ns: int) -> None:
    """Once a day: status records older than KEEP_DAYS, each job's latest kept; cleared alert
    rows told of (or never told) older than KEEP_DAYS."""
    st, s, a = tables.state, tables.status_reports, tables.fleet_alerts
    before = now_ns - KEEP_DAYS * 86400 * NS
    with ctx.db.begin() as conn:
        value = conn.execute(sa.select(st.c.value).where(st.c.key == _PRUNED_KEY)).scalar()
        if value is not None and value.isdigit() and 0 <= now_ns - int(value) < 86400 * NS:
            return
        keep = sa.select(sa.func.max(s.c.id)).group_by(s.c.tenant_id, s.c.site, s.c.job)
        conn.execute(s.delete().where(s.c.received_ns < before, s.c.id.not_in(keep)))
        conn.execute(a.delete().where(a.c.cleared_ns < before, a.c.notified_ns.is_(None)))
        conn.execute(ctx.db.insert(st).values(key=_PRUNED_KEY, value=str(now_ns)).on_conflict_do_update(
            index_elements=[st.c.key], set_={"value": str(now_ns)}))


def red_reasons(rows: Iterable[TenantRisk]) -> dict[tuple[int, str], int]:
    """(tenant id, code) -> since, for every red reason (the earliest of a code's)."""
    out: dict[tuple[int, str], int] = {}
    for row in rows:
        for r in row.reasons:
            if r.severity == RED:
                key = (row.tenant_id, r.code)
                out[key] = min(out.get(key, r.since_ns), r.since_ns)
    return out
