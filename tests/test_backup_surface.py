"""What a backup shows and chooses (issue 13): databases captured by their engine are not
also copied raw, the parent is the last snapshot of the same sources (a stream or databases
only never is, nor hides it), the summary says what was read and what was sent, and the
progress counts files and bytes against totals a scanner finds."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from coffre.core.progress import NULL_PROGRESS, Progress
from coffre.ops.backup import Backup, BackupOptions
from coffre.repository.cache import RepoCache
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.sources.files import Excluder
from coffre.sources.scan import Scanner, count
from coffre.storage.local import LocalBackend

from conftest import Coffre, age_tree, make_tree, tree_digest

PASSWORD = "correct horse battery staple"


def _pharmacy(root: Path) -> Path:
    """A tree holding a live SQLite database in WAL mode (its -wal and -shm beside it)."""
    lgo = root / "lgo"
    (lgo / "scans").mkdir(parents=True)
    (lgo / "scans" / "ordonnance-1.jpg").write_bytes(os.urandom(50_000))
    (lgo / "config.ini").write_text("[officine]\n")
    return lgo


def _open_live(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE IF NOT EXISTS ventes (id INTEGER PRIMARY KEY, produit TEXT)")
    conn.executemany("INSERT INTO ventes (produit) VALUES (?)", [(f"boite {i}",) for i in range(2000)])
    conn.commit()
    return conn  # kept open: the -wal and -shm files stay


def _files(repo: Coffre, ref: str = "latest") -> set[str]:
    nodes = json.loads(repo.ok("ls", ref, "--json").out)["nodes"]
    return {n["path"] for n in nodes if n["type"] == "file"}


def _snapshots(repo: Coffre) -> list[dict[str, Any]]:
    return sorted(json.loads(repo.ok("snapshots", "--json").out), key=lambda s: s["time"])


# -- databases are not copied raw -----------------------------------------------------------------
def test_a_sqlite_database_under_the_tree_is_left_out_of_the_files(repo: Coffre, tmp_path: Path) -> None:
    lgo = _pharmacy(tmp_path)
    db = lgo / "officine.db"
    conn = _open_live(db)
    try:
        assert (lgo / "officine.db-wal").exists() and (lgo / "officine.db-shm").exists()
        res = repo.ok("backup", "--sqlite", str(db), str(lgo))
        # one line says so, naming the files and the option that keeps them
        said = [line for line in res.err.splitlines() if "left out of the files" in line]
        assert len(said) == 1, res.err
        assert f"{db}, {db}-wal, {db}-shm" in said[0] and "--also-raw" in said[0]
        files = _files(repo)
        assert files == {f"{lgo}/config.ini", f"{lgo}/scans/ordonnance-1.jpg",
                         "/@databases/sqlite-officine.db"}
        # the snapshot records the exclusion: verify does not report the files as missing
        verified = repo("verify", "latest")
        assert "officine.db" not in verified.out + verified.err, verified
        assert verified.code == 0, verified
        # --json names what was left out
        out = repo.ok("backup", "--sqlite", str(db), str(lgo), "--json").json()
        assert out["left_out"] == [{"database": f"SQLite database {db}",
                                    "paths": [str(db), f"{db}-wal", f"{db}-shm"]}]
        # --also-raw keeps them, without the line
        res = repo.ok("backup", "--sqlite", str(db), str(lgo), "--also-raw")
        assert "left out" not in res.err
        assert {f"{db}", f"{db}-wal", f"{db}-shm"} <= _files(repo)
    finally:
        conn.close()


def test_a_sqlite_database_elsewhere_changes_nothing(repo: Coffre, tmp_path: Path) -> None:
    lgo = _pharmacy(tmp_path)
    other = tmp_path / "ailleurs.db"
    conn = _open_live(other)
    conn.close()
    res = repo.ok("backup", "--sqlite", str(other), str(lgo), "--json")
    assert res.json()["left_out"] == [] and "left out" not in res.err
    assert f"{lgo}/config.ini" in _files(repo)


def test_the_data_folder_of_a_postgres_server_is_left_out(repo: Coffre, postgres: Any,
                                                         pg_env: dict[str, str]) -> None:
    """The capture asks the server for its data folder (the role may see it): when a
    backed-up path holds it, it is left out of the files."""
    name = "surface_pg"
    if postgres.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == "0":
        postgres.psql(f"CREATE DATABASE {name}")
    postgres.psql("CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t VALUES (1)", name)
    res = repo.ok("backup", "--postgres", postgres.dsn(name), str(postgres.dir), "--json", env=pg_env)
    data = str(postgres.dir / "data")
    assert [lo["paths"] for lo in res.json()["left_out"]] == [[data]]
    assert f"{data}" in res.err and "left out of the files" in res.err
    files = _files(repo)
    assert not any(f.startswith(data + "/") for f in files)
    assert f"{postgres.dir}/server.log" in files
    res = repo.ok("backup", "--postgres", postgres.dsn(name), str(postgres.dir), "--also-raw", "--json",
                  env=pg_env)
    assert res.json()["left_out"] == []
    assert f"{data}/PG_VERSION" in _files(repo)


def test_the_data_folder_of_a_mariadb_server_is_left_out(repo: Coffre, mariadb: Any) -> None:
    """MariaDB names its data folder (@@datadir) to any account: it is left out likewise."""
    mariadb.sql("CREATE DATABASE IF NOT EXISTS surface_my; "
                "CREATE TABLE IF NOT EXISTS surface_my.t (x INT PRIMARY KEY) ENGINE=InnoDB")
    res = repo.ok("backup", "--mysql", mariadb.dsn("surface_my"), str(mariadb.dir), "--json",
                  env=mariadb.env())
    data = str(mariadb.dir / "data")
    assert [lo["paths"] for lo in res.json()["left_out"]] == [[data]]
    assert "left out of the files" in res.err
    files = _files(repo)
    assert not any(f.startswith(data + "/") for f in files) and f"{mariadb.dir}/server.log" in files


# -- the parent ----------------------------------------------------------------------------------
def test_the_parent_is_the_last_backup_of_the_same_sources(repo: Coffre, tmp_path: Path) -> None:
    lgo = _pharmacy(tmp_path)
    db = tmp_path / "base.db"
    _open_live(db).close()
    repo.ok("backup", str(lgo), "--sqlite", str(db))                    # files and a database
    repo.ok("backup", "--stdin-from-command", "--stdin-filename", "export.csv", "--",
            "printf", "a;b\n")                                          # a stream
    repo.ok("backup", "--sqlite", str(db))                              # the database only
    repo.ok("backup", str(lgo), "--host", "autre-poste")                # another host
    repo.ok("backup", str(lgo))                                         # the files alone
    files_db, stream, db_only, other_host, files = _snapshots(repo)
    # neither the stream, nor the database-only snapshot, nor another host's becomes the parent
    # of the files: the last backup of the same files does, though it also held a database
    assert files["parent"] == files_db["id"], files
    assert stream["parent"] == "" and other_host["parent"] == ""
    # a database-only backup follows the last one of the same databases
    assert db_only["parent"] == ""  # no database-only snapshot before it
    repo.ok("backup", "--sqlite", str(db))
    assert _snapshots(repo)[-1]["parent"] == db_only["id"]
    # and the stream follows the last stream of the same name
    repo.ok("backup", "--stdin-from-command", "--stdin-filename", "export.csv", "--", "printf", "a;c\n")
    assert _snapshots(repo)[-1]["parent"] == stream["id"]


def test_a_dump_is_stored_against_its_last_version_whatever_the_files(repo: Coffre, tmp_path: Path) -> None:
    """A database backed up alone after a files+database backup finds its previous version
    there (the delta base), though the snapshots' paths differ."""
    db = tmp_path / "base.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(os.urandom(200),) for _ in range(20_000)])
    conn.commit()
    lgo = _pharmacy(tmp_path)
    first = repo.ok("backup", str(lgo), "--sqlite", str(db), "--json").json()["summary"]
    conn.execute("UPDATE t SET v = ? WHERE id % 500 = 0", (os.urandom(200),))
    conn.commit()
    conn.close()
    second = repo.ok("backup", "--sqlite", str(db), "--json").json()["summary"]
    assert second["deltas_added"] > 0, second
    assert second["data_added_stored"] < first["data_added_stored"] / 5


# -- the summary ---------------------------------------------------------------------------------
def test_the_summary_says_what_was_read_and_what_was_sent(repo: Coffre, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    first = repo.ok("backup", str(src))
    lines = first.out.splitlines()
    assert any(line.startswith("files: ") and " new, 0 changed, 0 unchanged; " in line
               for line in lines), lines
    read = [line for line in lines if line.startswith("read ")]
    assert len(read) == 1 and " sent to the repository, in " in read[0] and " of " not in read[0], lines
    assert "added to the repository" not in first.out
    # nothing changed: nothing read, only the unchanged files counted
    again = repo.ok("backup", str(src), "--json").json()["summary"]
    assert again["bytes_read"] == 0 and again["bytes_total"] > 3_000_000
    # the fields parsers used stay
    for key in ("files_new", "files_changed", "files_unmodified", "dirs", "bytes_total", "data_added",
                "data_added_stored", "blobs_added", "errors", "duration_ns"):
        assert key in again
    (src / "docs" / "new.txt").write_text("une ordonnance de plus")
    third = repo.ok("backup", str(src)).out.splitlines()
    assert any(line.startswith("files: 1 new, 0 changed, ") for line in third), third
    read = next(line for line in third if line.startswith("read "))
    assert read.startswith("read 22 B of ") and " sent to the repository, in " in read, read


def test_a_file_read_again_but_the_same_is_unchanged(repo: Coffre, tmp_path: Path) -> None:
    """Files written just before a backup are read again by the next one (the files cache does
    not vouch for a file modified within 2 s of a backup): those whose content is the parent's
    are counted unchanged, not changed. The files are dated an hour ahead, so that however slowly
    the backup starts they are always that recent."""
    src = tmp_path / "fresh"
    src.mkdir()
    ahead = time.time_ns() + 3600 * 10**9
    for i in range(5):
        (src / f"ordonnance-{i}.jpg").write_bytes(os.urandom(50_000))
        os.utime(src / f"ordonnance-{i}.jpg", ns=(ahead, ahead))
    repo.ok("backup", str(src))
    (src / "ordonnance-0.jpg").write_bytes(os.urandom(50_000))
    os.utime(src / "ordonnance-0.jpg", ns=(ahead + 10**9, ahead + 10**9))
    again = repo.ok("backup", str(src), "--json").json()["summary"]
    assert again["bytes_read"] >= 250_000  # all read again
    assert (again["files_new"], again["files_changed"], again["files_unmodified"]) == (0, 1, 4), again


def test_the_summary_in_french(repo: Coffre, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    repo.ok("backup", str(src))
    out = repo.ok("backup", str(src), env={"LANG": "fr_FR.UTF-8"}).out
    assert "fichiers : 0 nouveau, 0 modifié, " in out and " inchangés ; " in out, out
    assert "\nlecture : 0 " in out and " sur " in out and ", envoi au dépôt : " in out, out
    assert "instantané " in out and " enregistré" in out, out


# -- progress ------------------------------------------------------------------------------------
def _in_process(repo_dir: Path, opts: BackupOptions, progress: Progress) -> Any:
    backend = LocalBackend(repo_dir)
    repo = (Repository.open(backend, PASSWORD) if backend.exists() else Repository.init(backend, PASSWORD)[0])
    repo.load_index()
    cache = RepoCache(repo.config.id)
    try:
        with Lock(repo, exclusive=False, command="backup") as lock:
            return Backup(repo, lock, opts, cache=cache, progress=progress).run()
    finally:
        cache.close()


def test_progress_counts_every_file_and_byte_against_the_scanned_totals(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    age_tree(src)  # old enough for the files cache
    (src / "cache").mkdir()
    (src / "cache" / "big.tmp").write_bytes(os.urandom(300_000))
    opts = BackupOptions(paths=[str(src)], excludes=["cache"], workers=2)
    progress = Progress()
    result = _in_process(tmp_path / "repo", opts, progress)
    status = progress.status()
    s = result.snapshot.summary
    files = s["files_new"] + s["files_changed"] + s["files_unmodified"]
    assert status.phase == "files" and status.total_known, status
    assert status.files_total == status.files_done == files > 20, (status, s)
    assert status.bytes_total == status.bytes_done == s["bytes_total"] == s["bytes_read"], (status, s)
    assert status.current is not None and status.current.startswith(str(src))
    # the next one reads nothing, but its unchanged files count as done
    progress = Progress()
    again = _in_process(tmp_path / "repo", opts, progress).snapshot.summary
    status = progress.status()
    assert again["bytes_read"] == 0 and status.bytes_done == status.bytes_total == s["bytes_total"]


def test_the_scanner_sees_what_the_backup_sees(tmp_path: Path) -> None:
    """Its child process counts with the same exclusions and skipped paths."""
    src = make_tree(tmp_path / "src")
    (src / "ordonnance-\udce9t\udce9.jpg").write_bytes(b"x" * 1000)  # a name that is not UTF-8
    (src / "keep.tmp").write_bytes(b"x" * 10)
    walked = [(Path(d), n) for d, _, f in os.walk(src) for n in f]
    progress = Progress()
    skipped = {os.fsencode(src / "db" / "officine.db")}
    scanner = Scanner([os.fsencode(src)], progress, ["docs", "*.tmp"], skipped)
    scanner.start(after=0)
    scanner._thread.join(timeout=60)
    scanner.stop()
    status = progress.status()
    counted = [(d, n) for d, n in walked
               if "docs" not in d.relative_to(src).parts and not n.endswith(".tmp") and n != "officine.db"]
    assert status.total_known
    assert status.files_total == len(counted) < len(walked), (status, len(walked))
    assert status.bytes_total == sum((d / n).lstat().st_size for d, n in counted)
    assert scanner.files_counted == len(counted)  # what the backup asks before starting helpers


def test_a_backup_that_ends_first_stops_the_scanner(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    scanner = Scanner([os.fsencode(src)], Progress(), [], set()).start(after=0)
    while not scanner.started:
        scanner._thread.join(timeout=0.01)
    scanner.stop()  # at once: killed if still counting, never left behind
    assert scanner._proc is not None and scanner._proc.returncode is not None
    # a short backup ends before the scanner was due: it never starts
    early = Scanner([os.fsencode(src)], Progress(), [], set()).start()
    early.stop()
    assert not early.started and not early._thread.is_alive()


def test_the_scanner_reads_ahead_even_when_nobody_watches(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """It warms the folders' metadata ahead of the walk: started at once for a folder, and not
    at all for a backup of one file (a child process for nothing)."""
    started: list[float | None] = []
    monkeypatch.setattr(Scanner, "start", lambda self, after=None: started.append(after) or self)
    src = make_tree(tmp_path / "src")
    _in_process(tmp_path / "repo", BackupOptions(paths=[str(src)], workers=2), NULL_PROGRESS)
    assert started == [0]
    single = src / "db" / "officine.db"
    _in_process(tmp_path / "repo", BackupOptions(paths=[str(single)], workers=2), NULL_PROGRESS)
    assert started == [0]


def test_a_scanner_started_before_the_repository_opens_is_taken_over_by_the_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """cli/cmd_backup.py starts the scanner first, so the disk's metadata is read while the
    repository opens: the walk takes it over with what it counted (no second child process),
    and stops one that scans something else (other exclusions) to start its own."""
    src = make_tree(tmp_path / "src")
    files = sum(len(f) for _d, _s, f in os.walk(src))
    backend = LocalBackend(tmp_path / "repo")
    repo = Repository.init(backend, PASSWORD)[0]
    roots = [os.fsencode(src)]
    early = Scanner(roots, NULL_PROGRESS, Excluder([]).patterns, set()).start(after=0)
    early._thread.join(60)  # it has counted everything before the backup begins
    other = Scanner(roots, NULL_PROGRESS, Excluder(["*.db"]).patterns, set()).start(after=0)
    started: list[Scanner] = []
    real_start = Scanner.start
    monkeypatch.setattr(Scanner, "start",
                        lambda self, after=None: started.append(self) or real_start(self, after))
    progress = Progress()
    with Lock(repo, exclusive=False, command="backup") as lock:
        Backup(repo, lock, BackupOptions(paths=[str(src)]), progress=progress, scanner=early).run()
    assert started == []
    status = progress.status()
    assert status.total_known and status.files_total == files == status.files_done
    with Lock(repo, exclusive=False, command="backup") as lock:
        Backup(repo, lock, BackupOptions(paths=[str(src)]), scanner=other).run()
    assert len(started) == 1 and started[0] is not other
    assert other._stopped.is_set() and not other._thread.is_alive()


def test_a_sqlite_database_inside_the_source_keeps_the_scanner_started_first(
    coffre: Coffre, tmp_path: Path,
) -> None:
    """`backup /srv --sqlite /srv/ventes.sqlite` leaves the live database's files out of the
    files; the scanner started before the repository opens already leaves them out, so the
    walk takes it over instead of starting a second one (whose head start would be lost)."""
    src = make_tree(tmp_path / "src")
    db = src / "ventes.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE ventes (id INTEGER PRIMARY KEY, montant REAL)")
        conn.executemany("INSERT INTO ventes (montant) VALUES (?)", [(i * 1.5,) for i in range(200)])
    conn.close()
    coffre.ok("init")
    code = ("import sys\n"
            "from coffre.sources.scan import Scanner\n"
            "started = []\n"
            "real = Scanner.start\n"
            "Scanner.start = lambda self, after=None: started.append(self) or real(self, after)\n"
            "from coffre.cli.main import main\n"
            "code = main(sys.argv[1:])\n"
            "print(code, len(started))\n")
    argv = coffre.argv("backup", str(src), "--sqlite", str(db))[3:]
    out = subprocess.run([sys.executable, "-c", code, *argv], env={**coffre.env}, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 1", out.stdout  # one scanner, taken over
    assert "left out of the files" in out.stdout + out.stderr
    listed = coffre.ok("ls", "latest", str(src)).out.splitlines()
    assert str(db) not in listed and str(src / "docs") in listed


def test_the_scanner_walks_in_the_order_of_the_backup(tmp_path: Path) -> None:
    """Names sorted, the first subfolder entered first: what it reads from the disk is what the
    backup asks for next, not the other end of the tree."""
    for folder in ("b/d", "b/c", "a", "c/e/f"):
        (tmp_path / folder).mkdir(parents=True)
    for file in ("z", "b/y", "b/c/x", "b/d/w", "a/v", "c/e/f/u", "c/t"):
        (tmp_path / file).write_bytes(b"x")
    seen: list[str] = []

    def excluded(path: bytes) -> bool:
        seen.append(os.fsdecode(path)[len(str(tmp_path)) + 1:])
        return False

    count([os.fsencode(tmp_path)], excluded, False, lambda files, size: None)
    assert seen == ["", "a", "b", "c", "z", "a/v", "b/c", "b/d", "b/y", "b/c/x", "b/d/w",
                    "c/e", "c/t", "c/e/f", "c/e/f/u"]


def test_a_command_without_postgresql_does_not_load_psycopg() -> None:
    """psycopg (77 modules) is imported at its first use: a backup, a restore or a check
    start without it (about 80 ms each, more on a cold page cache)."""
    code = ("import sys, coffre.cli.main, coffre.ops.backup, coffre.ops.restore;"
            "coffre.cli.main.build_parser();"  # every command's module
            "print(sorted(m for m in sys.modules if m.startswith('psycopg')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_restore_and_a_check_of_a_local_repository_load_neither_the_chunker_nor_tls(
    coffre: Coffre, tmp_path: Path,
) -> None:
    """Only a backup cuts chunks, and only network storage speaks TLS: a local restore and
    check start without pyfastcdc and ssl (~12 ms of a cold start)."""
    src = make_tree(tmp_path / "src")
    coffre.ok("init")
    coffre.ok("backup", str(src))
    code = ("import sys\n"
            "from coffre.cli.main import main\n"
            "code = main(sys.argv[1:])\n"
            "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'pyfastcdc', 'ssl'}))\n")
    for args in (("restore", "latest", "--target", str(tmp_path / "out")), ("check", "--read-data")):
        argv = coffre.argv(*args)[3:]
        out = subprocess.run([sys.executable, "-c", code, *argv], env={**coffre.env}, capture_output=True,
                             text=True, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == "0 []", (args[0], out.stdout)
    assert (tmp_path / "out" / str(src).lstrip("/") / "docs").is_dir()


def test_the_walk_goes_on_to_the_next_folders_while_the_workers_read_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A folder's listing waits for its files, not the walk: the next folders are listed and
    planned while the workers still read the previous folder's files (WALK_AHEAD folders at
    most), and every listing is stored once its files are, subfolders first, whatever the
    depth and number of folders."""
    import threading

    from coffre.ops.backup import WALK_AHEAD
    from coffre.ops.restore import RestoreOptions, Restorer

    src = tmp_path / "src"
    for i in range(WALK_AHEAD * 3):  # more folders than the walk keeps waiting, nested three deep
        folder = src / f"d{i % 5}" / f"e{i % 11}" / f"f{i}"
        folder.mkdir(parents=True)
        (folder / "ordonnance.txt").write_text(f"ordonnance {i}\n" * (i + 1))
    (src / "a").mkdir()
    (src / "a" / "first.txt").write_text("lu en premier\n")
    walked_on = threading.Event()
    real_plan, real_read = Backup._plan, Backup._read_batch

    def plan(self: Backup, name: bytes, path: bytes) -> Any:
        if b"/d0/" in path:
            walked_on.set()
        return real_plan(self, name, path)

    ahead: list[bool] = []

    def read_batch(self: Backup, batch: list[Any]) -> Any:
        if any(item.path.endswith(b"/a/first.txt") for item in batch):
            ahead.append(walked_on.wait(30))  # the walk is in d0 while a's file is being read
        return real_read(self, batch)

    monkeypatch.setattr(Backup, "_plan", plan)
    monkeypatch.setattr(Backup, "_read_batch", read_batch)
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PASSWORD)[0]
    with Lock(repo, exclusive=False, command="backup") as lock:
        snap = Backup(repo, lock, BackupOptions(paths=[str(src)])).run().snapshot
    assert ahead == [True]
    target = tmp_path / "restored"
    assert not Restorer(repo, RestoreOptions(target=str(target))).run(snap).errors
    assert tree_digest(target / str(src).lstrip("/")) == tree_digest(src)
