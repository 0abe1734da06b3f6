"""Usage metering: daily samples (the last of a day stands for it, a transfer count is not a
sample), GB-month per calendar month with days without a sample carried from the sample
before, across a month boundary, a tenant created mid-month, a month in progress, and the
report through the real CLI as CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from coffre.core.clock import FixedClock
from coffre.server import audit, metering
from coffre.server.context import ServerContext
from coffre.server.db import tables
from coffre.server.metering import CSV_COLUMNS
from server_support import add_tenant, make_context

U = tables.usage_days
GB = 10**9


def ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 10**9


def tenant_id(ctx: ServerContext, name: str) -> int:
    with ctx.db.read() as conn:
        t = tables.tenants
        return int(conn.execute(sa.select(t.c.id).where(t.c.name == name)).scalar_one())


def holds(ctx: ServerContext, tenant: int, stored: int, binned: int = 0) -> None:
    with ctx.db.begin() as conn:
        conn.execute(tables.tenants.update().where(tables.tenants.c.id == tenant).values(
            stored_bytes=stored, binned_bytes=binned))


def transfer(ctx: ServerContext, tenant: int, when: str, **counts: int) -> None:
    with ctx.db.begin() as conn:
        metering.count(ctx.db, conn, tenant, ns(when), **counts)


def day_row(ctx: ServerContext, tenant: int, day: str) -> sa.Row[tuple[object, ...]] | None:
    with ctx.db.read() as conn:
        return conn.execute(sa.select(U).where(U.c.tenant_id == tenant, U.c.day == day)).first()


def test_the_last_sample_of_a_day_stands_for_it_and_counts_are_not_samples(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "srv", clock=FixedClock(ns("2026-11-10T00:30:00")))
    add_tenant(ctx, "a", ())
    a = tenant_id(ctx, "a")
    transfer(ctx, a, "2026-11-10T00:10:00", uploads=2, uploaded_bytes=500)
    r = day_row(ctx, a, "2026-11-10")
    assert r is not None and r.sampled_ns == 0 and r.uploads == 2
    holds(ctx, a, 9 * GB)
    metering.periodic(ctx, ns("2026-11-10T12:00:00"))
    holds(ctx, a, 6 * GB, 1 * GB)
    metering.periodic(ctx, ns("2026-11-10T23:00:00"))
    holds(ctx, a, 7 * GB)
    assert metering.sample(ctx.db, ns("2026-11-10T20:00:00")) == 1  # another instance, late: ignored
    r = day_row(ctx, a, "2026-11-10")
    assert r is not None
    assert (r.stored_bytes, r.binned_bytes, r.sampled_ns) == (6 * GB, 1 * GB, ns("2026-11-10T23:00:00"))
    assert r.uploads == 2 and r.uploaded_bytes == 500  # the transfers were kept
    holds(ctx, a, 6 * GB, 1 * GB)
    metering.periodic(ctx, ns("2026-11-10T23:00:00"))  # the same sample again: nothing changes
    transfer(ctx, a, "2026-11-10T23:30:00", downloads=1, downloaded_bytes=7)
    r = day_row(ctx, a, "2026-11-10")
    assert r is not None and r.stored_bytes == 6 * GB and r.downloads == 1


def test_gb_month_across_a_month_boundary_with_days_without_samples(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "srv", clock=FixedClock(ns("2026-10-01T08:00:00")))
    add_tenant(ctx, "a", ())
    a = tenant_id(ctx, "a")
    # October: 3 GB sampled on the 30th, the last sample before November.
    holds(ctx, a, 3 * GB, 2 * GB)
    metering.sample(ctx.db, ns("2026-10-30T23:00:00"))
    # November: no sample until the 10th (6 GB, after 9 GB earlier that day)...
    holds(ctx, a, 9 * GB)
    metering.sample(ctx.db, ns("2026-11-10T09:00:00"))
    holds(ctx, a, 6 * GB)
    metering.sample(ctx.db, ns("2026-11-10T22:00:00"))
    # ... b is created on the 15th and holds 3 GB (every tenant is sampled: a still 6 GB)...
    ctx.clock = FixedClock(ns("2026-11-15T10:00:00"))
    add_tenant(ctx, "b", ())
    b = tenant_id(ctx, "b")
    holds(ctx, b, 3 * GB)
    metering.sample(ctx.db, ns("2026-11-15T10:00:00"))
    # ... a holds 1.5 GB from the 20th.
    holds(ctx, a, 1_500_000_000, 500_000_000)
    metering.sample(ctx.db, ns("2026-11-20T05:00:00"))
    # December: b empty from the 1st, c created that day, a holds 4 GB from the 2nd.
    holds(ctx, b, 0)
    metering.sample(ctx.db, ns("2026-12-01T00:00:00"))
    ctx.clock = FixedClock(ns("2026-12-01T10:00:00"))
    add_tenant(ctx, "c", ())
    holds(ctx, a, 4 * GB)
    metering.sample(ctx.db, ns("2026-12-02T05:00:00"))
    # Transfers on both sides of each boundary.
    transfer(ctx, a, "2026-10-31T23:59:59", uploads=100, uploaded_bytes=100)
    transfer(ctx, a, "2026-11-01T00:00:00", uploads=1, uploaded_bytes=10)
    transfer(ctx, a, "2026-11-30T23:59:59", uploads=2, uploaded_bytes=20, downloads=3, downloaded_bytes=30)
    transfer(ctx, a, "2026-12-01T00:00:00", downloads=100, downloaded_bytes=100)
    with ctx.db.begin() as conn:
        audit.append(ctx.db, conn, audit.Entry(a, "put"), ns("2026-11-30T12:00:00"))

    report = metering.report(ctx.db, "2026-11", ns("2026-12-05T00:00:00"))
    assert report.complete and [r.tenant for r in report.rows] == ["a", "b"]
    ra, rb = report.rows
    # a: 9 days x 3 GB (carried from October) + 10 days x 6 GB + 11 days x 1.5 GB, over 30 days.
    assert ra.stored_byte_days == 9 * 3 * GB + 10 * 6 * GB + 11 * 1_500_000_000
    assert ra.gb_month == Decimal("3.450000")
    assert ra.peak_stored_bytes == 6 * GB and ra.stored_bytes_end == 1_500_000_000
    assert ra.binned_byte_days == 9 * 2 * GB + 11 * 500_000_000 and ra.binned_bytes_end == 500_000_000
    assert (ra.uploads, ra.uploaded_bytes, ra.downloads, ra.downloaded_bytes) == (3, 30, 3, 30)
    assert ra.days_in_month == ra.days_counted == 30
    heads = {t: (seq, head) for t, _first, seq, head in audit.heads(ctx.db)}
    assert (ra.audit_seq, ra.audit_head) == heads[a] and ra.audit_seq == 1
    # b: 0 before it existed, 16 days x 3 GB.
    assert rb.stored_byte_days == 16 * 3 * GB and rb.gb_month == Decimal("1.600000")

    # December, in progress on the 5th: a holds 1.5 GB on the 1st, 4 GB from the 2nd; c nothing.
    dec = metering.report(ctx.db, "2026-12", ns("2026-12-05T12:00:00"))
    assert not dec.complete and [r.tenant for r in dec.rows] == ["a", "b", "c"]
    da = dec.rows[0]
    assert da.days_counted == 5 and da.days_in_month == 31
    assert da.stored_byte_days == 1_500_000_000 + 4 * 4 * GB
    assert da.gb_month == (Decimal(da.stored_byte_days) / 31 / GB).quantize(Decimal("0.000001"))
    assert da.downloads == 100 and dec.rows[2].stored_byte_days == 0
    # February of a leap year has 29 days.
    assert metering.month_report(ctx.db, "2028-02", ns("2028-03-01T00:00:00"))[0].days_in_month == 29
    assert metering.month_report(ctx.db, "2026-11", ns("2027-01-01T00:00:00")) == report.rows


def test_usage_through_the_cli_as_csv_json_and_table(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    ctx = make_context(data, clock=FixedClock(ns("2026-10-20T08:00:00")))
    add_tenant(ctx, "pharmacie-du-port", (), quota_soft=8 * GB, quota_hard=10 * GB)
    a = tenant_id(ctx, "pharmacie-du-port")
    with ctx.db.begin() as conn:
        conn.execute(tables.tenants.update().where(tables.tenants.c.id == a)
                     .values(display_name="Pharmacie, du Port"))
    holds(ctx, a, 2 * GB, 1 * GB)
    metering.sample(ctx.db, ns("2026-10-31T23:00:00"))
    transfer(ctx, a, "2026-11-03T10:00:00", uploads=40, uploaded_bytes=123_456_789)
    with ctx.db.begin() as conn:
        audit.append(ctx.db, conn, audit.Entry(a, "put"), ns("2026-11-03T10:00:00"))
        audit.append(ctx.db, conn, audit.Entry(audit.PROVIDER, "admin.tenant"), ns("2026-11-03T10:00:00"))
    ctx.db.close()
    env = {**os.environ, "LANG": "C.UTF-8", "LANGUAGE": "", "LC_ALL": ""}
    base = [sys.executable, "-m", "coffre", "server", "--data", str(data), "usage"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, env=env, timeout=60,
                              check=False)

    done = run("--month", "2026-11", "--csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(io.StringIO(done.stdout)))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 2
    line = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert line["tenant"] == "pharmacie-du-port" and line["display_name"] == "Pharmacie, du Port"
    assert line["gb_month"] == "2.000000" and line["stored_byte_days"] == str(30 * 2 * GB)
    assert line["binned_gb_month"] == "1.000000" and line["uploads"] == "40"
    assert line["uploaded_bytes"] == "123456789" and line["quota_hard_bytes"] == str(10 * GB)
    assert line["audit_seq"] == "1" and len(line["audit_head"]) == 64

    done = run("--month", "2026-11", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["month"] == "2026-11" and doc["complete"] is True and doc["gb_bytes"] == GB
    (t,) = doc["tenants"]
    assert t["gb_month"] == 2.0 and t["peak_stored_bytes"] == 2 * GB and t["audit_head"] == line["audit_head"]
    assert doc["provider_audit"]["seq"] == 1

    done = run("--month", "2026-11")
    assert done.returncode == 0 and "pharmacie-du-port" in done.stdout and "2.000" in done.stdout
    assert "10^9 bytes" in done.stdout
    bad = run("--month", "2026-13")
    assert bad.returncode == 2 and "2026-13" in bad.stderr
    assert run("--month", "2026-11", "--csv", "--json").returncode == 2


def test_samples_and_report_on_postgresql(tmp_path: Path, postgres: object) -> None:
    """The same upserts (a later sample wins, transfers kept) and report on PostgreSQL."""
    import uuid

    from dbservers import DB_PASSWORD, DB_USER

    name = f"usage_{uuid.uuid4().hex[:8]}"
    postgres.psql(f"CREATE DATABASE {name}")  # type: ignore[attr-defined]
    url = f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{postgres.port}/{name}"  # type: ignore[attr-defined]
    ctx = make_context(tmp_path / "srv", clock=FixedClock(ns("2026-10-01T00:00:00")), db_url=url)
    try:
        add_tenant(ctx, "a", ())
        a = tenant_id(ctx, "a")
        holds(ctx, a, 5 * GB)
        metering.sample(ctx.db, ns("2026-11-01T23:00:00"))
        holds(ctx, a, 9 * GB)
        metering.sample(ctx.db, ns("2026-11-01T22:00:00"))  # earlier: ignored
        transfer(ctx, a, "2026-11-01T12:00:00", uploads=3, uploaded_bytes=30)
        (row,) = metering.month_report(ctx.db, "2026-11", ns("2026-12-01T00:00:00"))
        assert row.stored_byte_days == 30 * 5 * GB and row.uploads == 3
        # The audit journal's hourly task there too: anchors, then retention down to nothing.
        with ctx.db.begin() as conn:
            audit.append(ctx.db, conn, audit.Entry(a, "put"), ns("2026-11-01T12:00:00"))
        audit.periodic(ctx, ns("2026-11-01T13:00:00"))
        assert audit.trim(ctx.db, ns("2037-01-01T00:00:00"), 3650) == 1
        assert audit.verify(ctx.db) == []
    finally:
        ctx.db.close()
