"""The console in headless Chromium: log in with a password and a TOTP code, see the fleet
with a failing tenant first, filter it, acknowledge an alert, open billing and download the
month's CSV (byte for byte `coffre server usage --csv`); a tenant name holding a script never
runs it; screenshots of the login, fleet (desktop and phone) and billing pages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from coffre.core.clock import FixedClock
from console_support import PASSWORD, console, fleet, person
from server_support import T0, make_context, serving


def test_the_provider_logs_in_sees_the_fleet_acknowledges_and_exports(
        browser_page: Any, shots: Any, tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "server", clock=FixedClock(T0))
    fleet(ctx, 15, T0, days=60, display="Pharmacie {i} <script>alert(1)</script>")
    root = person(ctx, "root", "admin")
    app, _kit = console(ctx)
    page = browser_page
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        with serving(app) as base:
            page.goto(base + "/console/")
            page.wait_for_url("**/console/login**")
            assert page.title() == "Console de l'hébergeur — Coffre"
            shots(page, "console-login")
            shots.phone(page, "console-login")
            page.fill("#user", "root")
            page.fill("#password", PASSWORD)
            page.fill("#code", root.code(T0))
            page.click("button[type=submit].primary")
            page.wait_for_url(base + "/console/")
            rows = page.locator("table.fleet tbody tr")
            assert rows.count() == 15
            assert "row-red" in (rows.first.get_attribute("class") or "")
            assert rows.first.locator("th a").inner_text() == "pharmacie-0000"
            assert "EN ÉCHEC" in rows.first.inner_text()
            assert "<script>alert(1)</script>" in rows.first.inner_text()  # shown as text
            shots(page, "console-fleet")
            shots.phone(page, "console-fleet")

            page.select_option("#light", "orange")
            page.click("form[role=search] button[type=submit]")
            page.wait_for_url("**light=orange**")
            classes = [rows.nth(i).get_attribute("class") for i in range(rows.count())]
            assert classes and set(classes) == {"row-orange"}

            page.goto(base + "/console/?light=red")
            before = page.locator("table.alerts button").count()
            assert before >= 2
            page.locator("table.alerts button").first.click()
            page.wait_for_selector(".flash-ok")
            assert "Alerte acquittée" in page.locator(".flash-ok").inner_text()
            assert page.locator("table.alerts button").count() == before - 1
            assert "par root" in page.locator("table.alerts").inner_text()

            page.click("nav >> text=Facturation")
            page.wait_for_url("**/console/billing")
            page.goto(base + "/console/billing?month=2026-04")
            assert "avril 2026" in page.locator("h1").inner_text()
            shots(page, "console-billing")
            shots.phone(page, "console-billing")
            with page.expect_download() as info:
                page.click("text=Télécharger le CSV")
            download = info.value
            assert download.suggested_filename == "coffre-usage-2026-04.csv"
            got = Path(download.path()).read_bytes()
    finally:
        ctx.close()
    cli = subprocess.run([sys.executable, "-m", "coffre", "server", "--data", str(tmp_path / "server"),
                          "usage", "--month", "2026-04", "--csv"], capture_output=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert got == cli.stdout and got.count(b"\n") == 16
    assert dialogs == []
