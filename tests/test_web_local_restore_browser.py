"""The restore pages in headless Chromium, served over HTTP, against a real repository made
by the real `coffre` command: a pharmacist logs in, picks a date on the calendar, opens
folders, restores a file and a folder (found byte-identical in the restore area), downloads a
file, starts a database drill and watches it finish; hostile file names show as text and run
nothing. Screenshots (desktop and 390 px) of each page are saved under the test's folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from server_support import serving
from web_restore_support import (
    DAY,
    PAGE_PASSWORD,
    QUOTES_NAME,
    XSS_NAME,
    XSS_PATH,
    agent_config,
    backup,
    make_app,
    make_database,
    make_files,
)


@pytest.fixture
def pharmacy(repo: Any, tmp_path: Path) -> dict[str, Any]:
    src = make_files(tmp_path / "officine")
    db = make_database(tmp_path / "officine.db")
    backup(repo, str(src), shift=-35 * DAY, tmp_path=tmp_path)
    letter = src / "docs" / "lettre-1.txt"
    letter.write_text("Bonjour Monsieur,\n" * 10)
    os.utime(letter, (1_700_000_000, 1_700_000_000))
    backup(repo, str(src), "--sqlite", str(db))
    area = tmp_path / "Restaurations"
    return {"src": src, "area": area, "app": make_app(agent_config(tmp_path, repo, area=area), tmp_path)}


def log_in(page: Any, base: str, path: str = "/restore") -> None:
    page.goto(base + path)
    page.fill("#password", PAGE_PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(base + path)


def no_dialogs(page: Any) -> list[str]:
    seen: list[str] = []

    def dialog(d: Any) -> None:
        seen.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    return seen


def test_pick_a_date_browse_and_restore_a_file_then_a_folder(browser_page: Any, shots: Any,
                                                             pharmacy: dict[str, Any]) -> None:
    page, src, area = browser_page, pharmacy["src"], pharmacy["area"]
    dialogs = no_dialogs(page)
    with serving(pharmacy["app"]) as base:
        log_in(page, base)
        shots(page, "restore-home")
        page.click("text=officine")
        page.wait_for_selector(".calendar")
        shots(page, "restore-calendar")
        shots.phone(page, "restore-calendar")
        # The older month: its one day with a backup, then that backup's time.
        page.click("a[rel=prev]")
        page.click(".calendar a")
        page.click(".day-snapshots a")
        page.wait_for_selector("table.listing")
        for part in [p for p in str(src / "docs").split("/") if p]:
            page.click(f"table.listing a:text-is('📁 {part}')")
        shots(page, "restore-folder")
        shots.phone(page, "restore-folder")
        assert "ordonnance-2026.pdf" in page.inner_text("table.listing")
        page.click("button[aria-label='Restaurer lettre-1.txt']")
        page.wait_for_url("**/restore/task/**")
        shots(page, "restore-task")
        page.wait_for_selector("#task-progress .flash-ok", timeout=60_000)
        shots(page, "restore-task-done")
        shots.phone(page, "restore-task-done")
        (restored,) = area.glob("* officine/**/lettre-1.txt")
        assert restored.read_bytes() == ("Bonjour Madame,\n" * 40).encode()  # the older version
        assert str(restored) in page.inner_text("#task-progress")
        # The versions of the letter: two, the newest first.
        page.go_back()
        page.click("a[aria-label='Versions de lettre-1.txt']")
        page.wait_for_selector("table.versions")
        assert page.locator("table.versions tbody tr").count() == 2
        assert "14 novembre 2023" in page.inner_text("table.versions")
        shots(page, "restore-versions")
        shots.phone(page, "restore-versions")
        # A whole folder, from the newest backup.
        page.goto(base + "/restore/officine")
        page.click("text=Parcourir la dernière sauvegarde")
        for part in [p for p in str(src / "scans").split("/") if p]:
            page.click(f"table.listing a:text-is('📁 {part}')")
        page.click("text=Restaurer tout ce dossier")
        page.wait_for_selector("#task-progress .flash-ok", timeout=60_000)
        assert "3 fichiers restaurés" in page.inner_text("#task-progress")
    copies = sorted(area.glob("*/**/scan-*.jpg"))
    assert len(copies) == 3
    for copy in copies:
        assert copy.read_bytes() == (src / "scans" / "2026" / copy.name).read_bytes()
    assert dialogs == []


def test_download_a_file_and_start_a_database_drill(browser_page: Any, shots: Any,
                                                    pharmacy: dict[str, Any], tmp_path: Path) -> None:
    page, src = browser_page, pharmacy["src"]
    with serving(pharmacy["app"]) as base:
        log_in(page, base, "/restore/officine")
        page.click("text=Parcourir la dernière sauvegarde")
        for part in [p for p in str(src / "docs").split("/") if p]:
            page.click(f"table.listing a:text-is('📁 {part}')")
        with page.expect_download() as info:
            page.click("a[aria-label='Télécharger ordonnance-2026.pdf']")
        download = info.value
        assert download.suggested_filename == "ordonnance-2026.pdf"
        saved = tmp_path / "downloaded.pdf"
        download.save_as(saved)
        assert saved.read_bytes() == (src / "docs" / "ordonnance-2026.pdf").read_bytes()
        # The drill: restores the SQLite database into a throwaway copy and checks it.
        page.goto(base + "/restore/officine")
        page.click("text=Lancer un exercice")
        page.wait_for_url("**/restore/task/**")
        page.wait_for_selector("#task-progress .flash-ok", timeout=120_000)
        text = page.inner_text("#task-progress")
        assert "Exercice réussi" in text and "officine.db" in text
        shots(page, "restore-drill")
        shots.phone(page, "restore-drill")


def test_hostile_file_names_show_as_text_and_run_nothing(browser_page: Any, shots: Any,
                                                        pharmacy: dict[str, Any]) -> None:
    page, src = browser_page, pharmacy["src"]
    dialogs = no_dialogs(page)
    with serving(pharmacy["app"]) as base:
        log_in(page, base, "/restore/officine")
        page.click("text=Parcourir la dernière sauvegarde")
        for part in [p for p in str(src / "bizarre").split("/") if p]:
            page.click(f"table.listing a:text-is('📁 {part}')")
        listing = page.inner_text("table.listing")
        assert XSS_NAME in listing and QUOTES_NAME in listing and "<script>alert(1)<" in listing
        assert page.locator("table.listing img").count() == 0
        shots(page, "restore-hostile-names")
        page.fill("#q", "script")
        page.click("main form.toolbar button[type=submit]")
        page.wait_for_selector("table.listing")
        assert XSS_PATH in page.inner_text("table.listing")
        shots(page, "restore-search")
        shots.phone(page, "restore-search")
        # Restoring the file with quotes in its name puts exactly that name on disk.
        page.go_back()
        page.get_by_role("button", name=f"Restaurer {QUOTES_NAME}", exact=True).click()
        page.wait_for_selector("#task-progress .flash-ok", timeout=60_000)
        assert QUOTES_NAME in page.inner_text("#task-progress")
    (restored,) = pharmacy["area"].glob("*/**/a*d.txt")
    assert restored.name == QUOTES_NAME and restored.read_text() == "quotes\n"
    assert dialogs == []
