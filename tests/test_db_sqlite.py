"""SQLite hot backups: writers commit during the backup, in WAL and rollback-journal modes;
the restored file passes PRAGMA integrity_check and is one committed state."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import urllib.parse
from pathlib import Path

import pytest

from conftest import Coffre, snapshot_ids

FILLER_ROWS = 40_000  # ~10 MB: the copy takes long enough for writers to commit meanwhile


def make_db(path: Path, mode: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={mode}")
    conn.executescript("""
        CREATE TABLE ledger (n INTEGER PRIMARY KEY, amount INTEGER NOT NULL);
        CREATE TABLE counter (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL,
                              total INTEGER NOT NULL);
        CREATE TABLE filler (id INTEGER PRIMARY KEY, body TEXT);
        CREATE INDEX filler_body ON filler(body);
        INSERT INTO counter VALUES (1, 0, 0);
    """)
    conn.executemany("INSERT INTO filler(body) VALUES (?)",
                     ((os.urandom(120).hex(),) for _ in range(FILLER_ROWS)))
    conn.commit()
    conn.close()


class Writers:
    """Threads committing transactions that keep two invariants: ledger has rows 1..n, and
    counter holds n and the sum of the amounts."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        self.path = path
        self.stop = threading.Event()
        self.commits = 0
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            while not self.stop.is_set():
                conn.execute("BEGIN IMMEDIATE")
                n = conn.execute("SELECT n FROM counter").fetchone()[0] + 1
                conn.execute("INSERT INTO ledger VALUES (?, ?)", (n, n % 7))
                conn.execute("UPDATE counter SET n = ?, total = total + ?", (n, n % 7))
                conn.execute("UPDATE filler SET body = ? WHERE id = ?",
                             (os.urandom(8).hex(), n % FILLER_ROWS + 1))
                conn.execute("COMMIT")
                with self.lock:
                    self.commits += 1
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            conn.close()

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()
        assert not self.errors, self.errors


def wait_commits(w: Writers, at_least: int) -> None:
    while w.commits < at_least:
        assert not w.errors, w.errors
        threading.Event().wait(0.01)  # writers are real threads: wait for their progress


def check_one_state(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        n, total = conn.execute("SELECT n, total FROM counter").fetchone()
        assert conn.execute("SELECT count(*), coalesce(max(n), 0), coalesce(sum(amount), 0) FROM ledger"
                            ).fetchone() == (n, n, total)
        assert conn.execute("SELECT count(*) FROM filler").fetchone() == (FILLER_ROWS,)
        return int(n)
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_sqlite_backup_while_writers_commit(repo: Coffre, tmp_path: Path, mode: str) -> None:
    db = tmp_path / "officine.db"
    make_db(db, mode)
    with Writers(db) as w:
        wait_commits(w, 20)
        before = w.commits
        res = repo.ok("backup", "--sqlite", str(db), "--json")
        wait_commits(w, w.commits + 20)  # the writers went on after the backup
    assert w.commits > before
    record = json.loads(repo.ok("snapshots", "--json").out)[0]
    assert record["paths"] == ["@databases/sqlite-officine.db"]
    snap_id = res.json()["snapshot"]
    out = tmp_path / "restored" / "officine.db"
    out.parent.mkdir()
    repo.ok("restore-db", snap_id, "--sqlite", str(out))
    n = check_one_state(out)
    assert n > 0
    # The ledger is the source's, up to the committed state it was copied at.
    query = "SELECT n, amount FROM ledger WHERE n <= ? ORDER BY n"
    assert (sqlite3.connect(out).execute(query, (n,)).fetchall()
            == sqlite3.connect(db).execute(query, (n,)).fetchall())
    # The journal mode comes back as it was.
    mode_now = sqlite3.connect(out).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode_now == mode
    drill = repo.ok("drill", snap_id, "--json").json()
    assert drill["ok"] is True
    checks = {c["name"]: c for c in drill["databases"][0]["checks"]}
    assert checks["PRAGMA integrity_check"]["ok"]
    assert checks["row counts"]["ok"] and f"{n + 1 + FILLER_ROWS} rows" in checks["row counts"]["detail"]


def test_sqlite_second_backup_stores_little(repo: Coffre, tmp_path: Path) -> None:
    """A day's few changed pages cost a few blocks, not the whole file."""
    db = tmp_path / "officine.db"
    make_db(db, "wal")
    first = repo.ok("backup", "--sqlite", str(db), "--json").json()["summary"]
    conn = sqlite3.connect(db)
    conn.execute("UPDATE filler SET body = 'x' WHERE id IN (10, 20000)")
    conn.commit()
    conn.close()
    second = repo.ok("backup", "--sqlite", str(db), "--json").json()["summary"]
    assert second["bytes_total"] == first["bytes_total"]
    assert second["data_added"] < first["data_added"] / 10


def test_sqlite_drill_finds_a_corrupt_database(repo: Coffre, tmp_path: Path) -> None:
    """A database already damaged on the server backs up page for page; the drill's
    integrity check is what finds it."""
    db = tmp_path / "officine.db"
    make_db(db, "delete")
    conn = sqlite3.connect(db)
    root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'filler_body'").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:  # scramble the index's root page, past its header
        f.seek((root - 1) * page_size + 100)
        f.write(os.urandom(page_size - 200))
    repo.ok("backup", "--sqlite", str(db))
    res = repo("drill")
    assert res.code == 1, res
    assert "FAIL" in res.out and "integrity_check" in res.out
    assert "drill FAILED" in res.out


def test_sqlite_restore_refuses_a_database_in_place(repo: Coffre, tmp_path: Path) -> None:
    db = tmp_path / "officine.db"
    make_db(db, "wal")
    repo.ok("backup", "--sqlite", str(db))
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE keep (x)")
    conn.execute("INSERT INTO keep VALUES (42)")
    conn.commit()
    conn.close()
    res = repo("restore-db", "latest", "--sqlite", str(other))
    assert res.code == 1 and "not empty" in res.err and "--force" in res.err, res
    assert sqlite3.connect(other).execute("SELECT x FROM keep").fetchall() == [(42,)]
    # An old -wal beside the target would be replayed into the restored file: refused too.
    (tmp_path / "new.db-wal").write_bytes(b"stale")
    res = repo("restore-db", "latest", "--sqlite", str(tmp_path / "new.db"))
    assert res.code == 1 and "new.db-wal exists" in res.err, res
    repo.ok("restore-db", "latest", "--sqlite", str(tmp_path / "new.db"), "--force")
    assert not (tmp_path / "new.db-wal").exists()
    check_one_state(tmp_path / "new.db")
    repo.ok("restore-db", "latest", "--sqlite", str(other), "--force")
    check_one_state(other)


def test_sqlite_failures_write_no_snapshot(repo: Coffre, tmp_path: Path) -> None:
    res = repo("backup", "--sqlite", str(tmp_path / "missing.db"))
    assert res.code == 1 and "no such file" in res.err and "no snapshot was written" in res.err, res
    notdb = tmp_path / "notes.db"
    notdb.write_bytes(b"this is not a database" * 1000)
    res = repo("backup", "--sqlite", str(notdb))
    assert res.code == 1 and "not a SQLite database" in res.err, res
    # Several sources: one failing database means no snapshot at all, files included.
    good = tmp_path / "good.db"
    make_db(good, "wal")
    res = repo("backup", "--sqlite", str(good), "--sqlite", str(notdb), str(tmp_path))
    assert res.code == 1, res
    assert snapshot_ids(repo) == []


def test_sqlite_locked_too_long_is_an_error(repo: Coffre, tmp_path: Path) -> None:
    """Rollback-journal mode: a writer holding its lock past the busy timeout fails the backup
    with a clear message (it never copies a half-written file)."""
    db = tmp_path / "officine.db"
    make_db(db, "delete")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        res = repo("backup", "--sqlite", str(db), env={"COFFRE_SQLITE_BUSY_TIMEOUT": "0.2"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert res.code == 1 and "locked by another program" in res.err, res
    assert snapshot_ids(repo) == []


def test_sqlite_over_one_gib_and_empty(repo: Coffre, tmp_path: Path) -> None:
    """Past 1 GiB SQLite skips its lock-byte page; a 0-byte file is an empty database."""
    db = tmp_path / "big.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA page_size = 65536")
    conn.execute("CREATE TABLE scans (id INTEGER PRIMARY KEY, image BLOB)")
    conn.executemany("INSERT INTO scans (image) VALUES (zeroblob(?))", ((64 << 20,) for _ in range(17)))
    conn.execute("INSERT INTO scans (image) VALUES (?)", (b"last row past the lock page",))
    conn.commit()
    conn.close()
    assert db.stat().st_size > 1 << 30
    empty = tmp_path / "empty.db"
    empty.touch()
    repo.ok("backup", "--sqlite", str(db), "--sqlite", str(empty))
    out = tmp_path / "restored.db"
    repo.ok("restore-db", "latest", "--sqlite", str(out), "--database", str(db))
    conn = sqlite3.connect(out)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    last = conn.execute("SELECT image FROM scans WHERE id = 18").fetchone()
    assert last == (b"last row past the lock page",)
    conn.close()
    out.unlink()
    repo.ok("restore-db", "latest", "--sqlite", str(out), "--database", str(empty))
    assert sqlite3.connect(out).execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_sqlite_database_whose_name_is_not_utf8(repo: Coffre, tmp_path: Path) -> None:
    """An old system's Latin-1 file name ('caisse-été.db' in a 'données' folder), in WAL mode:
    it backs up, drills, restores, and is listed under its name with the odd bytes written
    \\xe9. A restore target whose name holds '#' and '?' is the file named so."""
    folder = os.fsencode(tmp_path) + b"/donn\xe9es"
    os.mkdir(folder)
    db = folder + b"/caisse-\xe9t\xe9.db"
    plain = tmp_path / "plain.db"  # sqlite3 cannot name it either: made elsewhere, renamed
    with contextlib.closing(sqlite3.connect(plain)) as c:
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE ventes (id INTEGER PRIMARY KEY, montant INTEGER)")
        c.executemany("INSERT INTO ventes VALUES (?, ?)", [(i, i * 3) for i in range(500)])
        c.commit()
    os.rename(plain, db)
    res = repo("backup", "--sqlite", os.fsdecode(db))
    assert res.code == 0, res
    assert os.listdir(folder) == [b"caisse-\xe9t\xe9.db"]
    drill = repo.ok("drill", "--json").json()
    assert drill["ok"] is True
    assert "500 rows" in json.dumps(drill)
    recorded = os.fsdecode(folder).replace("\udce9", "\\xe9") + "/caisse-\\xe9t\\xe9.db"
    assert drill["databases"][0]["name"] == recorded
    target = tmp_path / "copie #1?.db"
    repo.ok("restore-db", "latest", "--sqlite", str(target))
    uri = f"file:{urllib.parse.quote(str(target))}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as c:
        assert c.execute("SELECT count(*), sum(montant) FROM ventes").fetchone() == (500, 3 * 124750)
    latin = os.fsdecode(folder + b"/restaur\xe9e.db")
    repo.ok("restore-db", "latest", "--sqlite", latin)
    assert os.path.getsize(latin) == os.path.getsize(target)
