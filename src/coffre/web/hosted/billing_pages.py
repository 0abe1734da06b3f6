"""Billing (`/billing?month=YYYY-MM`): the month's usage per tenant as `coffre server usage`
reports it (server/metering.py: GB-month stored, peak, recycle bin, transfers), and
`/billing.csv?month=YYYY-MM`, byte for byte the CSV of `coffre server usage --month M --csv`
(the same function writes both: metering.write_csv). Reading it is journaled like the admin
API's `GET /v1/admin/usage`."""

from __future__ import annotations

import io
from datetime import date
from decimal import Decimal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from coffre.core import i18n
from coffre.core.errors import UsageError
from coffre.core.i18n import _
from coffre.server import admin, audit, metering
from coffre.web.hosted.app import READ, ConsoleKit
from coffre.web.hosted.contexts import BillingPage, BillingRow
from coffre.web.security import session_of


def month_of(kit: ConsoleKit, request: Request) -> tuple[str, bool]:
    """The month asked for (this month by default) and whether it was understood."""
    this = audit.day_of(kit.ctx.clock.now_ns())[:7]
    asked = request.query_params.get("month", "").strip()
    if not asked:
        return this, True
    try:
        metering.parse_month(asked)
    except UsageError:
        return this, False
    return asked, True


def shift(month: str, by: int) -> str:
    year, mon = metering.parse_month(month)
    index = year * 12 + (mon - 1) + by
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def month_name(month: str) -> str:
    from babel.dates import format_date

    year, mon = metering.parse_month(month)
    return str(format_date(date(year, mon, 1), format="LLLL y", locale=i18n.locale_name()))


def routes(kit: ConsoleKit) -> list[BaseRoute]:
    def billing(request: Request) -> Response:
        month, understood = month_of(kit, request)
        if not understood:
            s = session_of(request)
            if s is not None:
                s.flash(_("That is not a month: write it as YYYY-MM, e.g. 2026-11."), "error")
            return kit.guard.redirect("/billing")
        report = admin.usage_report(kit.ctx, kit.actor(request), month)
        this = audit.day_of(kit.ctx.clock.now_ns())[:7]
        rows = tuple(BillingRow(
            tenant=r.tenant, display_name=r.display_name, state=r.state, gb_month=f"{r.gb_month:f}",
            peak_stored=r.peak_stored_bytes, stored_end=r.stored_bytes_end,
            binned_gb_month=f"{r.binned_gb_month:f}", binned_end=r.binned_bytes_end, uploads=r.uploads,
            uploaded_bytes=r.uploaded_bytes, downloads=r.downloads, downloaded_bytes=r.downloaded_bytes,
            quota_soft=r.quota_soft, quota_hard=r.quota_hard) for r in report.rows)
        first = report.rows[0] if report.rows else None
        return kit.pages.render(request, "hosted/billing.html", BillingPage(
            title=_("Billing"), month=month, month_name=month_name(month), complete=report.complete,
            days_counted=first.days_counted if first else 0,
            days_in_month=first.days_in_month if first else 0,
            rows=rows, total_gb_month=f"{sum((r.gb_month for r in report.rows), Decimal(0)):f}",
            total_uploaded=sum(r.uploaded_bytes for r in report.rows),
            total_downloaded=sum(r.downloaded_bytes for r in report.rows),
            previous=shift(month, -1), next=shift(month, 1) if month < this else None,
            csv_url=kit.urls.to("/billing.csv", month=month)))

    def csv(request: Request) -> Response:
        month, understood = month_of(kit, request)
        if not understood:
            return kit.guard.message(request, _("That is not a month: write it as YYYY-MM, e.g. 2026-11."),
                                     400)
        report = admin.usage_report(kit.ctx, kit.actor(request), month)
        out = io.StringIO()
        metering.write_csv(report, out)
        return Response(out.getvalue().encode("utf-8"), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="coffre-usage-{month}.csv"'})

    return [Route("/billing", kit.guard.page(billing, roles=READ), methods=["GET"]),
            Route("/billing.csv", kit.guard.page(csv, roles=READ), methods=["GET"])]
