"""Folder listings in packs of their own, and a remote repository's copies of them on this
machine: the next backup and a restore read no listing from the storage, a fresh machine reads
each tree pack once, and a damaged or stale copy costs a download, never a listing."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from coffre.crypto.aead import KIND_TREE
from coffre.ops.backup import Backup, BackupOptions
from coffre.ops.restore import RestoreOptions, Restorer
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.base import Handle
from coffre.storage.cached import CachedBackend
from coffre.storage.local import LocalBackend

from conftest import tree_digest


class Remote(LocalBackend):
    """A local repository that says it is remote and counts the reads of each pack."""

    remote = True

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads: dict[str, list[tuple[int, int | None]]] = {}

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        if handle.kind == "data":
            self.reads.setdefault(handle.name, []).append((offset, length))
        return super().load(handle, offset, length)


def opened(storage: Remote, cache: Path) -> Repository:
    repo = Repository.open(CachedBackend(storage, cache / "objects"), "pw")
    repo.load_index()
    return repo


def backup(storage: Remote, cache: Path, src: Path) -> Repository:
    repo = opened(storage, cache)
    with Lock(repo, exclusive=False, command="backup") as lock:
        Backup(repo, lock, BackupOptions(paths=[str(src)], host="h")).run()
    return repo


def restore(storage: Remote, cache: Path, target: Path) -> Repository:
    repo = opened(storage, cache)
    assert not Restorer(repo, RestoreOptions(target=str(target))).run(repo.snapshots()[-1]).errors
    return repo


def tree_packs(repo: Repository) -> set[str]:
    return {p.hex() for p in repo.index.pack_ids() if repo.index.tree_pack(p)}


def folders(root: Path, rnd: random.Random) -> Path:
    for i in range(12):
        for j in range(3):
            d = root / f"annee-{i}" / f"mois-{j}"
            d.mkdir(parents=True)
            for k in range(4):
                (d / f"ord-{k}.txt").write_bytes(rnd.randbytes(rnd.randrange(100, 5000)))
    return root


def test_trees_have_packs_of_their_own_and_the_next_runs_read_none_from_the_storage(tmp_path: Path) -> None:
    src = folders(tmp_path / "src", random.Random(3))
    storage, cache = Remote(tmp_path / "repo"), tmp_path / "cache"
    Repository.init(storage, "pw")
    repo = backup(storage, cache, src)
    trees = tree_packs(repo)
    assert trees
    for pack, entries in repo.index.packs().items():  # no pack mixes listings and data
        assert (pack.hex() in trees) == any(e.kind == KIND_TREE for e in entries)
    kept = cache / "trees"
    assert {p.name for p in kept.iterdir()} == trees  # the backup kept what it wrote

    (src / "annee-3" / "mois-1" / "ord-2.txt").write_bytes(b"modifiee")
    storage.reads.clear()
    repo = backup(storage, cache, src)  # the parent's listings come from the copies
    assert not set(storage.reads) & trees, storage.reads
    assert repo.tree_packs is not None and repo.tree_packs.local_reads >= 1

    storage.reads.clear()
    restore(storage, cache, tmp_path / "restored")
    assert not set(storage.reads) & tree_packs(repo), storage.reads
    assert tree_digest(tmp_path / "restored" / str(src).lstrip("/")) == tree_digest(src)


def test_a_fresh_machine_reads_each_tree_pack_once_and_a_damaged_copy_again(tmp_path: Path) -> None:
    src = folders(tmp_path / "src", random.Random(4))
    storage = Remote(tmp_path / "repo")
    Repository.init(storage, "pw")
    trees = tree_packs(backup(storage, tmp_path / "cache", src))

    fresh = tmp_path / "elsewhere"  # after a fire: no cache
    storage.reads.clear()
    restore(storage, fresh, tmp_path / "r1")
    for name in trees:
        assert storage.reads[name] == [(0, None)]  # one request, the whole pack
    assert tree_digest(tmp_path / "r1" / str(src).lstrip("/")) == tree_digest(src)

    copy = fresh / "trees" / sorted(trees)[0]
    damaged = bytearray(copy.read_bytes())
    damaged[len(damaged) // 2] ^= 1
    copy.write_bytes(bytes(damaged))
    storage.reads.clear()
    restore(storage, fresh, tmp_path / "r2")
    assert set(storage.reads) & trees == {copy.name}  # fetched again, the others from copies
    assert copy.read_bytes() != bytes(damaged)
    assert tree_digest(tmp_path / "r2" / str(src).lstrip("/")) == tree_digest(src)


def test_copies_of_packs_no_longer_listed_are_removed_by_the_next_backup(tmp_path: Path) -> None:
    src = folders(tmp_path / "src", random.Random(5))
    storage, cache = Remote(tmp_path / "repo"), tmp_path / "cache"
    Repository.init(storage, "pw")
    backup(storage, cache, src)
    stale = cache / "trees" / ("ab" * 32)  # a pack a prune removed since
    stale.write_bytes(b"old listings")
    (cache / "trees" / ".tmp-0123").write_bytes(b"interrupted")
    fresh = cache / "trees" / ("cd" * 32)  # a pack a backup running beside wrote, not indexed yet
    fresh.write_bytes(b"new listings")
    two_days_ago = time.time() - 2 * 24 * 3600
    for old in (stale, cache / "trees" / ".tmp-0123"):
        os.utime(old, (two_days_ago, two_days_ago))
    repo = backup(storage, cache, src)
    assert {p.name for p in (cache / "trees").iterdir()} == tree_packs(repo) | {fresh.name}
