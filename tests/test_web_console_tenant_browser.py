"""The console's tenant pages in headless Chromium, against the server's real API served on
the same context: the provider revokes a token and the pharmacy's next backup with it is
refused; restores the recycle bin after a prune and the repository checks clean with both
snapshots back; exports the usage CSV; untrusted names run no script; screenshots of every
page at desk and phone widths."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from coffre.server import audit, metering, tenants, tokens
from coffre.server.app import create_app
from coffre.server.context import ServerContext
from coffre.server.db import tables
from coffre.web.hosted.app import ConsoleKit, kit_for, mount
from console_support import ensure_account
from server_support import add_tenant, make_context, serving

from conftest import Coffre, make_tree

TENANT = "pharmacie-du-port"
XSS = "<script>alert(1)</script>"


class Served:
    """The server's API and the console, each on its loopback port, over one context."""

    def __init__(self, ctx: ServerContext, api: str, console: str, kit: ConsoleKit) -> None:
        self.ctx, self.api, self.console, self.kit = ctx, api, console, kit

    def client(self, token: str, pwfile: Path, cache: Path) -> Coffre:
        c = Coffre(f"{self.api}/officine", pwfile, cache)
        c.env["COFFRE_SERVER_TOKEN"] = token
        c.env.pop("COFFRE_SERVER_TOKEN_FILE", None)
        return c

    def login(self, page: Any, user: str, role: str) -> str:
        """The browser holds a session of `user` (the accounts' login is another page's)."""
        ensure_account(self.kit.ctx, user, role)
        s = self.kit.sessions.new(user, role)
        page.context.add_cookies([{"name": self.kit.sessions.cookie_name, "value": s.id,
                                   "url": self.console + "/console/"}])
        return self.console + "/console/tenants/" + TENANT


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    ctx = make_context(tmp_path / "srv")
    kit = kit_for(ctx, secure=False)
    with ExitStack() as stack:
        api = stack.enter_context(serving(create_app(ctx)))
        console = stack.enter_context(serving(Starlette(routes=[mount(kit)])))
        yield Served(ctx, api, console, kit)
    ctx.close()


def run(c: Coffre, *args: str) -> Any:
    return c(*args, "--insecure-http")


def ok(c: Coffre, *args: str) -> Any:
    res = run(c, *args)
    assert res.code == 0, res
    return res


def snapshot_ids(c: Coffre) -> list[str]:
    return [s["id"] for s in ok(c, "snapshots", "--json").json()]


def watch_dialogs(page: Any) -> list[str]:
    seen: list[str] = []
    page.on("dialog", lambda d: (seen.append(d.message), d.dismiss()))
    return seen


def test_the_provider_revokes_a_token_and_the_next_backup_is_refused(
        served: Served, browser_page: Any, shots: Any, tmp_path: Path, pwfile: Path, cache_dir: Path) -> None:
    toks = add_tenant(served.ctx, TENANT, quota_soft=40 * 1024**3, quota_hard=50 * 1024**3)
    with served.ctx.db.begin() as conn:
        conn.execute(tables.tenants.update().where(tables.tenants.c.name == TENANT).values(
            display_name=XSS, contact="04 91 00 00 00"))
    src = make_tree(tmp_path / "src", big=300_000)
    pharmacy = served.client(toks["backup"], pwfile, cache_dir)
    ok(pharmacy, "init")
    ok(pharmacy, "backup", str(src))
    metering.sample(served.ctx.db, served.ctx.clock.now_ns())

    page = browser_page
    dialogs = watch_dialogs(page)
    base = served.login(page, "anne", "operator")
    page.goto(base)
    assert page.inner_text("h1") == XSS  # the display name as text, no script run
    assert "officine" in page.inner_text("main table")
    shots(page, "tenant")
    shots.phone(page, "tenant")
    page.goto(base + "/usage")
    assert page.locator("svg.plot").count() == 1
    shots(page, "tenant-usage")
    shots.phone(page, "tenant-usage")

    page.goto(base + "/tokens")
    page.fill("#token-label", XSS)
    page.click("form[action$='/tokens'] button[type=submit]")
    page.wait_for_url(base + "/tokens")
    secret = page.input_value("#new-secret")
    assert secret.startswith("cft_") and tokens.token_id_of(secret)
    assert XSS in page.inner_text("table.tokens")
    shots(page, "tenant-tokens-new")
    shots.phone(page, "tenant-tokens-new")
    page.reload()
    assert page.locator("#new-secret").count() == 0  # shown once

    backup_id = tokens.token_id_of(toks["backup"])
    row = page.locator(f"#token-{backup_id}")
    row.locator("input[name=motive]").fill("ticket 4521: " + XSS)
    row.locator("button").click()
    page.wait_for_url(base + "/tokens")
    assert backup_id in page.inner_text(".flash-ok")
    assert page.locator(f"#token-{backup_id} .token-revoked").count() == 1
    shots(page, "tenant-tokens")
    shots.phone(page, "tenant-tokens")

    refused = run(pharmacy, "backup", str(src))
    assert refused.code != 0 and "refused the token" in refused.err, refused
    assert toks["backup"] not in refused.out + refused.err

    page.goto(base + "/audit")
    assert "admin.token.revoke" in page.inner_text("table.audit")
    assert "console:anne@127.0.0.1" in page.inner_text("table.audit")
    page.click("form[action$='/audit/verify'] button")
    page.wait_for_url(base + "/audit")
    assert page.locator(".verify-ok").count() == 1
    shots(page, "tenant-audit")
    shots.phone(page, "tenant-audit")
    assert dialogs == []


def test_the_provider_restores_the_bin_after_a_prune_and_exports_usage(
        served: Served, browser_page: Any, shots: Any, tmp_path: Path, pwfile: Path, cache_dir: Path) -> None:
    toks = add_tenant(served.ctx, TENANT)
    src = make_tree(tmp_path / "src", big=300_000)
    pharmacy = served.client(toks["backup"], pwfile, cache_dir)
    ok(pharmacy, "init")
    ok(pharmacy, "backup", str(src))
    (src / "scans" / "2026" / "scan-0.jpg").write_bytes(b"replaced" * 40_000)
    ok(pharmacy, "backup", str(src))
    assert len(snapshot_ids(pharmacy)) == 2
    thief = served.client(toks["prune"], pwfile, tmp_path / "cache-thief")
    ok(thief, "forget", "--keep-last", "1", "--prune")
    assert len(snapshot_ids(pharmacy)) == 1
    with served.ctx.db.read() as conn:
        t = tenants.by_name(conn, TENANT)
    assert t is not None and t.binned_bytes > 0
    metering.sample(served.ctx.db, served.ctx.clock.now_ns())

    page = browser_page
    dialogs = watch_dialogs(page)
    base = served.login(page, "anne", "admin")
    page.goto(base + "/bin")
    assert page.locator("table.bin-objects tbody tr").count() > 0
    shots(page, "tenant-bin")
    shots.phone(page, "tenant-bin")
    page.select_option("#restore-repo", "officine")
    page.fill("#restore-motive", "ticket 4522: the prune token was stolen")
    page.click("#restore button[type=submit]")
    page.wait_for_url(base + "/bin")
    assert "restored" in page.inner_text(".flash-ok") or "restaur" in page.inner_text(".flash-ok")
    assert page.locator("table.bin-objects").count() == 0  # the bin is empty (locks never come back)

    # The forget left its record (a tombstone) naming the snapshot: every machine of the
    # pharmacy reports the snapshot stored again — what a storage rolled back would look like —
    # until the pharmacy acknowledges the restore; then the repository checks clean, whole.
    noticed = run(pharmacy, "check")
    assert noticed.code == 1 and "is stored again although it was forgotten" in noticed.out, noticed
    ok(pharmacy, "acknowledge")
    assert len(snapshot_ids(pharmacy)) == 2  # both snapshots are back
    assert "no errors" in ok(pharmacy, "check", "--read-data").out
    with served.ctx.db.read() as conn:
        t = tenants.by_name(conn, TENANT)
    assert t is not None
    with served.ctx.db.read() as conn:
        (entry,) = [e for e in audit.latest(conn, t.id, 1000) if e.operation == "admin.recycle.restore"]
    assert entry.client == "console:anne@127.0.0.1" and entry.count > 0
    assert "ticket 4522" in entry.detail

    page.goto(base + "/usage")
    month = audit.day_of(served.ctx.clock.now_ns())[:7]
    with page.expect_download() as info:
        page.click(f"a[href$='usage.csv?month={month}']")
    got = Path(info.value.path()).read_bytes()
    expected = metering.csv_text(metering.report(served.ctx.db, month, served.ctx.clock.now_ns(), t.id).rows)
    assert got == expected.encode() and TENANT in got.decode()
    page.goto(base + "/audit")
    with page.expect_download() as info:
        page.click("form[action$='/audit.jsonl'] button")
    lines = Path(info.value.path()).read_text().splitlines()
    assert any('"operation":"admin.recycle.restore"' in line for line in lines)

    page.goto(base + "/bin")
    shots(page, "tenant-bin-empty")
    assert dialogs == []
