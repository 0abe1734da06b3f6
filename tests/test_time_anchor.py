"""Wrong clocks through the real command line (issue 11, items 6 and 8): a snapshot dated in
the future never becomes 'latest' nor displaces the real newest in forget; retention windows
count from the newest snapshot, not from now; a clock that is behind removes nothing.

Clocks are moved with the test-only switch COFFRE_TEST_CLOCK_SHIFT_FILE (core/clock.py): the
machine's clock is left alone.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from conftest import Coffre, age_tree, snapshot_ids

DAY = 86_400


def clock(tmp_path: Path, days: float) -> dict[str, str]:
    """The environment of a process whose clock is `days` days off (written atomically)."""
    shift = tmp_path / f"clock{days:+g}d"
    temporary = shift.with_suffix(".tmp")
    temporary.write_text(f"{days * DAY}\n")
    os.replace(temporary, shift)
    return {"COFFRE_TEST_CLOCK_SHIFT_FILE": str(shift)}


def backup(c: Coffre, src: Path, content: str, env: dict[str, str] | None = None) -> str:
    """Write the pharmacy's file with this content, back it up, return the snapshot id."""
    (src / "stock.txt").write_text(f"{content}\n" * 100)
    (src / f"{content}.txt").write_text(content)
    age_tree(src)
    return str(c.ok("backup", str(src), "--json", env=env).json()["snapshot"])


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "officine"
    root.mkdir()
    return root


@pytest.fixture
def ahead(repo: Coffre, src: Path, tmp_path: Path) -> tuple[str, str, str]:
    """Three backups: today, then with a clock 400 days ahead (stale content), then today
    again (the real newest). Their ids in that order."""
    first = backup(repo, src, "first")
    future = backup(repo, src, "stale", env=clock(tmp_path, 400))
    (src / "stale.txt").unlink()
    (src / "first.txt").unlink()
    newest = backup(repo, src, "newest")
    return first, future, newest


def test_latest_is_the_real_newest_not_a_snapshot_dated_in_the_future(
        repo: Coffre, src: Path, restored: Path, ahead: tuple[str, str, str]) -> None:
    first, future, newest = ahead
    path = str(src / "stock.txt")

    res = repo.ok("restore", "latest", "--target", str(restored))
    assert (restored / path.lstrip("/")).read_text() == "newest\n" * 100
    assert future[:8] in res.err and f"coffre forget {future[:8]}" in res.err
    assert f"'latest' is {newest[:8]}" in res.err

    res = repo.ok("dump", "latest", path)
    assert res.out == "newest\n" * 100
    assert future[:8] in res.err and "more than 1 hour after this computer's clock" in res.err

    res = repo.ok("ls", "latest", str(src))
    assert str(src / "newest.txt") in res.out.splitlines()
    assert str(src / "stale.txt") not in res.out
    assert future[:8] in res.err

    # Named by id, it is still there to be read, without a word about 'latest'.
    assert repo.ok("dump", future[:8], path).out == "stale\n" * 100

    res = repo.ok("snapshots")
    assert future[:8] in res.err and "coffre forget" in res.err
    # The next backup's parent (its delta bases) is the real newest too.
    listed = {s["id"]: s for s in json.loads(repo.ok("snapshots", "--json").out)}
    assert listed[newest]["parent"] == first


def test_forget_keep_last_keeps_the_real_newest(
        repo: Coffre, ahead: tuple[str, str, str], src: Path, restored: Path) -> None:
    first, future, newest = ahead
    dry = repo.ok("forget", "--keep-last", "1", "--dry-run")
    lines = {line.split()[1]: line for line in dry.out.splitlines() if line.startswith(("keep", "remove"))}
    assert lines[newest[:8]].startswith("keep") and "last snapshot" in lines[newest[:8]]
    assert lines[future[:8]].startswith("keep") and "dated in the future" in lines[future[:8]]
    assert lines[first[:8]].startswith("remove")
    assert f"coffre forget {future[:8]}" in dry.err
    assert snapshot_ids(repo) == [first, newest, future]

    repo.ok("forget", "--keep-last", "1")
    assert set(snapshot_ids(repo)) == {newest, future}
    repo.ok("restore", "latest", "--target", str(restored))
    assert (restored / str(src / "stock.txt").lstrip("/")).read_text() == "newest\n" * 100

    # Only its id removes it.
    repo.ok("forget", future[:8])
    assert snapshot_ids(repo) == [newest]


def test_forget_max_size_keeps_the_real_newest(
        repo: Coffre, src: Path, tmp_path: Path, restored: Path) -> None:
    def big(seed: int) -> None:
        (src / "scan.bin").write_bytes(os.urandom(200_000) if seed else b"")

    big(1)
    first = backup(repo, src, "first")
    big(2)
    future = backup(repo, src, "stale", env=clock(tmp_path, 400))
    big(3)
    newest = backup(repo, src, "newest")
    res = repo.ok("forget", "--max-size", "1KiB", "--prune")
    lines = {line.split()[1]: line for line in res.out.splitlines() if line.startswith(("keep", "remove"))}
    assert lines[first[:8]].startswith("remove") and "over the size budget" in lines[first[:8]]
    assert lines[newest[:8]].startswith("keep")
    assert "newest of its host and paths" in lines[newest[:8]]
    assert "dated in the future" in lines[future[:8]]
    assert "kept over the size budget" in lines[future[:8]]
    assert set(snapshot_ids(repo)) == {newest, future}
    repo.ok("restore", "latest", "--target", str(restored))
    assert (restored / str(src / "scan.bin").lstrip("/")).read_bytes() == (src / "scan.bin").read_bytes()


def test_keep_within_after_35_days_without_a_backup_keeps_the_last_ones(
        repo: Coffre, src: Path, tmp_path: Path, restored: Path) -> None:
    old = backup(repo, src, "old", env=clock(tmp_path, -45))
    recent = backup(repo, src, "recent", env=clock(tmp_path, -10))
    last = backup(repo, src, "last")
    # 35 days later, backups having failed ever since: the README's own command.
    res = repo.ok("forget", "--keep-within", "30d", "--prune", env=clock(tmp_path, 35))
    assert "within 1m of the newest" in res.out, res.out  # 1m: a month of 30 days
    assert snapshot_ids(repo) == [recent, last]
    assert old not in snapshot_ids(repo)
    repo.ok("restore", "latest", "--target", str(restored), env=clock(tmp_path, 35))
    assert (restored / str(src / "stock.txt").lstrip("/")).read_text() == "last\n" * 100


def test_a_clock_behind_removes_nothing(repo: Coffre, src: Path, tmp_path: Path,
                                        restored: Path) -> None:
    ids = [backup(repo, src, f"day{i}") for i in range(3)]
    behind = clock(tmp_path, -400)
    res = repo.ok("forget", "--keep-last", "1", "--keep-within", "1d", env=behind)
    assert "3 kept, 0 removed" in res.out
    assert "clock is probably behind" in res.err
    assert snapshot_ids(repo) == ids
    res = repo.ok("restore", "latest", "--target", str(restored), env=behind)
    assert f"'latest' is the newest of them, {ids[-1][:8]}" in res.err
    assert (restored / str(src / "stock.txt").lstrip("/")).read_text() == "day2\n" * 100


def test_restore_db_latest_passes_over_a_database_snapshot_dated_in_the_future(
        repo: Coffre, tmp_path: Path) -> None:
    db = tmp_path / "officine.db"

    def backup_db(rows: int, env: dict[str, str] | None = None) -> str:
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE IF NOT EXISTS ventes (n INTEGER)")
        conn.execute("DELETE FROM ventes")
        conn.executemany("INSERT INTO ventes VALUES (?)", [(i,) for i in range(rows)])
        conn.commit()
        conn.close()
        return str(repo.ok("backup", "--sqlite", str(db), "--json", env=env).json()["snapshot"])

    backup_db(1)
    future = backup_db(2, env=clock(tmp_path, 400))
    backup_db(3)
    out = tmp_path / "restored.db"
    res = repo.ok("restore-db", "latest", "--sqlite", str(out))
    assert future[:8] in res.err
    assert sqlite3.connect(out).execute("SELECT count(*) FROM ventes").fetchone() == (3,)


def test_the_test_clock_switch_refuses_an_unreadable_shift(repo: Coffre, tmp_path: Path) -> None:
    bad = tmp_path / "shift"
    bad.write_text("tomorrow\n")
    res = repo("snapshots", env={"COFFRE_TEST_CLOCK_SHIFT_FILE": str(bad)})
    assert res.code == 1 and "cannot read a number of seconds" in res.err, res
    assert "Traceback" not in res.err
