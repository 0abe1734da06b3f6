"""Helpers of the restore pages' tests: a pharmacy's files (with hostile names) backed up by
the real `coffre` command into a real repository, the agent's configuration naming it, and
the pharmacy page app (web.local.create_app) with a known password."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from coffre.agent.model import Agent, Config, Job, Web
from coffre.agent.model import Repository as RepoConfig
from coffre.agent.status import StatusStore
from coffre.web.guard import Identity
from coffre.web.local.app import AgentView, create_app

PAGE_PASSWORD = "mot de passe de la pharmacie"
# A file name cannot hold '/': the path <script>alert(1)</script>.txt is a folder
# "<script>alert(1)<" holding "script>.txt"; and a file whose name is an HTML tag.
XSS_FOLDER, XSS_FILE = "<script>alert(1)<", "script>.txt"
XSS_PATH = XSS_FOLDER + "/" + XSS_FILE
XSS_NAME = "<img src=x onerror=alert(2)>.txt"
QUOTES_NAME = "a\"b'c & d.txt"
DAY = 86400.0


def make_files(root: Path, seed: int = 3) -> Path:
    """A small pharmacy folder: letters, a scan, an invoice, hostile names, a database."""
    rnd = random.Random(seed)
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "lettre-1.txt").write_text("Bonjour Madame,\n" * 40)
    (root / "docs" / "ordonnance-2026.pdf").write_bytes(rnd.randbytes(300_000))
    (root / "scans" / "2026").mkdir(parents=True)
    for i in range(3):
        (root / "scans" / "2026" / f"scan-{i}.jpg").write_bytes(rnd.randbytes(50_000 + i))
    (root / "bizarre").mkdir()
    (root / "bizarre" / XSS_NAME).write_text("xss\n")
    (root / "bizarre" / XSS_FOLDER).mkdir()
    (root / "bizarre" / XSS_PATH).write_text("script\n")
    (root / "bizarre" / QUOTES_NAME).write_text("quotes\n")
    return root


def make_database(path: Path, rows: int = 50) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE ventes (id INTEGER PRIMARY KEY, produit TEXT)")
    conn.executemany("INSERT INTO ventes (produit) VALUES (?)", [(f"produit {i}",) for i in range(rows)])
    conn.commit()
    conn.close()
    return path


def shift_env(tmp_path: Path, seconds: float) -> dict[str, str]:
    """The `coffre` child's clock moved by `seconds` (core/clock.py's test switch)."""
    shift = tmp_path / f"shift-{seconds}"
    shift.write_text(str(seconds))
    return {"COFFRE_TEST_CLOCK_SHIFT_FILE": str(shift)}


def backup(coffre: Any, *args: str, shift: float = 0.0, tmp_path: Path | None = None) -> str:
    env = shift_env(tmp_path, shift) if shift and tmp_path is not None else None
    return str(coffre.ok("backup", *args, "--json", env=env).json()["snapshot"])


def agent_config(tmp_path: Path, coffre: Any, *, jobs: dict[str, tuple[str, ...]] | None = None,
                 area: Path | None = None) -> Config:
    """The agent's configuration: one repository (the runner's), jobs on it."""
    repo = RepoConfig("local", str(coffre.repo), password_file=str(coffre.pwfile))
    named = {name: Job(name, "local", paths=paths)
             for name, paths in (jobs or {"officine": (str(tmp_path / "officine"),)}).items()}
    return Config(path=str(tmp_path / "agent.toml"),
                  agent=Agent(state_dir=str(tmp_path / "agent-state"), timezone="Europe/Paris", nice=0,
                              ionice="none"),
                  repositories={"local": repo}, jobs=named,
                  web=Web(restore_area=str(area) if area is not None else None))


def authenticate(form: dict[str, str], address: str) -> Identity | None:
    return Identity("pharmacie", "admin") if form.get("password") == PAGE_PASSWORD else None


def make_app(config: Config, tmp_path: Path) -> Any:
    (tmp_path / "agent-state").mkdir(exist_ok=True)
    store = StatusStore(tmp_path / "agent-state" / "agent.sqlite")
    view = AgentView(config=lambda: config, store=lambda: store, run_now=lambda job: (False, 0),
                     running=lambda: {})
    return create_app(view, authenticate)


def csrf_of(html: str) -> str:
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start:html.index('"', start)]


def logged_in(app: Any) -> TestClient:
    client = TestClient(app, base_url="http://127.0.0.1")
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"password": PAGE_PASSWORD, "csrf": token}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return client


def wait_task(client: TestClient, location: str, timeout: float = 120.0) -> str:
    """Poll a task's progress part (as htmx does) until it stops asking to be polled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        part = client.get(location + "/progress")
        assert part.status_code == 200
        if "hx-trigger" not in part.text:
            return part.text
        time.sleep(0.2)  # a child process is working; nothing here waits for a clock
    raise AssertionError(f"task {location} still running after {timeout} s")
