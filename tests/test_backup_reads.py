"""What a backup reads back from a local repository: the bases of the deltas a changed database
is stored as, announced to the disk before they are loaded (docs/design.md §3)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from announcing import Announcing
from coffre.chunker import PAGE_BLOCK
from coffre.crypto.aead import KIND_DATA
from coffre.ops.backup import Backup, BackupOptions
from coffre.repository import ahead
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import age_tree

BLOCKS = 96  # the database's 256 KiB blocks: several times BASES_AHEAD


def backup(backend: LocalBackend, src: Path) -> dict[str, int]:
    repo = Repository.open(backend, "pw")
    with Lock(repo, exclusive=False, command="backup") as lock:
        repo.load_index()
        if isinstance(backend, Announcing):
            backend.tree_packs = {p.hex() for p in repo.index.packs() if repo.index.tree_pack(p)}
        # Two workers, whatever the machine: up to 3 chunks each in flight before the first
        # tells whether it needed its base (the bound of the test below).
        result = Backup(repo, lock, BackupOptions(paths=[str(src)], host="h", workers=2)).run()
    return result.snapshot.summary


def database(src: Path, rnd: random.Random) -> Path:
    """A page-structured file (SQLite's header) of BLOCKS blocks, and a backup of it."""
    src.mkdir()
    db = src / "officine.db"
    db.write_bytes(b"SQLite format 3\x00" + rnd.randbytes(BLOCKS * PAGE_BLOCK - 16))
    age_tree(src, 7200)
    return db


def change_every_block(db: Path, rnd: random.Random) -> None:
    """A row changed in every block of the database."""
    data = bytearray(db.read_bytes())
    for block in range(BLOCKS):
        at = block * PAGE_BLOCK + rnd.randrange(100, PAGE_BLOCK)
        data[at : at + 8] = rnd.randbytes(8)
    db.write_bytes(bytes(data))
    age_tree(db.parent)


def test_a_changed_database_has_each_base_announced_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day that changes rows all over the database: each block is stored as a delta against
    its previous version, read from the repository one at a time (scattered: format 2 shuffles
    packs). On a cold page cache a worker waited for each; each is announced ahead."""
    # Announced at once, not from the announcer's thread, so that "before" does not depend on
    # which thread runs first (the thread itself: the test below).
    monkeypatch.setattr(ahead.Announcer, "announce", lambda self, ids: self.repo.will_read_bases(ids))
    rnd = random.Random(7)
    db = database(tmp_path / "src", rnd)
    backend = Announcing(tmp_path / "repo")
    Repository.init(backend, "pw")
    backup(backend, db.parent)
    change_every_block(db, rnd)
    backend.announced.clear()
    summary = backup(backend, db.parent)
    assert summary["deltas_added"] == BLOCKS
    assert len(backend.loaded) >= BLOCKS and not backend.unannounced, backend.unannounced[:3]


def test_a_database_rewritten_the_same_has_few_bases_announced(tmp_path: Path) -> None:
    """A file read again whose chunks are all stored already needs no base: the announcements
    stop once the chunks say so, instead of reading the whole previous version."""
    db = database(tmp_path / "src", random.Random(8))
    backend = Announcing(tmp_path / "repo")
    Repository.init(backend, "pw")
    backup(backend, db.parent)
    os.utime(db, ns=(db.stat().st_atime_ns, db.stat().st_mtime_ns + 10**9))  # read again
    backend.announced.clear()
    summary = backup(backend, db.parent)
    assert summary["bytes_read"] == BLOCKS * PAGE_BLOCK and summary["deltas_added"] == 0
    assert not backend.loaded
    assert 0 < len(backend.announced) <= 2 * 3 + 1 + ahead.BASES_AHEAD


def test_the_announcer_passes_announcements_on_from_its_thread(tmp_path: Path) -> None:
    db = database(tmp_path / "src", random.Random(9))
    backend = Announcing(tmp_path / "repo", expect=BLOCKS)
    Repository.init(backend, "pw")
    backup(backend, db.parent)
    repo = Repository.open(backend, "pw")
    repo.load_index()
    blobs = [(pack.hex(), e) for pack, entries in repo.index.packs().items() for e in entries
             if e.kind == KIND_DATA]
    assert len(blobs) == BLOCKS
    backend.announced.clear()
    announcer = ahead.Announcer(repo)
    for i in range(0, BLOCKS, 5):
        announcer.announce([e.id for _, e in blobs[i : i + 5]])
    wanted = sorted((pack, e.offset, e.offset + e.length) for pack, e in blobs)
    assert backend.told.wait(30)
    assert sorted(backend.announced) == wanted
    announcer.close()
    announcer.announce([blobs[0][1].id])  # a later backup's: a thread again
    announcer.close()  # dropped if not passed on yet: the backup no longer reads
    assert len(backend.announced) <= BLOCKS + 1
    announcer.close()  # again: nothing to stop
