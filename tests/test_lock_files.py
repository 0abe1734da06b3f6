"""Lock files that cannot be read (emptied by a full disk, damaged) block maintenance like a
live lock for the normal margin, never forever; `unlock` lists and removes them."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from coffre.core.errors import EXIT_LOCKED

from conftest import Coffre


def planted(c: Coffre, content: bytes) -> Path:
    name = hashlib.sha256(b"planted" + content).hexdigest()  # a valid name, not its content's hash
    path = c.repo / "locks" / name
    path.write_bytes(content)
    return path


def age(path: Path, minutes: float) -> None:
    t = time.time() - minutes * 60
    os.utime(path, (t, t))


@pytest.mark.parametrize("content", [b"", os.urandom(300)], ids=["empty", "garbage"])
def test_an_unreadable_lock_blocks_for_the_margin_then_expires(repo: Coffre, tree: Path,
                                                               content: bytes) -> None:
    repo.ok("backup", str(tree))
    lock = planted(repo, content)
    res = repo("prune")
    assert res.code == EXIT_LOCKED, res
    assert f"unreadable lock file locks/{lock.name[:12]}" in res.err and "expires" in res.err, res
    out = repo.ok("unlock").out
    assert f"kept an unreadable lock file locks/{lock.name[:12]}" in out and lock.exists()
    age(lock, 31)  # written 31 minutes ago: stale like any lock not refreshed for 30
    repo.ok("prune")  # which removes it, as any stale lock
    assert not lock.exists()
    again = planted(repo, content)
    age(again, 31)
    out = repo.ok("unlock").out
    assert f"removed an unreadable lock file locks/{again.name[:12]} (emptied or damaged) (stale)" in out
    assert not again.exists()


def test_unlock_remove_all_takes_an_unreadable_lock_at_once(repo: Coffre) -> None:
    lock = planted(repo, b"")
    assert repo("forget", "--keep-last", "1").code == EXIT_LOCKED
    out = repo.ok("unlock", "--remove-all").out
    assert f"removed an unreadable lock file locks/{lock.name[:12]}" in out and not lock.exists()
    repo.ok("forget", "--keep-last", "1")
