"""Zero knowledge holds in the console: a real `coffre server` process (TLS) receives real
backups from the real client, of files and folders with distinctive names and a database
with distinctive content; an admin logs in to /console with a password and a TOTP code, and
every GET route of the console's route table (new pages join by themselves) plus every link
found in the pages is fetched: no response holds a file name, a folder name or a line of the
database. Also: `/` leads to the console, /v1 is unchanged, the cookie is Secure over TLS."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pyotp

from coffre.web.hosted import accounts
from coffre.web.hosted.app import console_routes, kit_for
from console_support import PASSWORD, SETUP
from server_process import CoffreServer, fresh_server  # noqa: F401 (fixture)
from web_checks import unlabelled

from conftest import Coffre

SECRETS = ("ordonnance-DUPONT-secret", "dossier-patients-MARTIN", "PATIENT-DURAND-SECRET",
           "CONTENU-CONFIDENTIEL-DUPONT", "base-officine")
# what a new page's path parameter is filled with, by name (a page with another one fails
# here until it is added)
PARAMS = {"tenant": "pharmacie-crawl", "name": "app.css", "repo": "officine", "problem": "failing"}


def tree(root: Path) -> Path:
    folder = root / "dossier-patients-MARTIN"
    folder.mkdir(parents=True)
    (folder / "ordonnance-DUPONT-secret.pdf").write_bytes(b"%PDF-1.4 CONTENU-CONFIDENTIEL-DUPONT\n" * 50)
    db = sqlite3.connect(root / "base-officine.sqlite")
    db.execute("CREATE TABLE patients (nom TEXT)")
    db.execute("INSERT INTO patients VALUES ('PATIENT-DURAND-SECRET')")
    db.commit()
    db.close()
    return root


class Browser:
    """A cookie-keeping HTTPS client of the server (urllib3)."""

    def __init__(self, server: CoffreServer) -> None:
        self.http, self.base, self.cookies = server.client(), server.base, {}  # type: dict[str, str]
        self.set_cookies: list[str] = []

    def request(self, method: str, path: str, fields: dict[str, str] | None = None) -> Any:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if fields is not None:
            from urllib.parse import urlencode

            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body: bytes | None = urlencode(fields).encode()
        else:
            body = None
        r = self.http.request(method, self.base + path, body=body, headers=headers, redirect=False)
        for header in r.headers.getlist("set-cookie"):
            self.set_cookies.append(header)
            name, _sep, rest = header.partition("=")
            value = rest.split(";")[0]
            if "max-age=0" in header.lower() or 'expires=thu, 01 jan 1970' in header.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return r


def test_no_console_route_shows_a_file_name_or_database_content(
        fresh_server: CoffreServer, tmp_path: Path, pwfile: Path, cache_dir: Path) -> None:  # noqa: F811
    tokens = fresh_server.tenant("pharmacie-crawl")
    c = Coffre(fresh_server.url("officine"), pwfile, cache_dir)
    c.env.update(fresh_server.env())
    c.env["COFFRE_SERVER_TOKEN"] = tokens["backup"]
    c.env.pop("COFFRE_SERVER_TOKEN_FILE", None)
    c.ok("init")
    src = tree(tmp_path / "src")
    c.ok("backup", str(src))
    (src / "dossier-patients-MARTIN" / "ordonnance-DUPONT-secret.pdf").write_bytes(b"changed")
    c.ok("backup", str(src))
    now = time.time()
    status = {"version": 1, "site": "comptoir", "job": "officine", "trigger": "schedule", "outcome": "failed",
              "sent": now, "started": now - 60, "finished": now - 5, "next_due": now + 3600, "window": 7200,
              "steps": [{"name": "backup", "ok": False, "exit_code": 1, "seconds": 3.0}]}
    posted = fresh_server.client().request(
        "POST", fresh_server.base + "/v1/status", body=json.dumps(status).encode(),
        headers={"Authorization": "Bearer " + tokens["backup"], "Content-Type": "application/json"})
    assert posted.status == 201, posted.data

    ctx = fresh_server.context()
    try:
        _account, enrol = accounts.add(ctx, SETUP, "root", "admin", PASSWORD)
        table = console_routes(kit_for(ctx))
    finally:
        ctx.db.close()

    b = Browser(fresh_server)
    root = b.request("GET", "/")
    assert root.status in (303, 307) and root.headers["location"] == "/console/"
    assert fresh_server.client().request("GET", fresh_server.base + "/v1/whoami").status == 401
    form = b.request("GET", "/console/login").data.decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    done = b.request("POST", "/console/login", {"csrf": csrf, "user": "root", "password": PASSWORD,
                                                "code": pyotp.TOTP(enrol.secret).now()})
    assert done.status == 303 and done.headers["location"] == "/console/", done.data[:300]
    cookie = [h for h in b.set_cookies if h.startswith("coffre_session=")][-1].lower()
    assert "secure" in cookie and "httponly" in cookie
    assert "samesite=strict" in cookie and "path=/console/" in cookie

    starts: list[str] = []
    for route in table:
        methods = getattr(route, "methods", None) or set()
        path = getattr(route, "path", "")
        if "GET" not in methods or path in ("/login",):
            continue
        for param in re.findall(r"{(\w+)(?::\w+)?}", path):
            assert param in PARAMS, f"the crawl cannot fill {{{param}}} of {path}: add it to PARAMS"
            path = re.sub(r"{" + param + r"(?::\w+)?}", PARAMS[param], path)
        starts.append("/console" + path)
    assert {"/console/", "/console/billing", "/console/billing.csv", "/console/accounts"} <= set(starts)
    seen: set[str] = set()
    shapes: dict[tuple[str, tuple[str, ...]], int] = {}  # a path with the same query keys: 3 times
    todo = deque(starts)
    fetched = []
    while todo and len(seen) < 300:
        path = todo.popleft()
        if path in seen:
            continue
        seen.add(path)
        r = b.request("GET", path)
        assert r.status in (200, 303), (path, r.status)
        body = r.data.decode("utf-8", "replace")
        fetched.append(path)
        if r.headers.get("content-type", "").startswith("text/html"):
            assert not unlabelled(body), (path, unlabelled(body))  # every control has a name
        for secret in SECRETS:
            assert secret not in body, f"{path} shows {secret}"
        if r.headers.get("content-type", "").startswith("text/html"):
            for href in re.findall(r'href="([^"]+)"', body):
                target = urljoin(fresh_server.base + path, href.replace("&amp;", "&"))
                parts = urlsplit(target)
                shape = (parts.path, tuple(sorted(k.split("=")[0] for k in parts.query.split("&"))))
                if target.startswith(fresh_server.base + "/console/") and "/static/" not in parts.path \
                        and shapes.get(shape, 0) < 3:
                    shapes[shape] = shapes.get(shape, 0) + 1
                    todo.append(parts.path + ("?" + parts.query if parts.query else ""))
    assert len(fetched) >= 10, fetched
    assert "/console/?light=red" in fetched and any(p.startswith("/console/billing?month=") for p in fetched)
    # and the pages did show what the provider may see
    home = b.request("GET", "/console/").data.decode()
    assert "pharmacie-crawl" in home and "comptoir" in home
