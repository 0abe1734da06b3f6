"""What a restore reads from the repository: each pack's blobs together, once, however the
walk alternates between packs (folders of files backed up on several days)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from announcing import Announcing
from coffre.format.tree import Node
from coffre.ops import selection as selection_module
from coffre.ops.backup import Backup, BackupOptions
from coffre.ops.common import load_tree
from coffre.ops.restore import RestoreOptions, Restorer
from coffre.ops.selection import Selection
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.repository.wholepacks import PlannedPacks
from coffre.storage.base import Handle
from coffre.storage.local import LocalBackend

from conftest import tree_digest


class Counting(LocalBackend):
    """A local repository that counts the bytes read of each pack (and may say it is remote)."""

    def __init__(self, path: Path, remote: bool) -> None:
        super().__init__(path)
        self.remote = remote
        self.read: dict[str, int] = {}
        self.requests: dict[str, int] = {}

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        data = super().load(handle, offset, length)
        if handle.kind == "data":
            self.read[handle.name] = self.read.get(handle.name, 0) + len(data)
            self.requests[handle.name] = self.requests.get(handle.name, 0) + 1
        return data


def backup(backend: LocalBackend, src: Path) -> None:
    repo = Repository.open(backend, "pw")
    with Lock(repo, exclusive=False, command="backup") as lock:
        repo.load_index()
        Backup(repo, lock, BackupOptions(paths=[str(src)], host="h")).run()


def files(folder: Path, names: list[str], rnd: random.Random) -> None:
    for name in names:
        (folder / name).write_bytes(rnd.randbytes(rnd.randrange(4000, 40_000)))


def folders_and_a_database(src: Path, folders: int, each: int, database: int, rnd: random.Random) -> None:
    """Folders of small files and one large file (officine.db), as a pharmacy's server has."""
    for i in range(folders):
        (src / f"dossier{i}").mkdir(parents=True)
        files(src / f"dossier{i}", [f"f{n:02}" for n in range(each)], rnd)
    (src / "officine.db").write_bytes(rnd.randbytes(database))


@pytest.mark.parametrize("remote", [False, True])
def test_each_pack_is_read_once_when_the_walk_alternates_between_packs(remote: bool, tmp_path: Path) -> None:
    rnd = random.Random(18)
    src = tmp_path / "src"
    folders = [src / f"dossier{i}" for i in range(6)]
    for folder in folders:
        folder.mkdir(parents=True)
    backend = Counting(tmp_path / "repo", remote)
    Repository.init(backend, "pw")
    # Two days, two packs; in the walk, a folder of each day after the other: each of the
    # first day's folders needs blobs from all over the first pack (format 2 shuffles packs).
    for day in (0, 1):
        for folder in folders[day::2]:
            files(folder, [f"f{n:02}" for n in range(30)], rnd)
        backup(backend, src)
    sizes = {info.name: info.size for info in backend.list("data")}
    assert len(sizes) == 4  # each day's data and its folder listings
    backend.read.clear()
    repo = Repository.open(backend, "pw")
    repo.load_index()
    restored = tmp_path / "restored"
    assert not Restorer(repo, RestoreOptions(target=str(restored))).run(repo.snapshots()[-1]).errors
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)
    for name, size in sizes.items():
        # Once; the folder listings (read first, by the plan) a second time at most.
        assert backend.read[name] <= size + 64 * 1024, (backend.read[name], size)


def test_a_remote_restore_reads_each_pack_it_needs_most_of_whole_once(tmp_path: Path) -> None:
    """Off site, a pack the restore needs most of is read with one request, held while its
    blobs are written and dropped after; a restore of one small file reads only around it."""
    rnd = random.Random(7)
    src = tmp_path / "src"
    folders_and_a_database(src, 6, 30, 3_000_000, rnd)
    backend = Counting(tmp_path / "repo", True)
    Repository.init(backend, "pw")
    backup(backend, src)
    repo = Repository.open(backend, "pw")
    repo.load_index()
    data_packs = {p.hex(): max(e.offset + e.length for e in es)
                  for p, es in repo.index.packs().items() if not repo.index.tree_pack(p)}
    backend.read.clear()
    backend.requests.clear()
    restored = tmp_path / "restored"
    assert not Restorer(repo, RestoreOptions(target=str(restored))).run(repo.snapshots()[-1]).errors
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)
    for name, blobs_end in data_packs.items():
        assert backend.requests[name] == 1 and backend.read[name] >= blobs_end, name
    assert repo.planned is None  # nothing held after the restore

    backend.read.clear()
    one = src / "dossier3" / "f07"
    opts = RestoreOptions(target=str(tmp_path / "one"), includes=[str(one)])
    assert not Restorer(repo, opts).run(repo.snapshots()[-1]).errors
    assert (tmp_path / "one" / str(one).lstrip("/")).read_bytes() == one.read_bytes()
    assert sum(backend.read.get(name, 0) for name in data_packs) < one.stat().st_size * 3


def test_planned_packs_hold_bounded_memory_and_read_a_dropped_pack_again(tmp_path: Path) -> None:
    backend = Counting(tmp_path / "repo", True)
    packs = {bytes([i]) * 32: bytes([i]) * 1000 for i in (1, 2, 3)}
    for pid, data in packs.items():
        backend.save(Handle("data", pid.hex()), data)
    planned = PlannedPacks(backend, {pid: 2 for pid in packs}, capacity=2000)
    for pid in packs:  # three packs wanted at once, room for two: the first is dropped
        assert planned.take(pid, 10, 5, 1) == packs[pid][10:15]
    for pid in packs:
        assert planned.take(pid, 900, 100, 1) == packs[pid][900:]
        assert not planned.wants(pid)  # its last blob taken: dropped
    # The first read again (which drops the second, the oldest then), the last held throughout.
    assert [backend.requests[p.hex()] for p in packs] == [2, 2, 1]


class Rounds(LocalBackend):
    """A "remote" local repository that counts the round trips a reader waits for: a round
    starts when a read begins while none is in flight. Each read takes 20 ms, as off site."""

    remote = True

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._lock = threading.Lock()
        self._in_flight = 0
        self.rounds = 0
        self.counting = False

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        with self._lock:
            if self.counting and handle.kind == "data" and self._in_flight == 0:
                self.rounds += 1
            self._in_flight += 1
        try:
            if self.counting:
                time.sleep(0.02)  # the network's latency, so that reads sent together overlap
            return super().load(handle, offset, length)
        finally:
            with self._lock:
                self._in_flight -= 1


def test_remote_folder_listings_are_read_level_by_level_not_one_round_trip_each(tmp_path: Path) -> None:
    """A restore from off-site waits for as many rounds of folder listings as the tree is deep,
    not one per folder (a round trip is tens of milliseconds off site)."""
    rnd = random.Random(5)
    src = tmp_path / "src"
    folders = [src]
    for _depth in range(3):  # 3 + 9 + 27 folders below the top, 3 levels
        folders = [f / f"d{k}" for f in folders for k in range(3)]
        for folder in folders:
            folder.mkdir(parents=True)
            files(folder, ["a"], rnd)
    backend = Rounds(tmp_path / "repo")
    Repository.init(backend, "pw")
    backup(backend, src)
    repo = Repository.open(backend, "pw")
    repo.load_index()
    selection = Selection(repo, [], [])
    backend.counting = True
    selection.plan(repo.snapshots()[-1])
    # The snapshot's root, the folders above src (tmp_path's), then src's 3 levels: each a
    # round of reads in flight together, as deep as the tree is.
    depth = len(src.parts) + 3
    assert selection.files == 39 and backend.rounds <= depth + 1, backend.rounds


@pytest.mark.parametrize(("remote", "decoded_kept"), [(False, True), (True, True), (False, False)])
def test_a_restore_reads_and_decodes_each_folder_listing_once(
    remote: bool, decoded_kept: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan's listings, decoded and checked, are the ones the restore walks: a restore of
    many small folders spent a tenth of its time decoding them again. Beyond what is kept
    decoded, the listings' bytes are kept and decoded again, but still read once."""
    rnd = random.Random(11)
    src = tmp_path / "src"
    for i in range(4):
        for j in range(3):
            (src / f"d{i}" / f"e{j}").mkdir(parents=True)
            files(src / f"d{i}" / f"e{j}", ["a", "b"], rnd)
    backend = Counting(tmp_path / "repo", remote)
    Repository.init(backend, "pw")
    backup(backend, src)
    repo = Repository.open(backend, "pw")
    repo.load_index()
    if not decoded_kept:
        monkeypatch.setattr(selection_module, "NODES_KEPT_BYTES", 0)
    decoded: dict[bytes, int] = {}
    requested: dict[bytes, int] = {}

    def counting_load_tree(repo: Repository, tree_id: bytes, data: bytes | None = None) -> list[Node]:
        decoded[tree_id] = decoded.get(tree_id, 0) + 1
        return load_tree(repo, tree_id, data)

    def counted(read: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(ids: Any, *args: Any, **kwargs: Any) -> Any:
            for blob_id in [ids] if isinstance(ids, bytes) else ids:
                if blob_id in decoded or not repo.index.plain_data(blob_id):
                    requested[blob_id] = requested.get(blob_id, 0) + 1
            return read(ids, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(selection_module, "load_tree", counting_load_tree)
    monkeypatch.setattr(repo, "load_blob", counted(repo.load_blob))
    monkeypatch.setattr(repo, "load_many", counted(repo.load_many))
    restored = tmp_path / "restored"
    assert not Restorer(repo, RestoreOptions(target=str(restored))).run(repo.snapshots()[-1]).errors
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)
    folders = len(src.parts) + 4 + 12  # the snapshot's root ("/") and the folders down to src
    assert len(decoded) == folders
    assert set(decoded.values()) == ({1} if decoded_kept else {2})
    assert requested and set(requested.values()) == {1}, requested


def test_a_local_restore_tells_the_disk_what_it_reads_next_before_reading_it(tmp_path: Path) -> None:
    """On a cold page cache each span of a pack read by a restore's worker waited for the disk
    while a core stood idle; every span is announced (posix_fadvise WILLNEED) when its task is
    queued, so the disk reads it while the workers write: small files by batch, a large file
    by range."""
    src = tmp_path / "src"
    folders_and_a_database(src, 3, 20, 6_000_000, random.Random(3))
    backend = Announcing(tmp_path / "repo")
    Repository.init(backend, "pw")
    backup(backend, src)
    repo = Repository.open(backend, "pw")
    repo.load_index()
    backend.tree_packs = {p.hex() for p in repo.index.packs() if repo.index.tree_pack(p)}
    restorer = Restorer(repo, RestoreOptions(target=str(tmp_path / "restored")))
    restorer.range_blobs = 2  # the large file in several ranges
    assert not restorer.run(repo.snapshots()[-1]).errors
    assert tree_digest(tmp_path / "restored" / str(src).lstrip("/")) == tree_digest(src)
    assert len(backend.loaded) > 2 and not backend.unannounced, backend.unannounced
