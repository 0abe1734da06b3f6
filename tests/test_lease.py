"""Leases measured on clocks that see suspension: a backup stopped (as a laptop sleeps or a
VM is paused) while its clock moves on must not commit over data a prune removed meanwhile,
and must commit when nothing was removed. Real processes: the backup stops itself with
SIGSTOP at a chosen write (test-only COFFRE_TEST_CRASH_AT=N:stop), the test moves the
clocks with COFFRE_TEST_CLOCK_SHIFT_FILE, runs a prune, and sends SIGCONT."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from coffre.chunker import ChunkerParams
from coffre.repository.locks import LEASE_S
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre, age_tree, snapshot_ids, tree_digest

SHIFT = 40 * 60  # minutes a suspended laptop may sleep; beyond the 30-minute staleness


@pytest.fixture
def small(coffre: Coffre) -> Coffre:
    Repository.init(LocalBackend(coffre.repo), PASSWORD, pack_size=1024 * 1024,
                    chunker=ChunkerParams(64 * 1024, 128 * 1024, 256 * 1024))
    return coffre


def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    rnd = random.Random(5)
    for i in range(6):
        (src / f"scan-{i}.jpg").write_bytes(rnd.randbytes(700_000))
    age_tree(src)
    return src


def wait_stopped(pid: int) -> None:
    """Until the process has stopped itself (state T in /proc)."""
    for _ in range(6000):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.01)
    raise AssertionError("the backup never stopped")


def set_shift(path: Path, seconds: float) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(seconds))
    tmp.replace(path)


def stopped_backup(c: Coffre, src: Path, shift: Path) -> tuple[object, dict[str, str]]:
    """A backup stopped at its fourth write (its lock, then three packs)."""
    env = {"COFFRE_TEST_CLOCK_SHIFT_FILE": str(shift)}
    set_shift(shift, 0)
    proc = c.popen("backup", str(src), "--json", env={**env, "COFFRE_TEST_CRASH_AT": "4:stop"})
    wait_stopped(proc.pid)
    set_shift(shift, SHIFT)  # the machine slept for 40 minutes
    return proc, env


def test_a_backup_suspended_while_prune_removed_its_data_commits_nothing(
        small: Coffre, tmp_path: Path, restored: Path) -> None:
    assert SHIFT > LEASE_S
    src = source(tmp_path)
    shift = tmp_path / "shift"
    proc, env = stopped_backup(small, src, shift)
    # Elsewhere, 40 minutes later: the backup's lock is stale, so prune takes its packs.
    pruned = small.ok("prune", "--json", env=env).json()
    assert pruned["packs_deleted"] >= 2, pruned  # the two packs written before it stopped
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)  # type: ignore[attr-defined]
    assert proc.returncode == 1, err  # type: ignore[attr-defined]
    err_text = err.decode()
    assert "minutes ago" in err_text and "a prune removed" in err_text, err_text
    assert "nothing was committed" in err_text and "Traceback" not in err_text
    assert snapshot_ids(small) == []
    # The next run stores what is missing and is whole.
    small.ok("backup", str(src))
    assert "no errors" in small.ok("check", "--read-data").out
    small.ok("restore", "latest", "--target", str(restored))
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)


def test_a_backup_suspended_with_nothing_removed_commits_after_checking(
        small: Coffre, tmp_path: Path, restored: Path) -> None:
    src = source(tmp_path)
    shift = tmp_path / "shift"
    proc, _ = stopped_backup(small, src, shift)
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)  # type: ignore[attr-defined]
    assert proc.returncode == 0, err  # type: ignore[attr-defined]
    assert "checking that what this backup wrote is still there" in err.decode()
    assert len(snapshot_ids(small)) == 1
    assert "no errors" in small.ok("check", "--read-data").out
    small.ok("restore", "latest", "--target", str(restored), "--verify")
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)
