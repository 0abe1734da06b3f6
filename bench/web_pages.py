"""Page load times of the web pages on a large history.

    python bench/web_pages.py pharmacy                  # 1,000 snapshots (about a minute to make)
    python bench/web_pages.py pharmacy --snapshots 20 --weak-kdf --no-chromium   # seconds

`pharmacy`: the status page, the history, the plots (over a status store holding one run per
snapshot, as the agent records them) and the restore pages of the pharmacy's page
(`coffre agent` serves them) on a
repository holding --snapshots snapshots of a small pharmacy folder, two a day (12:30 and
19:30) going back in time, each after a small change (one letter rewritten, a new scan every
tenth run): the calendar page and a folder page of the newest snapshot. They are made in this
process by `ops.backup` (what `coffre backup` runs), with the clock set to each run's time:
real snapshots, trees and index files, only faster than a thousand processes.

Measured, each page cold (a new app: the repository opened, its key derived with the real
Argon2 parameters unless --weak-kdf, the index and every snapshot read) then warm (the median
of 5 more requests):
- in-process with Starlette's TestClient: time to the response's headers (first byte) and to
  its whole body;
- over HTTP on 127.0.0.1 (uvicorn, as `coffre agent` serves it): the same, from a socket;
- in headless Chromium (unless --no-chromium): the navigation's responseStart and its first
  contentful paint (performance timing), after logging in.
Prints a table; --json FILE writes the numbers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

PASSWORD = "bench page password"  # noqa: S105 (a benchmark's)
REPO_PASSWORD = "bench repository password"  # noqa: S105
WARM_RUNS = 5


def make_tree(root: Path) -> Path:
    rnd = random.Random(5)  # noqa: S311 (test data)
    for folder in ("docs", "scans", "factures"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(20):
        (root / "docs" / f"lettre-{i:02d}.txt").write_text(f"Bonjour {i}\n" * (i + 1))
    for i in range(10):
        (root / "factures" / f"facture-{i:03d}.pdf").write_bytes(rnd.randbytes(2000 + i))
    return root


def make_repository(repo_dir: Path, src: Path, snapshots: int, weak_kdf: bool) -> tuple[float, Path]:
    """`snapshots` backups of `src`, two a day going back from now. Returns (seconds taken,
    the password file)."""
    if weak_kdf:
        os.environ["COFFRE_TEST_WEAK_KDF"] = "1"
    from coffre.core.clock import FixedClock
    from coffre.ops.backup import Backup, BackupOptions
    from coffre.repository.locks import Lock
    from coffre.repository.repo import Repository
    from coffre.storage.local import LocalBackend

    pwfile = repo_dir.parent / "password"
    pwfile.write_text(REPO_PASSWORD + "\n")
    pwfile.chmod(0o600)
    started = time.monotonic()
    repo, _recovery = Repository.init(LocalBackend(str(repo_dir)), REPO_PASSWORD)
    now = time.time()
    times = sorted(now - 3600 - i * 43200 for i in range(snapshots))
    rnd = random.Random(9)  # noqa: S311
    for i, t in enumerate(times):
        letter = src / "docs" / f"lettre-{i % 20:02d}.txt"
        letter.write_text(f"Version {i}\n" * (i % 7 + 1))
        if i % 10 == 0:
            (src / "scans" / f"scan-{i:04d}.jpg").write_bytes(rnd.randbytes(3000))
        os.utime(letter, (t - 60, t - 60))
        repo.clock = FixedClock(int(t * 1e9))
        lock = Lock(repo, False, "backup")
        lock.acquire()
        try:
            repo.load_index()
            Backup(repo, lock, BackupOptions(paths=[str(src)], host="pharmacie", workers=2)).run()
        finally:
            lock.release()
    fill_history(repo_dir.parent / "agent", times)
    return time.monotonic() - started, pwfile


def fill_history(state: Path, times: list[float]) -> None:
    """One finished run per snapshot in the agent's status store, as the agent records them
    (a backup step, bytes, the medium's use, a database size; a failure every 50th run)."""
    from coffre.agent.records import RunRecord, StepResult
    from coffre.agent.status import StatusStore

    state.mkdir(parents=True, exist_ok=True)
    with StatusStore(state / "agent.sqlite") as store:
        for i, t in enumerate(times):
            ok = i % 50 != 49
            run_id = store.start_run("officine", "local", "schedule", t, slot=t)
            step = StepResult("backup", "local", ok, 0 if ok else 1, t, t + 40 + i % 30,
                              {"bytes_read": 5_000_000 + i * 1000, "bytes_sent": 200_000 + (i % 9) * 10_000},
                              None if ok else "the destination local is unreachable")
            store.finish_run(run_id, RunRecord(
                "officine", "local", "schedule", t, t + 45 + i % 30, "ok" if ok else "failed", slot=t,
                bytes_read=step.summary["bytes_read"], bytes_sent=step.summary["bytes_sent"],
                files_total=1200 + i, files_changed=3, steps=(step,),
                db_sizes={"sqlite:/srv/officine/base.db": 40_000_000 + i * 20_000},
                medium=(100_000_000_000 + i * 50_000_000, 500_000_000_000), error=None if ok else step.error))


def make_app(repo_dir: Path, pwfile: Path, state: Path) -> Any:
    from coffre.agent.model import Agent, Config, Job, Web
    from coffre.agent.model import Repository as RepoConfig
    from coffre.agent.status import StatusStore
    from coffre.web.guard import Identity
    from coffre.web.local.app import AgentView, create_app

    config = Config(path=str(state / "agent.toml"), agent=Agent(state_dir=str(state)),
                    repositories={"local": RepoConfig("local", str(repo_dir), password_file=str(pwfile))},
                    jobs={"officine": Job("officine", "local", paths=("/srv",))},
                    web=Web(restore_area=str(state / "Restaurations")))
    store = StatusStore(state / "agent.sqlite")
    view = AgentView(config=lambda: config, store=lambda: store, run_now=lambda job: False,
                     running=lambda: {})

    def authenticate(form: dict[str, str], address: str) -> Identity | None:
        return Identity("pharmacie", "admin") if form.get("password") == PASSWORD else None

    return create_app(view, authenticate)


def csrf_of(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found, "no CSRF token on the login page"
    return found.group(1)


# -- in-process --------------------------------------------------------------------------------
def _timed(open_stream: Callable[[], Any]) -> tuple[float, float]:
    start = time.perf_counter()
    with open_stream() as r:
        first = time.perf_counter() - start
        body = r.read()
        assert r.status_code == 200 and body, r.status_code
    return first, time.perf_counter() - start


def inprocess_series(make: Callable[[], Any], path: str) -> dict[str, float]:
    from starlette.testclient import TestClient

    app = make()
    client = TestClient(app, base_url="http://127.0.0.1")
    token = csrf_of(client.get("/login").text)
    client.post("/login", data={"password": PASSWORD, "csrf": token})
    cold = _timed(lambda: client.stream("GET", path))
    warm = [_timed(lambda: client.stream("GET", path)) for _ in range(WARM_RUNS)]
    return {"cold_first_byte": cold[0], "cold_full": cold[1],
            "warm_first_byte": statistics.median(w[0] for w in warm),
            "warm_full": statistics.median(w[1] for w in warm)}


# -- over HTTP ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_login(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/login")
    r = conn.getresponse()
    pre = _cookie(r.getheader("set-cookie") or "")
    token = csrf_of(r.read().decode())
    conn.request("POST", "/login", body=urlencode({"password": PASSWORD, "csrf": token}),
                 headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": pre})
    r = conn.getresponse()
    r.read()
    assert r.status == 303, r.status
    conn.close()
    return _cookie(r.getheader("set-cookie") or "")


def _cookie(header: str) -> str:
    return header.split(";", 1)[0]


def http_get(port: int, path: str, cookie: str) -> tuple[float, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start = time.perf_counter()
    conn.request("GET", path, headers={"Cookie": cookie})
    r = conn.getresponse()
    first = time.perf_counter() - start
    body = r.read()
    full = time.perf_counter() - start
    conn.close()
    assert r.status == 200 and body, r.status
    return first, full


def http_series(make: Callable[[], Any], path: str) -> dict[str, float]:
    from coffre.web.serving import ThreadedServer

    server = ThreadedServer(make(), "127.0.0.1", free_port())
    server.start()
    try:
        cookie = http_login(server.port)
        cold = http_get(server.port, path, cookie)
        warm = [http_get(server.port, path, cookie) for _ in range(WARM_RUNS)]
    finally:
        server.stop()
    return {"cold_first_byte": cold[0], "cold_full": cold[1],
            "warm_first_byte": statistics.median(w[0] for w in warm),
            "warm_full": statistics.median(w[1] for w in warm)}


# -- Chromium ----------------------------------------------------------------------------------
PAINT = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  return {first_byte: nav.responseStart / 1000, paint: fcp ? fcp.startTime / 1000 : null,
          load: nav.loadEventEnd / 1000};
}"""


def chromium_series(make: Callable[[], Any], path: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    from coffre.web.serving import ThreadedServer

    server = ThreadedServer(make(), "127.0.0.1", free_port())
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with sync_playwright() as p:
            chromium = os.environ.get("COFFRE_CHROMIUM", "/usr/bin/chromium")
            browser = p.chromium.launch(executable_path=chromium,
                                        headless=True, args=["--no-sandbox", "--disable-gpu",
                                                             "--disable-background-networking",
                                                             "--disable-component-update", "--no-first-run"])
            # bypass_csp: the page forbids eval, which Playwright's wait_for_function uses
            page = browser.new_context(locale="fr-FR", bypass_csp=True).new_page()
            page.goto(base + "/login")
            page.fill("#password", PASSWORD)
            page.click("main button[type=submit]")
            page.wait_for_load_state()
            runs = []
            for _ in range(1 + WARM_RUNS):
                page.goto(base + path)
                page.wait_for_load_state("load")
                page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0",
                                       timeout=10_000)
                runs.append(page.evaluate(PAINT))
            browser.close()
    finally:
        server.stop()
    cold, warm = runs[0], runs[1:]
    return {"cold_first_byte": cold["first_byte"], "cold_paint": cold["paint"] or float("nan"),
            "warm_first_byte": statistics.median(w["first_byte"] for w in warm),
            "warm_paint": statistics.median((w["paint"] or float("nan")) for w in warm)}


def pharmacy(args: argparse.Namespace) -> int:
    work = Path(args.out or tempfile.mkdtemp(prefix="coffre-web-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("COFFRE_CACHE_DIR", str(work / "cache"))
    os.environ.setdefault("COFFRE_STATE_DIR", str(work / "machine-state"))
    src = make_tree(work / "src" / "officine")
    made, pwfile = make_repository(work / "repo", src, args.snapshots, args.weak_kdf)
    state = work / "agent"
    state.mkdir(exist_ok=True)
    from coffre.repository.repo import Repository
    from coffre.storage.local import LocalBackend

    newest = Repository.open(LocalBackend(str(work / "repo")), REPO_PASSWORD).snapshots()[-1]
    pages = {"status": "/", "history": "/history", "plots": "/plots",
             "calendar": "/restore/officine",
             "folder": f"/restore/officine/snapshot/{newest.id}?" + urlencode({"at": str(src / "docs")})}

    def make() -> Any:
        return make_app(work / "repo", pwfile, state)

    check_content(make, pages)

    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, path in pages.items():
        results[name] = {"in-process": inprocess_series(make, path), "http": http_series(make, path)}
        if not args.no_chromium:
            results[name]["chromium"] = chromium_series(make, path)
    print(f"pharmacy page, {args.snapshots} snapshots (made in {made:.1f} s; "
          f"{'weak' if args.weak_kdf else 'real'} Argon2 parameters)")
    print(f"{'page':<10} {'how':<11} {'cold 1st byte':>14} {'cold full/paint':>16} "
          f"{'warm 1st byte':>14} {'warm full/paint':>16}")
    for name, by_how in results.items():
        for how, r in by_how.items():
            cold_end = r.get("cold_full", r.get("cold_paint", float("nan")))
            warm_end = r.get("warm_full", r.get("warm_paint", float("nan")))
            print(f"{name:<10} {how:<11} {ms(r['cold_first_byte']):>14} {ms(cold_end):>16} "
                  f"{ms(r['warm_first_byte']):>14} {ms(warm_end):>16}")
    if args.json:
        Path(args.json).write_text(json.dumps({"snapshots": args.snapshots, "made_s": made,
                                               "weak_kdf": args.weak_kdf, "results": results}, indent=2))
    return 0


# What each page must show when the history is there (a page timed empty would prove nothing).
SHOWN = {"status": 'id="light"', "history": "<details", "plots": "<svg",
         "calendar": "/restore/officine/snapshot/", "folder": "lettre-"}


def check_content(make: Callable[[], Any], pages: dict[str, str]) -> None:
    from starlette.testclient import TestClient

    client = TestClient(make(), base_url="http://127.0.0.1")
    token = csrf_of(client.get("/login").text)
    client.post("/login", data={"password": PASSWORD, "csrf": token})
    for name, path in pages.items():
        text = client.get(path).text
        if SHOWN[name] not in text:
            raise SystemExit(f"the {name} page does not show its content ({SHOWN[name]!r} missing)")


def ms(seconds: float) -> str:
    return "—" if seconds != seconds else f"{seconds * 1000:.0f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["pharmacy"])
    ap.add_argument("--snapshots", type=int, default=1000)
    ap.add_argument("--weak-kdf", action="store_true", help="test-only Argon2 parameters (fast opening)")
    ap.add_argument("--no-chromium", action="store_true")
    ap.add_argument("--out", help="working folder (default: a new temporary one)")
    ap.add_argument("--json", help="write the numbers to this file")
    args = ap.parse_args(argv)
    return pharmacy(args)


if __name__ == "__main__":
    sys.exit(main())
