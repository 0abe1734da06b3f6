"""Usage per tenant and day: stored bytes sampled at least daily, uploads and downloads
counted as they happen. `coffre server usage` bills from it (GB-month per calendar month).

- `count` adds transfers to the tenant's day inside the transaction that did them.
- `periodic` (hourly, every instance) samples each tenant's stored and binned bytes into its
  day's row; a later sample of the same day replaces an earlier one, never the reverse, so
  the sample of a day is the last one taken that day. A row made by `count` alone has
  `sampled_ns` 0: it holds no sample.
- `month_report` computes, per tenant and calendar month (UTC), the GB-month: the sum over
  the month's days of the stored bytes of that day divided by the number of days in the
  month and by 10^9 (decimal GB). A day without a sample takes the last sample before it (of
  this month or an earlier one); days before the tenant's first sample count 0; days after the
  report's time are not counted (a month in progress is billed so far).
"""

from __future__ import annotations

import calendar
import csv
import io
import re
import time
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from coffre.core.errors import UsageError
from coffre.core.i18n import _
from coffre.server.audit import PROVIDER, day_of
from coffre.server.db import Database, tables

if TYPE_CHECKING:
    from coffre.server.context import ServerContext


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


PERIOD_S = 3600.0  # a sample an hour: the last of each day stands for that day
GB = 10**9         # decimal gigabyte, as billed


def periodic(ctx: ServerContext, now_ns: int) -> None:
    sample(ctx.db, now_ns)


def sample(db: Database, now_ns: int) -> int:
    """Record every tenant's stored and binned bytes as its sample of today (UTC), unless a
    later sample of today is there already. Returns the number of tenants sampled."""
    t, u = tables.tenants, tables.usage_days
    day = day_of(now_ns)
    with db.begin() as conn:
        rows = conn.execute(sa.select(t.c.id, t.c.stored_bytes, t.c.binned_bytes)).all()
        for r in rows:
            insert = db.insert(u).values(tenant_id=r.id, day=day, stored_bytes=r.stored_bytes,
                                         binned_bytes=r.binned_bytes, sampled_ns=now_ns, uploads=0,
                                         uploaded_bytes=0, downloads=0, downloaded_bytes=0)
            conn.execute(insert.on_conflict_do_update(
                index_elements=[u.c.tenant_id, u.c.day],
                set_={"stored_bytes": insert.excluded.stored_bytes,
                      "binned_bytes": insert.excluded.binned_bytes,
                      "sampled_ns": insert.excluded.sampled_ns},
                where=u.c.sampled_ns <= insert.excluded.sampled_ns))
    return len(rows)


MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def parse_month(text: str) -> tuple[int, int]:
    m = MONTH.match(text)
    if not m or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1970:
        raise UsageError(_("{text} is not a month").format(text=repr(text)),
                         _("write it as YYYY-MM, e.g. 2026-11"))
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class UsageRow:
    """One tenant's month. Bytes are integers; `*_byte_days` are the exact sums the GB-month
    figures are made of (GB-month = byte_days / days_in_month / 10^9)."""

    tenant: str
    tenant_id: int
    display_name: str
    state: str
    month: str
    days_in_month: int
    days_counted: int            # days of the month up to the report's time
    stored_byte_days: int
    gb_month: Decimal            # stored, 6 decimals
    peak_stored_bytes: int
    stored_bytes_end: int        # the last known sample (end of month, or now)
    binned_byte_days: int
    binned_gb_month: Decimal
    binned_bytes_end: int
    uploads: int
    uploaded_bytes: int
    downloads: int
    downloaded_bytes: int
    quota_soft: int | None
    quota_hard: int | None
    audit_seq: int               # the tenant's audit chain head at report time
    audit_head: str

    def as_dict(self, json_ready: bool = False) -> dict[str, object]:
        """The CSV columns / JSON keys (docs/server.md); json_ready: GB-month as numbers."""
        d: dict[str, object] = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["quota_soft_bytes"], d["quota_hard_bytes"] = d.pop("quota_soft"), d.pop("quota_hard")
        if json_ready:
            d["gb_month"], d["binned_gb_month"] = float(self.gb_month), float(self.binned_gb_month)
        return d


@dataclass(frozen=True)
class MonthReport:
    month: str
    generated_ns: int
    complete: bool               # False: the month is still in progress (billed so far)
    rows: list[UsageRow]
    provider_audit_seq: int      # the provider's own chain head at report time
    provider_audit_head: str


def _gb_month(byte_days: int, days: int) -> Decimal:
    return (Decimal(byte_days) / days / GB).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def month_report(db: Database, month: str, now_ns: int | None = None) -> list[UsageRow]:
    """The rows of `report` (now_ns: default the machine's clock)."""
    return report(db, month, time.time_ns() if now_ns is None else now_ns).rows


def report(db: Database, month: str, now_ns: int, tenant_id: int | None = None) -> MonthReport:
    """Every tenant that existed before the month's end (or only `tenant_id`), with its
    figures for `month` (YYYY-MM, UTC) as of `now_ns`, and the audit heads at that time."""
    year, mon = parse_month(month)
    days_in_month = calendar.monthrange(year, mon)[1]
    first = date(year, mon, 1)
    days = [(first + timedelta(days=i)).isoformat() for i in range(days_in_month)]
    today = day_of(now_ns)
    counted = [d for d in days if d <= today]
    t, u, h = tables.tenants, tables.usage_days, tables.audit_heads
    with db.read() as conn:
        if db.dialect == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        one = tenant_id is not None
        tenants = conn.execute(sa.select(t).where(t.c.id == tenant_id if one else sa.true())
                               .order_by(t.c.name)).all()
        chosen = u.c.tenant_id == tenant_id if one else sa.true()
        in_month = conn.execute(sa.select(u).where(u.c.day >= days[0], u.c.day <= days[-1], chosen)).all()
        before_q = (sa.select(u.c.tenant_id, sa.func.max(u.c.day).label("day"))
                    .where(u.c.day < days[0], u.c.sampled_ns > 0, chosen).group_by(u.c.tenant_id).subquery())
        before = conn.execute(sa.select(u).join(before_q, sa.and_(
            u.c.tenant_id == before_q.c.tenant_id, u.c.day == before_q.c.day))).all()
        heads = {r.tenant_id: (int(r.seq), r.entry_hash) for r in conn.execute(sa.select(h))}
    by_tenant: dict[int, dict[str, Any]] = {}
    for r in in_month:
        by_tenant.setdefault(r.tenant_id, {})[r.day] = r
    carried = {r.tenant_id: (int(r.stored_bytes), int(r.binned_bytes)) for r in before}
    month_end_day = (date(year, mon, days_in_month) + timedelta(days=1)).isoformat()
    rows = []
    for tenant in tenants:
        if day_of(tenant.created_ns) >= month_end_day:
            continue  # created after this month
        mine = by_tenant.get(tenant.id, {})
        stored, binned = carried.get(tenant.id, (0, 0))
        stored_days = binned_days = peak = 0
        for d in counted:
            day_row = mine.get(d)
            if day_row is not None and day_row.sampled_ns > 0:
                stored, binned = int(day_row.stored_bytes), int(day_row.binned_bytes)
            stored_days += stored
            binned_days += binned
            peak = max(peak, stored)
        seq, head = heads.get(tenant.id, (0, "0" * 64))
        rows.append(UsageRow(
            tenant=tenant.name, tenant_id=tenant.id, display_name=tenant.display_name,
            state=tenant.state, month=f"{year:04d}-{mon:02d}", days_in_month=days_in_month,
            days_counted=len(counted), stored_byte_days=stored_days,
            gb_month=_gb_month(stored_days, days_in_month), peak_stored_bytes=peak,
            stored_bytes_end=stored, binned_byte_days=binned_days,
            binned_gb_month=_gb_month(binned_days, days_in_month), binned_bytes_end=binned,
            uploads=sum(int(r.uploads) for r in mine.values()),
            uploaded_bytes=sum(int(r.uploaded_bytes) for r in mine.values()),
            downloads=sum(int(r.downloads) for r in mine.values()),
            downloaded_bytes=sum(int(r.downloaded_bytes) for r in mine.values()),
            quota_soft=tenant.quota_soft, quota_hard=tenant.quota_hard, audit_seq=seq, audit_head=head))
    pseq, phead = heads.get(PROVIDER, (0, "0" * 64))
    return MonthReport(f"{year:04d}-{mon:02d}", now_ns, len(counted) == days_in_month, rows, pseq, phead)


# The columns of `coffre server usage --csv` (docs/server.md), also the console's download.
CSV_COLUMNS = (
    "month", "tenant", "tenant_id", "display_name", "state", "days_in_month", "days_counted",
    "gb_month", "stored_byte_days", "peak_stored_bytes", "stored_bytes_end", "binned_gb_month",
    "binned_byte_days", "binned_bytes_end", "uploads", "uploaded_bytes", "downloads",
    "downloaded_bytes", "quota_soft_bytes", "quota_hard_bytes", "audit_seq", "audit_head",
)


def csv_text(rows: list[UsageRow]) -> str:
    """The report's rows as CSV: one header line, then a line per tenant ("." as the decimal
    point whatever the language, an empty cell for "none")."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        d = r.as_dict()
        w.writerow(["" if d[c] is None else d[c] for c in CSV_COLUMNS])
    return out.getvalue()


@dataclass(frozen=True)
class DaySample:
    """A tenant's sampled day: its stored and binned bytes (the day's last sample), and the
    transfers counted that day."""

    day: str
    stored_bytes: int
    binned_bytes: int
    uploaded_bytes: int
    downloaded_bytes: int


def samples(conn: Connection, tenant_id: int, from_day: str) -> list[DaySample]:
    """The tenant's sampled days from `from_day` (YYYY-MM-DD, UTC) on, oldest first (a day
    with transfers but no sample is left out: it holds no stored figure)."""
    u = tables.usage_days
    q = (sa.select(u.c.day, u.c.stored_bytes, u.c.binned_bytes, u.c.uploaded_bytes, u.c.downloaded_bytes)
         .where(u.c.tenant_id == tenant_id, u.c.day >= from_day, u.c.sampled_ns > 0).order_by(u.c.day))
    return [DaySample(str(d), int(s), int(b), int(up), int(down)) for d, s, b, up, down in conn.execute(q)]


def write_csv(report: MonthReport, out: Any) -> None:
    """The month's CSV: what `coffre server usage --csv` prints and the console's billing
    page downloads."""
    out.write(csv_text(report.rows))
