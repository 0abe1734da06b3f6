"""Crash safety: a real `coffre backup` or `coffre prune` killed with SIGKILL at many points
(before, during and right after each write or delete) leaves a consistent repository."""

from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path

from conftest import Coffre, age_tree, make_tree, snapshot_ids, tree_digest

KILLED = -signal.SIGKILL


def _grow(src: Path, i: int) -> None:
    """A new day of data: an incompressible file of 12 MiB (about ten 1 MiB packs, so a
    backup makes well over eight writes whatever the chunk boundaries) and an edit."""
    rnd = random.Random(i)
    (src / "scans" / f"day-{i}.jpg").write_bytes(rnd.randbytes(12 * 1024 * 1024))
    with open(src / "docs" / "lettre-5.txt", "a") as f:
        f.write(f"ligne {i}\n")
    age_tree(src)


def _restore_equals(c: Coffre, snap: str, src_digest: dict[str, object], src: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    c.ok("restore", snap, "--target", str(dest))
    assert tree_digest(dest / str(src).lstrip("/")) == src_digest


def test_backup_killed_at_24_points(coffre: Coffre, tmp_path: Path) -> None:
    coffre.ok("init", "--pack-size", "1")
    src = make_tree(tmp_path / "src")
    coffre.ok("backup", str(src))
    base_snap = snapshot_ids(coffre)[0]
    base_digest = tree_digest(src)
    points = [(n, phase) for n in (1, 2, 3, 4, 5, 6, 7, 8) for phase in ("before", "partial", "after")]
    killed = 0
    for i, (n, phase) in enumerate(points):
        _grow(src, i)
        res = coffre("backup", str(src), env={"COFFRE_TEST_CRASH_AT": f"{n}:{phase}"})
        assert res.code in (KILLED, 0), res
        killed += res.code == KILLED
        coffre.ok("backup", str(src))  # the next backup succeeds
        check = coffre("check", "--read-data") if i % 4 == 3 else coffre("check")
        assert check.code == 0, (n, phase, check)
    assert killed == len(points)
    # Every snapshot is readable, the first one is byte-identical to what it saved.
    coffre.ok("check", "--read-data")
    _restore_equals(coffre, base_snap[:8], base_digest, src, tmp_path / "r1")
    _restore_equals(coffre, "latest", tree_digest(src), src, tmp_path / "r2")


def test_prune_killed_at_many_points(coffre: Coffre, tmp_path: Path) -> None:
    coffre.ok("init", "--pack-size", "1")
    src = make_tree(tmp_path / "src")
    coffre.ok("backup", str(src))
    keep_snap = snapshot_ids(coffre)[0]
    keep_digest = tree_digest(src)
    killed = 0
    points = [(n, phase) for n in (1, 2, 3, 4, 5, 6, 7) for phase in ("before", "partial", "after")]
    for i, (n, phase) in enumerate(points):
        extra = tmp_path / f"extra-{i}"
        extra.mkdir()
        rnd = random.Random(100 + i)
        # Two files, one deleted and its snapshot forgotten: its packs are deleted, a pack
        # holding the end of one and the start of the other is repacked.
        (extra / "a.bin").write_bytes(rnd.randbytes(1_500_000))
        (extra / "b.bin").write_bytes(rnd.randbytes(1_500_000))
        # A database whose changed pages are stored as deltas against the first backup's
        # blocks: the prune removes bases whose deltas no snapshot needs any more.
        db = bytearray(b"SQLite format 3\x00" + rnd.randbytes(600_000))
        (extra / "officine.db").write_bytes(bytes(db))
        age_tree(extra)
        coffre.ok("backup", str(extra), "--host", f"h{i}")
        (extra / "b.bin").unlink()
        for page in range(0, len(db), 40_000):
            db[page + 20 : page + 40] = rnd.randbytes(20)
        (extra / "officine.db").write_bytes(bytes(db))
        age_tree(extra)
        coffre.ok("backup", str(extra), "--host", f"h{i}")
        coffre.ok("forget", "--host", f"h{i}", "--keep-last", "1")
        res = coffre("prune", env={"COFFRE_TEST_CRASH_AT": f"{n}:{phase}"})
        assert res.code in (KILLED, 0), res
        killed += res.code == KILLED
        # Whatever the kill left, check does not cry wolf: every snapshot restores.
        check = coffre("check", "--read-data") if i % 3 == 2 else coffre("check")
        assert check.code == 0, (n, phase, check)
    assert killed >= 15
    coffre.ok("prune")
    result = coffre.ok("check", "--read-data", "--json").json()
    assert result["ok"], result
    _restore_equals(coffre, keep_snap[:8], keep_digest, src, tmp_path / "r")


def test_ctrl_c_during_backup_exits_130_and_leaves_repository_consistent(
    coffre: Coffre, tmp_path: Path
) -> None:
    coffre.ok("init", "--pack-size", "1")
    src = make_tree(tmp_path / "src")
    _grow(src, 1)
    res = coffre("backup", str(src), env={"COFFRE_TEST_CRASH_AT": "3:sigint"})
    assert res.code == 130, res
    assert "interrupted" in res.err and "Traceback" not in res.err
    assert snapshot_ids(coffre) == []
    assert os.listdir(coffre.repo / "locks") == []
    coffre.ok("check", "--read-data")
    coffre.ok("backup", str(src))
    coffre.ok("check", "--read-data")
