"""How fast the console's fleet page (`/console/`) answers for a large fleet (issue 16: under a
second to first paint for 500 tenants).

    .venv/bin/python bench/web_console.py [--tenants 500] [--days 30] [--runs 10] [--chromium]

Builds a server database (SQLite, in a temporary folder) with N tenants: each with a status
record a day for `--days` days (one job; one tenant in 7 failing now, one in 11 never
reporting, one in 13 over its soft quota), `--days` days of usage, an alert row per failing
one. Then, logged in as an admin (password + TOTP), measures the fleet page:
- in-process (Starlette's TestClient): the first request after the app is built (cold: the
  templates compiled, the pool's connections opened) and the median of `--runs` more (warm);
- over HTTP (uvicorn on a loopback port, one keep-alive connection): time to first byte
  (the response's headers) and to the last byte, cold and warm;
- with --chromium: Debian's Chromium loading the page, from navigation start to the response's
  first byte and to the first contentful paint (Performance API), cold and warm.
One JSON object on stdout; times in milliseconds.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

NS = 10**9
H = 3600 * NS
PASSWORD = "benchmark password, long enough"  # noqa: S105 (a throw-away database)


def build(data: Path, tenants_n: int, days: int) -> tuple[Any, dict[str, str]]:
    """The server context over a new database holding the fleet; admins' TOTP secrets."""
    import sqlalchemy as sa

    from coffre.core.clock import SystemClock
    from coffre.server import audit, tenants
    from coffre.server.admin import Actor
    from coffre.server.context import ServerContext
    from coffre.server.db import Database, tables
    from coffre.server.settings import Settings
    from coffre.server.store import ObjectStore
    from coffre.web.hosted import accounts

    data.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=data)
    db = Database(settings.database_url)
    db.create()
    ctx = ServerContext(settings, db, ObjectStore(settings.objects_location), SystemClock())
    now = ctx.clock.now_ns()
    reports: list[dict[str, Any]] = []
    usage: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    with db.begin() as conn:
        for i in range(tenants_n):
            tid = tenants.add(conn, f"pharmacie-{i:04d}", now - 400 * 86400 * NS, f"Pharmacie n° {i}",
                              "04 91 00 00 00", quota_soft=40 * 10**9, quota_hard=50 * 10**9)
            stored = (41 if i % 13 == 5 else i % 40 + 1) * 10**9
            te = tables.tenants
            conn.execute(te.update().where(te.c.id == tid).values(stored_bytes=stored))
            for d in range(days):
                usage.append({"tenant_id": tid, "day": audit.day_of(now - d * 86400 * NS),
                              "stored_bytes": stored,
                              "binned_bytes": 0, "sampled_ns": now - d * 86400 * NS, "uploads": 10,
                              "uploaded_bytes": 10**8, "downloads": 0, "downloaded_bytes": 0})
            if i % 11 == 3:
                continue
            failing = i % 7 == 0
            for d in range(days, -1, -1):
                at = now - d * 86400 * NS - H
                outcome = "failed" if failing and d == 0 else "ok"
                body = {"version": 1, "site": "comptoir", "job": "officine", "outcome": outcome,
                        "window": 7200,
                        "steps": [{"name": "backup", "ok": outcome == "ok"}],
                        "copies": [{"name": "hors-site", "state": "ok"}]}
                reports.append({"tenant_id": tid, "token_id": "bench", "received_ns": at, "site": "comptoir",
                                "job": "officine", "outcome": outcome, "started_ns": at - 600 * NS,
                                "finished_ns": at - 60 * NS, "next_due_ns": at + 24 * H,
                                "body": json.dumps(body)})
            if failing:
                alerts.append({"tenant_id": tid, "problem": "failing", "since_ns": now - H,
                               "notified_ns": None, "cleared_ns": None})
        for table, rows in ((tables.usage_days, usage), (tables.status_reports, reports),
                            (tables.fleet_alerts, alerts)):
            for start in range(0, len(rows), 5000):
                conn.execute(sa.insert(table), rows[start:start + 5000])
    secrets = {}
    for name in ("bench", "bench-http", "bench-chromium"):  # a code is accepted once: one account a phase
        secrets[name] = accounts.add(ctx, Actor("", "bench"), name, "admin", PASSWORD)[1].secret
    return ctx, secrets


def code(secret: str) -> str:
    import pyotp

    return str(pyotp.TOTP(secret).now())


def in_process(app: Any, user: str, secret: str, runs: int) -> dict[str, float]:
    from starlette.testclient import TestClient

    c = TestClient(app, base_url="http://127.0.0.1")
    form = c.get("/console/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    fields = {"csrf": csrf, "user": user, "password": PASSWORD, "code": code(secret)}
    r = c.post("/console/login", data=fields,
               follow_redirects=False)
    assert r.status_code == 303, r.text[:300]
    times = []
    for _ in range(runs + 1):
        t = time.perf_counter()
        page = c.get("/console/")
        times.append((time.perf_counter() - t) * 1000)
        assert page.status_code == 200 and "pharmacie-0000" in page.text
    return {"cold_ms": round(times[0], 1), "warm_ms": round(statistics.median(times[1:]), 1),
            "bytes": len(page.content)}


class Served:
    def __init__(self, app: Any) -> None:
        import socket

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def over_http(port: int, user: str, secret: str, runs: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/console/login")
    r = conn.getresponse()
    body = r.read().decode()
    cookie = r.getheader("set-cookie", "").split(";")[0]
    csrf = re.search(r'name="csrf" value="([^"]+)"', body).group(1)  # type: ignore[union-attr]
    form = urlencode({"csrf": csrf, "user": user, "password": PASSWORD, "code": code(secret)})
    conn.request("POST", "/console/login", body=form, headers={
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    r = conn.getresponse()
    r.read()
    assert r.status == 303, r.status
    cookie = r.getheader("set-cookie", "").split(";")[0]
    first, full = [], []
    for _ in range(runs + 1):
        t = time.perf_counter()
        conn.request("GET", "/console/", headers={"Cookie": cookie})
        r = conn.getresponse()
        first.append((time.perf_counter() - t) * 1000)
        r.read()
        full.append((time.perf_counter() - t) * 1000)
        assert r.status == 200
    conn.close()
    return {"cold_first_byte_ms": round(first[0], 1), "cold_last_byte_ms": round(full[0], 1),
            "warm_first_byte_ms": round(statistics.median(first[1:]), 1),
            "warm_last_byte_ms": round(statistics.median(full[1:]), 1)}


def chromium(port: int, user: str, secret: str, runs: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=args)
        # bypass_csp: the console forbids eval, which Playwright's wait_for_function uses
        page = browser.new_page(locale="fr-FR", bypass_csp=True)
        base = f"http://127.0.0.1:{port}"
        page.goto(base + "/console/login")
        page.fill("#user", user)
        page.fill("#password", PASSWORD)
        page.fill("#code", code(secret))
        page.click("button[type=submit].primary")
        page.wait_for_url(base + "/console/")
        timings = []
        for _ in range(runs + 1):
            page.goto(base + "/console/", wait_until="load")
            try:  # headless Chromium may record the paint just after the load event
                page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0",
                                       timeout=5000)
            except Exception:  # noqa: S110 (no paint entry: reported as -1)
                pass
            timings.append(page.evaluate("""() => {
                const n = performance.getEntriesByType('navigation')[0];
                const p = performance.getEntriesByName('first-contentful-paint')[0];
                return [n.responseStart - n.startTime, p ? p.startTime : -1, n.loadEventEnd - n.startTime];
            }"""))
        browser.close()
    warm = timings[1:]
    return {"cold_first_byte_ms": round(timings[0][0], 1), "cold_first_paint_ms": round(timings[0][1], 1),
            "warm_first_byte_ms": round(statistics.median(t[0] for t in warm), 1),
            "warm_first_paint_ms": round(statistics.median(t[1] for t in warm), 1),
            "warm_load_ms": round(statistics.median(t[2] for t in warm), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tenants", type=int, default=500)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--chromium", action="store_true")
    args = ap.parse_args()
    from coffre.web.hosted.app import create_console

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        ctx, secrets = build(Path(tmp) / "server", args.tenants, args.days)
        built_s = time.perf_counter() - t
        try:
            out: dict[str, Any] = {"tenants": args.tenants, "days": args.days, "runs": args.runs,
                                   "build_s": round(built_s, 1)}
            out["in_process"] = in_process(create_console(ctx, secure=False), "bench", secrets["bench"],
                                           args.runs)
            served = Served(create_console(ctx, secure=False))
            try:
                out["http"] = over_http(served.port, "bench-http", secrets["bench-http"], args.runs)
                if args.chromium:
                    out["chromium"] = chromium(served.port, "bench-chromium", secrets["bench-chromium"],
                                               args.runs)
            finally:
                served.stop()
        finally:
            ctx.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
