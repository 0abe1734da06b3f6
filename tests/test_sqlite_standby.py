"""The warm standby of a SQLite database (continuity/sqlite_standby.py), against real SQLite, a
real local repository, the real monitor and shipper: a writer commits numbered rows; the
standby follows pass after pass and always holds a prefix of them that passes quick_check; a
new generation is followed by a rebuild; a missing piece stops it there, reported; promotion
gives every row the repository held, integrity_check ok; an interrupted pass leaves nothing
half applied."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from coffre.continuity import shipper, sqlite_standby
from coffre.continuity.spool import Spool
from coffre.continuity.sqlite_monitor import SqliteMonitor
from coffre.continuity.sqlite_restore import restore_sqlite
from coffre.continuity.sqlite_standby import SqliteStandbyState, state_path
from coffre.core.errors import CoffreError
from coffre.repository import segments
from coffre.repository.repo import Repository
from test_sqlite_continuity import PASSWORD, SRC, Pharmacy, expected_rows, pharmacy, repository

__all__ = ["pharmacy", "repository"]  # the fixtures, from test_sqlite_continuity


def read_standby(path: Path) -> tuple[int, set[int]]:
    """(the counter, the rows) of the standby file, read-only and immutable (nothing is created
    beside it), after PRAGMA quick_check."""
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        assert [r[0] for r in conn.execute("PRAGMA quick_check")] == ["ok"]
        n = conn.execute("SELECT v FROM counter WHERE k = 1").fetchone()[0]
        return n, {r[0] for r in conn.execute("SELECT txid FROM log")}
    finally:
        conn.close()


def prefix(path: Path) -> int:
    """The standby holds transactions 1..n and nothing else: n."""
    n, rows = read_standby(path)
    assert rows == expected_rows(n)
    return n


def nothing_beside(target: Path) -> None:
    for suffix in ("-wal", "-shm", "-journal", ".coffre-standby.undo", ".coffre-standby.new"):
        assert not Path(f"{target}{suffix}").exists(), suffix


def test_follows_pass_after_pass_holding_a_prefix(
        tmp_path: Path, repository: Repository, pharmacy: Pharmacy) -> None:
    spool = Spool(tmp_path / "spool")
    target = tmp_path / "secours.db"
    reports: list[str] = []
    with SqliteMonitor(pharmacy.path, spool, checkpoint_pages=20) as monitor:
        monitor.step()
        pharmacy.commit(3)
        monitor.step()
        shipper.ship(repository, spool)
        state = sqlite_standby.init(repository, str(pharmacy.path), target)
        assert prefix(target) == 3 and state.newest_ns and state.stream == monitor.stream
        assert stat.S_IMODE(state_path(target).stat().st_mode) == 0o600
        shipped = 3
        for k in range(8):
            pharmacy.commit(k + 2, size=3000 if k % 2 else 100)  # past 20 pages: the log restarts
            monitor.step()
            if k % 3 != 2:  # now and then the shipper is late: the standby follows what is stored
                shipper.ship(repository, spool)
                shipped = pharmacy.txid
            state = sqlite_standby.follow(repository, target, report=reports.append)
            assert prefix(target) == shipped
            assert state.gap == "" and state.behind_pieces == 0
            nothing_beside(target)
        assert monitor.restarts >= 2 and monitor.generations == 1
    again = sqlite_standby.follow(repository, target)
    assert again.position == state.position and prefix(target) == shipped
    assert not reports
    saved = json.loads(state_path(target).read_text())
    assert saved["stream"] == state.stream and saved["newest_ns"] == state.newest_ns
    with pytest.raises(CoffreError, match="already a standby"):
        sqlite_standby.init(repository, str(pharmacy.path), target)


def test_a_new_generation_is_followed_by_a_rebuild(
        tmp_path: Path, repository: Repository, pharmacy: Pharmacy) -> None:
    spool = Spool(tmp_path / "spool")
    target = tmp_path / "secours.db"
    with SqliteMonitor(pharmacy.path, spool) as monitor:
        monitor.step()
        pharmacy.commit(5)
        monitor.step()
    shipper.ship(repository, spool)
    first = sqlite_standby.init(repository, str(pharmacy.path), target)
    assert prefix(target) == 5
    # The monitor stopped; the pharmacy software checkpoints and the log restarts: the next
    # capture is a new generation, from a new base.
    pharmacy.commit(3)
    assert pharmacy.checkpoint("TRUNCATE")[0] == 0
    pharmacy.commit(2)
    with SqliteMonitor(pharmacy.path, spool) as monitor:
        assert monitor.step().new_generation == "WAL reset while not watched"
        pharmacy.commit(4)
        monitor.step()
    shipper.ship(repository, spool)
    reports: list[str] = []
    state = sqlite_standby.follow(repository, target, report=reports.append)
    assert state.stream != first.stream and state.rebuilds == 1 and state.rebuilding == ""
    assert any("new generation" in r and "WAL reset while not watched" in r for r in reports), reports
    assert prefix(target) == 14
    nothing_beside(target)
    # ...and it goes on following the new generation.
    with SqliteMonitor(pharmacy.path, spool) as monitor:
        monitor.step()
        pharmacy.commit(2)
        monitor.step()
    shipper.ship(repository, spool)
    assert sqlite_standby.follow(repository, target).rebuilds == 1
    assert prefix(target) == 16


def test_a_missing_piece_stops_the_standby_there(
        tmp_path: Path, repository: Repository, pharmacy: Pharmacy) -> None:
    spool = Spool(tmp_path / "spool")
    target = tmp_path / "secours.db"
    with SqliteMonitor(pharmacy.path, spool) as monitor:
        monitor.step()
        shipper.ship(repository, spool)
        sqlite_standby.init(repository, str(pharmacy.path), target)
        for _ in range(4):
            pharmacy.commit(3)
            monitor.step()
    shipper.ship(repository, spool)
    logs = [s for s in segments.listing(repository) if s.header.kind == "log"]
    assert len(logs) == 4
    segments.remove(repository, logs[2])
    reports: list[str] = []
    state = sqlite_standby.follow(repository, target, report=reports.append)
    assert prefix(target) == 6  # the two pieces before it, never one after it
    assert state.gap == logs[2].header.name and "missing" in state.problem
    assert state.behind_pieces == 1
    assert any(logs[2].header.name in r for r in reports)
    again = sqlite_standby.follow(repository, target, report=reports.append)
    assert again.gap == state.gap and again.position == state.position and prefix(target) == 6
    assert len([r for r in reports if logs[2].header.name in r]) == 1  # said once
    # A standby set up now goes as far as the gap, and says it stops there.
    other = sqlite_standby.init(repository, str(pharmacy.path), tmp_path / "other.db")
    assert prefix(tmp_path / "other.db") == 6 and other.gap == logs[2].header.name
    assert sqlite_standby.follow(repository, tmp_path / "other.db").position == state.position
    # The command line says it, exit status 1.
    status = coffre("standby", "sqlite-status", "--target", str(target), "--json")
    out, err = status.communicate(timeout=60)
    assert status.returncode == 1, err
    said = json.loads(out)
    assert said["gap"] == logs[2].header.name and said["late"] is True and said["behind_pieces"] == 1


def test_promotion_holds_every_row_the_repository_held(
        tmp_path: Path, repository: Repository, pharmacy: Pharmacy) -> None:
    spool = Spool(tmp_path / "spool")
    target = tmp_path / "secours.db"
    with SqliteMonitor(pharmacy.path, spool, checkpoint_pages=20) as monitor:
        monitor.step()
        pharmacy.commit(4)
        monitor.step()
        shipper.ship(repository, spool)
        sqlite_standby.init(repository, str(pharmacy.path), target)
        for _ in range(3):
            pharmacy.commit(10, size=3000)
            monitor.step()
            shipper.ship(repository, spool)
            sqlite_standby.follow(repository, target)
        for _ in range(3):  # stored, not yet followed: the promotion's last pass takes them
            pharmacy.commit(5, size=2000)
            monitor.step()
            shipper.ship(repository, spool)
    assert prefix(target) == 34
    done = sqlite_standby.promote(repository, target)
    assert done.integrity == "ok" and done.state.promoted_ns and not done.last_pass
    assert prefix(target) == pharmacy.txid == 49
    latest = restore_sqlite(repository, str(pharmacy.path), tmp_path / "latest.db")
    assert read_standby(target) == read_standby(Path(latest.target))
    with pytest.raises(CoffreError, match="promoted"):
        sqlite_standby.follow(repository, target)
    nothing_beside(target)


def test_an_interrupted_pass_leaves_the_previous_state(
        tmp_path: Path, repository: Repository, pharmacy: Pharmacy, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool")
    target = tmp_path / "secours.db"
    with SqliteMonitor(pharmacy.path, spool) as monitor:
        monitor.step()
        pharmacy.commit(4)
        monitor.step()
        shipper.ship(repository, spool)
        sqlite_standby.init(repository, str(pharmacy.path), target)
        pharmacy.commit(30, size=3000)  # pages rewritten, the file grows
        monitor.step()
        shipper.ship(repository, spool)
    before, state_before = target.read_bytes(), state_path(target).read_bytes()
    write = sqlite_standby._write_pages

    def crash(dest: Path, overlay: sqlite_standby._Overlay, page_size: int) -> None:
        half = dict(list(sorted(overlay.pages.items()))[: len(overlay.pages) // 2])
        with open(dest, "r+b") as f:  # some pages written, then the machine stops
            for page, data in half.items():
                os.pwrite(f.fileno(), data, (page - 1) * page_size)
        raise KeyboardInterrupt

    monkeypatch.setattr(sqlite_standby, "_write_pages", crash)
    with pytest.raises(KeyboardInterrupt):
        sqlite_standby.follow(repository, target)
    assert target.read_bytes() != before  # half applied on disk...
    assert state_path(target).read_bytes() == state_before
    monkeypatch.setattr(sqlite_standby, "_write_pages", write)
    reports: list[str] = []
    sqlite_standby._recover(target, SqliteStandbyState.load(target), reports.append)
    assert target.read_bytes() == before and prefix(target) == 4  # ...and put back first
    assert any("interrupted" in r for r in reports)
    nothing_beside(target)
    # A pass whose result fails quick_check is undone the same way, and said.
    monkeypatch.setattr(sqlite_standby, "check", lambda path, pragma: "*** page 3: damaged")
    refused = sqlite_standby.follow(repository, target)
    assert target.read_bytes() == before and "quick_check" in refused.problem and refused.gap
    monkeypatch.undo()
    assert sqlite_standby.follow(repository, target).gap == ""
    assert prefix(target) == 34
    nothing_beside(target)


# -- the command line, through the real entry point --


def coffre(*args: str, password_file: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC, "LANG": "C.UTF-8", "COFFRE_TEST_WEAK_KDF": "1"}
    if password_file is not None:
        env["COFFRE_PASSWORD_FILE"] = str(password_file)
    return subprocess.Popen([sys.executable, "-c", "import sys; from coffre.cli.entry import main; "
                             "sys.exit(main())", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run(*args: str, password_file: Path | None = None, code: int = 0) -> tuple[str, str]:
    proc = coffre(*args, password_file=password_file)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, (out, err)
    return out, err


def test_cli_init_follow_status_promote(tmp_path: Path, repository: Repository, pharmacy: Pharmacy) -> None:
    spool = Spool(tmp_path / "spool")
    target = tmp_path / "secours.db"
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    repo = ["-r", str(repository.backend.location)]
    with SqliteMonitor(pharmacy.path, spool) as monitor:
        monitor.step()
        pharmacy.commit(3)
        monitor.step()
        shipper.ship(repository, spool)
        out, _err = run("standby", "sqlite-init", *repo, "--database", str(pharmacy.path), "--target",
                        str(target), password_file=password)
        assert "sqlite-follow" in out and prefix(target) == 3
        pharmacy.commit(2)
        monitor.step()
        shipper.ship(repository, spool)
        out, _err = run("standby", "sqlite-follow", *repo, "--target", str(target), password_file=password)
        assert "2 transactions applied" in out, out
        assert prefix(target) == 5
    out, _err = run("standby", "sqlite-status", "--target", str(target), "--json")
    said = json.loads(out)
    assert said["late"] is False and said["gap"] == "" and said["behind_pieces"] == 0
    out, _err = run("standby", "sqlite-status", "--target", str(target), "--max-lag", "0", code=1)
    out, _err = run("standby", "sqlite-promote", "--target", str(target), "--offline")
    assert "integrity_check: ok" in out and str(target) in out
    assert SqliteStandbyState.load(target).promoted_ns
    run("standby", "sqlite-follow", *repo, "--target", str(target), password_file=password, code=1)


def test_a_piece_that_does_not_follow_is_taken_out_whole(
        tmp_path: Path, repository: Repository, pharmacy: Pharmacy, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool")
    target = tmp_path / "secours.db"
    with SqliteMonitor(pharmacy.path, spool) as monitor:
        monitor.step()
        shipper.ship(repository, spool)
        sqlite_standby.init(repository, str(pharmacy.path), target)
        for _ in range(3):
            pharmacy.commit(3)
            monitor.step()
    shipper.ship(repository, spool)
    logs = [s for s in segments.listing(repository) if s.header.kind == "log"]
    load = segments.load

    def damaged(repo: Repository, seg: segments.StoredSegment) -> bytes:
        data = load(repo, seg)
        return data[:-100] if seg.object == logs[1].object else data  # its last transaction cut

    monkeypatch.setattr(segments, "load", damaged)
    state = sqlite_standby.follow(repository, target)
    # The first piece applied; none of the second's transactions (two of them were whole).
    assert prefix(target) == 3
    assert state.gap == logs[1].header.name and "does not follow" in state.problem
    monkeypatch.undo()
    assert sqlite_standby.follow(repository, target).gap == ""
    assert prefix(target) == 9


def test_a_pass_gives_way_to_another_command_and_a_promotion_waits_for_the_pass_in_progress(
        tmp_path: Path, repository: Repository, pharmacy: Pharmacy) -> None:
    """One command at a time on a standby: the agent's pass and `sqlite-promote` never
    overlap, so a pass that loaded the state before a promotion cannot undo its mark."""
    import threading
    import time

    spool = Spool(tmp_path / "spool")
    target = tmp_path / "secours.db"
    with SqliteMonitor(pharmacy.path, spool) as monitor:
        monitor.step()
        shipper.ship(repository, spool)
        sqlite_standby.init(repository, str(pharmacy.path), target)
        pharmacy.commit(5)
        monitor.step()
        shipper.ship(repository, spool)
    lock = Path(f"{target}.coffre-standby.lock")
    holder = subprocess.Popen(  # another process in the middle of a pass
        [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()", str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(CoffreError, match="another coffre command is working on the standby"):
            sqlite_standby.follow(repository, target)
        done: list[sqlite_standby.SqlitePromoted] = []
        promoting = threading.Thread(target=lambda: done.append(sqlite_standby.promote(repository, target)))
        promoting.start()
        inode = os.stat(lock).st_ino
        deadline = time.monotonic() + 60
        while not any(line.split()[1:2] == ["->"] and f":{inode} " in line
                      for line in Path("/proc/locks").read_text().splitlines()):
            assert time.monotonic() < deadline and promoting.is_alive(), "the promotion did not wait"
            time.sleep(0.01)  # polling for the promotion to queue on the lock
        assert not done
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait()
    promoting.join(60)
    [promoted] = done
    assert promoted.integrity == "ok" and promoted.state.promoted_ns and prefix(target) == pharmacy.txid == 5
