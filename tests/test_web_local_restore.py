"""The restore pages in-process (Starlette's TestClient) against a real repository made by the
real `coffre` command: where a restore goes and that it never overwrites nor leaves the
restore area, the calendar of snapshots, search, the versions of a file, downloads, drills,
and that nothing from a backup reaches a page unescaped."""

from __future__ import annotations

import html
import os
import re
import sqlite3
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

import pytest

from coffre.web.local import browse
from coffre.web.local.restore_pages import UnsafeDestination, attachment, destination, folder_name
from web_restore_support import (
    DAY,
    QUOTES_NAME,
    XSS_NAME,
    XSS_PATH,
    agent_config,
    backup,
    csrf_of,
    logged_in,
    make_app,
    make_database,
    make_files,
    wait_task,
)

ROOT = Path(__file__).resolve().parents[1]


def local_date(coffre, snap_id: str) -> date:  # type: ignore[no-untyped-def]
    """The day a snapshot was taken, in Paris."""
    for snap in coffre.ok("snapshots", "--json").json():
        if snap["id"] == snap_id:
            return datetime.fromisoformat(snap["time"]).astimezone(ZoneInfo("Europe/Paris")).date()
    raise KeyError(snap_id)


@pytest.fixture
def site(repo, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Three backups of the pharmacy's folder: 40 days ago, 3 days ago (a letter changed),
    and now (the letter changed again), and the page logged in."""
    src = make_files(tmp_path / "officine")
    letter = src / "docs" / "lettre-1.txt"
    ids = [backup(repo, str(src), shift=-40 * DAY, tmp_path=tmp_path)]
    letter.write_text("Bonjour Monsieur,\n" * 10)
    os.utime(letter, (1_700_000_000, 1_700_000_000))
    ids.append(backup(repo, str(src), shift=-3 * DAY, tmp_path=tmp_path))
    letter.write_text("Bonjour Madame et Monsieur,\n" * 5)
    ids.append(backup(repo, str(src)))
    config = agent_config(tmp_path, repo, area=tmp_path / "Restaurations")
    client = logged_in(make_app(config, tmp_path))
    return {"src": src, "ids": ids, "client": client, "area": tmp_path / "Restaurations", "repo": repo,
            "config": config}


def test_pages_need_a_login_and_actions_need_the_csrf_token(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from starlette.testclient import TestClient

    anonymous = TestClient(make_app(site["config"], tmp_path), base_url="http://127.0.0.1")
    r = anonymous.get("/restore/officine", follow_redirects=False)
    assert r.status_code == 303 and "/login" in r.headers["location"]
    c = site["client"]
    path = str(site["src"] / "docs" / "lettre-1.txt")
    refused = c.post("/restore/officine/restore", data={"snapshot": site["ids"][-1], "at": path})
    assert refused.status_code == 403
    assert not site["area"].exists()  # nothing was restored


def test_calendar_shows_days_with_snapshots_and_their_times(site) -> None:  # type: ignore[no-untyped-def]
    c = site["client"]
    page = c.get("/restore/officine")
    assert page.status_code == 200
    text = page.text
    assert "3 sauvegardes" in text
    # The newest day is chosen: its snapshot is listed with its time, linking to its folders.
    newest = site["ids"][-1]
    assert f"/restore/officine/snapshot/{newest}" in text, text
    # Days with snapshots are links (with their count); an earlier month is reachable.
    days = re.findall(r'href="/restore/officine\?month=(\d{4}-\d{2})&amp;day=(\d{4}-\d{2}-\d{2})#day"', text)
    assert days
    assert re.search(r'href="/restore/officine\?month=\d{4}-\d{2}" rel="prev"', text)  # 40 days ago
    # The oldest backup's day, in the agent's time zone: its month shows it as a link, and
    # that day lists it.
    day = local_date(site["repo"], site["ids"][0])
    month = day.strftime("%Y-%m")
    earlier = c.get("/restore/officine", params={"month": month}).text
    assert f"day={day.isoformat()}#day" in earlier
    assert f"/restore/officine/snapshot/{site['ids'][0]}" not in earlier  # no day chosen yet
    chosen = c.get("/restore/officine", params={"month": month, "day": day.isoformat()}).text
    assert f"/restore/officine/snapshot/{site['ids'][0]}" in chosen
    assert 'class="chosen"' in chosen
    # A month without snapshots renders its grid with no link.
    empty = c.get("/restore/officine", params={"month": "2001-02"})
    assert empty.status_code == 200 and "day=2001-02" not in empty.text
    assert c.get("/restore/nothing").status_code == 404


def test_folder_view_breadcrumbs_sizes_and_escaped_names(site) -> None:  # type: ignore[no-untyped-def]
    c = site["client"]
    newest = site["ids"][-1]
    bizarre = str(site["src"] / "bizarre")
    page = c.get(f"/restore/officine/snapshot/{newest}", params={"at": bizarre})
    assert page.status_code == 200
    assert XSS_NAME not in page.text  # never raw
    assert html.escape(XSS_NAME) in page.text
    assert html.escape(QUOTES_NAME, quote=True) in page.text or "a&#34;b&#39;c &amp; d.txt" in page.text
    assert "<script>alert" not in page.text and html.escape("<script>alert(1)<") in page.text
    # Breadcrumbs lead back up to the root.
    assert f'at={quote(str(site["src"]), safe="")}' in page.text
    docs = c.get(f"/restore/officine/snapshot/{newest}", params={"at": str(site["src"] / "docs")}).text
    assert "ordonnance-2026.pdf" in docs and "293 Ko" in docs and "140 octets" in docs
    # A path that is not there, or that climbs, is refused.
    assert c.get(f"/restore/officine/snapshot/{newest}", params={"at": "/nope"}).status_code == 404
    assert c.get(f"/restore/officine/snapshot/{newest}", params={"at": "/srv/../etc"}).status_code == 400
    assert c.get("/restore/officine/snapshot/0000000000").status_code == 404


def test_search_by_part_of_a_name_or_a_glob(site) -> None:  # type: ignore[no-untyped-def]
    c = site["client"]
    found = c.get("/restore/officine/search", params={"q": "ORDONNANCE"}).text
    assert "ordonnance-2026.pdf" in found and "lettre-1.txt" not in found
    glob = c.get("/restore/officine/search", params={"q": "scan-*.jpg"}).text
    assert glob.count("scan-") >= 3 and "ordonnance" not in glob
    one = c.get("/restore/officine/search", params={"q": "lettre", "snapshot": site["ids"][0]}).text
    assert "lettre-1.txt" in one
    hostile = c.get("/restore/officine/search", params={"q": "script"}).text
    assert html.escape(XSS_PATH) in hostile and "<script>alert" not in hostile
    assert "<img" not in c.get("/restore/officine/search", params={"q": "onerror"}).text
    assert "Rien trouvé" in c.get("/restore/officine/search", params={"q": "introuvable"}).text


def test_versions_of_a_file_across_snapshots(site) -> None:  # type: ignore[no-untyped-def]
    c = site["client"]
    letter = str(site["src"] / "docs" / "lettre-1.txt")
    page = c.get("/restore/officine/versions", params={"at": letter}).text
    assert "3 versions dans 3 sauvegardes" in page
    rows = re.findall(r"<tr>\s*<td>(.*?)</td>\s*<td class=\"num\">(.*?)</td>", page, re.S)
    assert len(rows) == 3
    assert "14 novembre 2023" in page  # the mtime given to the second version
    scan = str(site["src"] / "scans" / "2026" / "scan-0.jpg")
    same = c.get("/restore/officine/versions", params={"at": scan}).text
    assert "1 version dans 3 sauvegardes" in same and "3 sauvegardes, du" in same


def test_restore_a_file_goes_to_the_area_under_the_snapshot_date(site) -> None:  # type: ignore[no-untyped-def]
    c = site["client"]
    letter = site["src"] / "docs" / "lettre-1.txt"
    first = site["ids"][0]
    page = c.get(f"/restore/officine/snapshot/{first}", params={"at": str(letter.parent)})
    r = c.post("/restore/officine/restore", data={"snapshot": first, "at": str(letter),
                                                   "csrf": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and "/restore/task/" in r.headers["location"]
    done = wait_task(c, r.headers["location"])
    assert "1 fichier restauré" in done, done
    restored = list(site["area"].glob("* officine/**/lettre-1.txt"))
    assert len(restored) == 1
    dest = restored[0]
    assert dest.read_text() == "Bonjour Madame,\n" * 40  # the first version, byte for byte
    assert letter.read_text() == "Bonjour Madame et Monsieur,\n" * 5  # the original untouched
    top = dest.relative_to(site["area"]).parts[0]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{4} officine", top)
    assert dest == site["area"] / top / str(letter).lstrip("/")
    assert html.escape(str(dest)) in done
    # Again: the first copy is never overwritten, the second goes beside it.
    dest.write_text("edited by the pharmacist")
    page = c.get(f"/restore/officine/snapshot/{first}", params={"at": str(letter.parent)})
    r = c.post("/restore/officine/restore", data={"snapshot": first, "at": str(letter),
                                                   "csrf": csrf_of(page.text)}, follow_redirects=False)
    wait_task(c, r.headers["location"])
    assert dest.read_text() == "edited by the pharmacist"
    again = site["area"] / f"{top} (2)" / str(letter).lstrip("/")
    assert again.read_text() == "Bonjour Madame,\n" * 40


def test_restore_a_whole_folder(site) -> None:  # type: ignore[no-untyped-def]
    c = site["client"]
    scans = site["src"] / "scans"
    newest = site["ids"][-1]
    page = c.get(f"/restore/officine/snapshot/{newest}", params={"at": str(scans)})
    assert "Restaurer tout ce dossier" in page.text
    r = c.post("/restore/officine/restore", data={"snapshot": newest, "at": str(scans),
                                                   "csrf": csrf_of(page.text)}, follow_redirects=False)
    assert "3 fichiers restaurés" in wait_task(c, r.headers["location"])
    (top,) = site["area"].iterdir()
    out = top / str(scans).lstrip("/")
    for i in range(3):
        name = f"scan-{i}.jpg"
        assert (out / "2026" / name).read_bytes() == (scans / "2026" / name).read_bytes()


def test_destination_never_leaves_the_area_nor_overwrites(tmp_path: Path) -> None:
    area = tmp_path / "area"
    target, final = destination(area, "2026-11-30 1231 officine", ["srv", "a.txt"], is_file=True)
    assert final == area.resolve() / "2026-11-30 1231 officine" / "srv" / "a.txt" and target == final.parent
    final.parent.mkdir(parents=True)
    final.write_text("x")
    _t2, second = destination(area, "2026-11-30 1231 officine", ["srv", "a.txt"], is_file=True)
    assert second == area.resolve() / "2026-11-30 1231 officine (2)" / "srv" / "a.txt"
    # A symbolic link planted on the way is refused, never followed.
    outside = tmp_path / "outside"
    outside.mkdir()
    (area / "2026-11-30 1231 officine (2)").symlink_to(outside)
    with pytest.raises(UnsafeDestination):
        destination(area, "2026-11-30 1231 officine", ["srv", "a.txt"], is_file=True)
    for bad in (["..", "etc"], ["a/b"], ["."], ["a\0b"]):
        with pytest.raises(UnsafeDestination):
            destination(area, "x", bad, is_file=True)
    with pytest.raises(ValueError):
        browse.split_path("/srv/../etc/passwd")
    # The folder name keeps a job's name off the path's separators.
    assert folder_name(1_780_000_000.0, "a/../b", "Europe/Paris") == "2026-05-28 2226 a_.._b"
    # The area follows the configuration; its default is in the agent's state folder.
    from coffre.agent.model import Agent, Config, Web

    assert browse.restore_area(Config(path="x", agent=Agent(state_dir="/var/lib/coffre"))) == \
        Path("/var/lib/coffre/Restaurations")
    assert browse.restore_area(Config(path="x", web=Web(restore_area="/srv/R"))) == Path("/srv/R")


def test_a_symlink_in_the_area_is_refused_by_the_page(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c = site["client"]
    first = site["ids"][0]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    site["area"].mkdir()
    # Plant a link under every name the restore could take for the first snapshot.
    cal = c.get(f"/restore/officine/snapshot/{first}", params={"at": str(site["src"] / "docs")})
    for snap in site["repo"].ok("snapshots", "--json").json():
        if snap["id"] == first:
            ts = datetime.fromisoformat(snap["time"]).timestamp()
            (site["area"] / folder_name(ts, "officine", "Europe/Paris")).symlink_to(outside)
    r = c.post("/restore/officine/restore", data={"snapshot": first, "at": str(site["src"] / "docs"),
                                                   "csrf": csrf_of(cal.text)})
    assert "lien symbolique" in r.text
    assert list(outside.iterdir()) == []


def test_download_streams_the_file_with_an_escaped_name(site) -> None:  # type: ignore[no-untyped-def]
    c = site["client"]
    newest = site["ids"][-1]
    pdf = site["src"] / "docs" / "ordonnance-2026.pdf"
    r = c.get("/restore/officine/download", params={"snapshot": newest, "at": str(pdf)})
    assert r.status_code == 200 and r.content == pdf.read_bytes()
    assert r.headers["content-disposition"].startswith("attachment;")
    assert r.headers["content-type"] == "application/octet-stream"
    hostile = site["src"] / "bizarre" / QUOTES_NAME
    r = c.get("/restore/officine/download", params={"snapshot": newest, "at": str(hostile)})
    assert r.content == b"quotes\n"
    disposition = r.headers["content-disposition"]
    assert disposition == attachment(QUOTES_NAME)
    assert '"' not in disposition.split('filename="', 1)[1].split('";', 1)[0]
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == QUOTES_NAME
    assert attachment("é\r\n.txt").isascii() and "\r" not in attachment("é\r\n.txt")
    folder = c.get("/restore/officine/download", params={"snapshot": newest, "at": str(pdf.parent)})
    assert folder.status_code == 404


def test_drill_of_a_sqlite_database_reports_its_checks(repo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    db = make_database(tmp_path / "officine.db")
    snap = backup(repo, "--sqlite", str(db))
    config = agent_config(tmp_path, repo)
    c = logged_in(make_app(config, tmp_path))
    page = c.get("/restore/officine").text
    assert "Lancer un exercice" in page
    r = c.post("/restore/officine/drill", data={"snapshot": snap, "csrf": csrf_of(page)},
               follow_redirects=False)
    assert r.status_code == 303
    done = wait_task(c, r.headers["location"])
    assert "Exercice réussi" in done and "sqlite" in done, done
    assert sqlite3.connect(db).execute("SELECT count(*) FROM ventes").fetchone() == (50,)


def test_the_repository_is_reopened_only_when_it_changes(site, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    opened: list[str] = []

    def counting(endpoint):  # type: ignore[no-untyped-def]
        opened.append(endpoint.url)
        return browse.open_endpoint(endpoint)

    now = [0.0]
    repos = browse.Repositories(lambda: site["config"], opener=counting, clock=lambda: now[0])
    first = repos.get("officine")
    assert len(first.snapshots) == 3
    assert repos.get("officine") is first and len(opened) == 1
    new = backup(site["repo"], str(site["src"]))
    assert len(repos.get("officine").snapshots) == 3  # not looked again yet
    now[0] += 5
    again = repos.get("officine")
    assert again is first and [s.id for s in again.snapshots][-1] == new and len(opened) == 1
    now[0] += 3600  # idle: closed, then opened again
    assert repos.get("officine") is not first and len(opened) == 2
    # Never a lock: browsing leaves the repository's locks folder as it was.
    assert not list((Path(site["repo"].repo) / "locks").glob("*"))


def test_restore_pages_import_nothing_the_console_may_not(tmp_path: Path) -> None:
    """lint-imports keeps web.hosted away from repositories; the restore pages are local."""
    out = subprocess.run([sys.executable, "-c", "import coffre.web.local.restore_pages"], capture_output=True,
                         text=True, check=False, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_the_page_benchmark_runs(tmp_path: Path) -> None:
    """bench/web_pages.py cannot rot: its pharmacy mode on 20 snapshots, in-process and over
    HTTP (Chromium is measured by the full run)."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "web_pages.py"), "pharmacy",
                          "--snapshots", "20", "--weak-kdf", "--no-chromium",
                          "--out", str(tmp_path / "bench"),
                          "--json", str(tmp_path / "bench.json")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "20 snapshots" in out.stdout
    for row in ("status     in-process", "history    http", "plots      in-process",
                "calendar   in-process", "calendar   http", "folder     in-process", "folder     http"):
        assert row in out.stdout
    import json

    data = json.loads((tmp_path / "bench.json").read_text())
    assert all(0 < r["warm_full"] < 5 for page in data["results"].values() for r in page.values())


def test_every_control_of_the_restore_pages_has_a_label(site) -> None:  # type: ignore[no-untyped-def]
    from web_checks import unlabelled

    c = site["client"]
    newest = site["ids"][-1]
    docs = str(site["src"] / "docs")
    pages = ["/restore", "/restore/officine", f"/restore/officine/snapshot/{newest}?at={docs}",
             "/restore/officine/search?q=lettre", f"/restore/officine/versions?at={docs}/lettre-1.txt"]
    for path in pages:
        r = c.get(path)
        assert r.status_code == 200, path
        assert not unlabelled(r.text), (path, unlabelled(r.text))
