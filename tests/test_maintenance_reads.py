"""What check and copy read back for the bases of deltas: each base, from another pack.
Local: every such base is announced to the disk before it is loaded, so on a cold page cache the
disk reads them while the pack itself is read. Remote: the bases alone, by exact spans, not a
window of a pack around each. Prune moves deltas without reading their bases at all."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

from announcing import Announcing
from coffre.chunker import PAGE_BLOCK
from coffre.ops.check import SPAN, Checker, Share
from coffre.ops.copy import Copier, KeptBases
from coffre.ops.forget import remove_snapshots
from coffre.ops.prune import Pruner
from coffre.ops.restore import RestoreOptions, Restorer
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend
from test_backup_reads import BLOCKS, backup, change_every_block, database

from conftest import age_tree


def opened(backend: Announcing) -> Repository:
    repo = Repository.open(backend, "pw")
    repo.load_index()
    backend.tree_packs = {p.hex() for p in repo.index.packs() if repo.index.tree_pack(p)}
    return repo


Span = tuple[str, int, int]


def singles(spans: list[Span], sizes: dict[str, int]) -> list[Span]:
    """The loads of single blobs among `spans`: not those of whole packs (`sizes`: each
    pack's), such as the pack being checked or moved, read at once."""
    return [span for span in spans if not (span[1] == 0 and span[2] == sizes[span[0]])]


def forget_what_was_read(backend: Announcing) -> None:
    """Start afresh: what the backups announced covers the same bases."""
    backend.loaded.clear()
    backend.announced.clear()
    backend.unannounced.clear()


def pack_sizes(backend: Announcing) -> dict[str, int]:
    return {info.name: info.size for info in backend.list("data")}


def database_changed_everywhere(
    tmp_path: Path, rnd: random.Random, extra: int = 0,
) -> tuple[Path, Announcing]:
    """A database backed up, then a row changed in each of its blocks and backed up again:
    each block stored as a delta against its first version. `extra`: bytes of another new
    file in the second backup."""
    db = database(tmp_path / "src", rnd)
    backend = Announcing(tmp_path / "repo")
    Repository.init(backend, "pw")
    backup(backend, db.parent)
    change_every_block(db, rnd)
    if extra:
        (db.parent / "export.bin").write_bytes(rnd.randbytes(extra))
        age_tree(db.parent)
    assert backup(backend, db.parent)["deltas_added"] == BLOCKS
    return db, backend


def prune_the_export_away(db: Path, backend: Announcing) -> dict[str, int]:
    """The export dropped and backed up again, the snapshot that had it forgotten, then a
    prune that repacks its pack (the deltas still needed among them): what prune read is left
    in `backend.loaded`. The packs' sizes before the prune."""
    (db.parent / "export.bin").unlink()
    backup(backend, db.parent)  # the same deltas, without the export
    repo = opened(backend)
    with Lock(repo, exclusive=True, command="forget"):
        remove_snapshots(repo, [repo.snapshots()[1].id])
    repo = opened(backend)
    sizes = pack_sizes(backend)
    forget_what_was_read(backend)
    with Lock(repo, exclusive=True, command="prune") as lock:
        assert Pruner(repo, lock).run().packs_repacked >= 1
    return sizes


def read_outside_moved(backend: Announcing, sizes: dict[str, int]) -> list[Span]:
    """After a prune: its loads that were neither of a whole pack nor within a pack it moved
    (those it reads in spans of their used blobs, Pruner._read_spans): what it read for bases."""
    moved = set(sizes) - set(pack_sizes(backend))
    return [span for span in singles(backend.loaded, sizes) if span[0] not in moved]


def read_for_bases(backend: Announcing, sizes: dict[str, int]) -> int:
    """Bytes of the loads that were not of a whole pack."""
    return sum(stop - start for _name, start, stop in singles(backend.loaded, sizes))


def test_check_announces_the_bases_of_the_deltas_it_reads(tmp_path: Path) -> None:
    _db, backend = database_changed_everywhere(tmp_path, random.Random(11))
    repo = opened(backend)
    sizes = pack_sizes(backend)
    forget_what_was_read(backend)
    result = Checker(repo).run(read_data=True)
    assert not result.errors and not result.damaged_packs
    # Each delta's base on its own, announced first.
    blobs = {(p.hex(), e.offset, e.offset + e.length) for p, entries in repo.index.packs().items()
             for e in entries}
    assert len([span for span in backend.loaded if span in blobs]) == BLOCKS
    assert [span for span in backend.unannounced if span in blobs] == []
    # Besides, each pack read once: whole, or a larger one in spans after its header (the
    # last 64 KiB) and the spans covering it end to end.
    for name, size in sizes.items():
        if name in backend.tree_packs:
            continue  # not recorded (Announcing)
        own = sorted(span[1:] for span in backend.loaded if span[0] == name and span not in blobs)
        if size <= SPAN:
            assert own == [(0, size)]
        else:
            own.remove((size - 64 * 1024, size))
            assert own[0][0] == 0 and own[-1][1] == size and len(own) > 1
            assert all(a[1] == b[0] for a, b in itertools.pairwise(own))
            assert max(stop - start for start, stop in own) <= SPAN


def test_prune_moves_deltas_without_reading_their_bases(tmp_path: Path) -> None:
    """A pack of deltas still needed, beside a file no kept snapshot has: repacked, each delta
    authenticated where it lies, none of their bases read (a third of a year-old repository's
    prune went to them: docs/design.md §3, "Deltas")."""
    db, backend = database_changed_everywhere(tmp_path, random.Random(12), extra=8 * PAGE_BLOCK)
    sizes = prune_the_export_away(db, backend)
    moved = opened(backend)
    assert sum(e.base is not None for entries in moved.index.packs().values() for e in entries) == BLOCKS
    assert read_outside_moved(backend, sizes) == []
    assert Checker(moved).run(read_data=True).ok


# -- remote storage: the bases read by exact spans, not by windows --------------------------------

SCAN = 48 * 1024 * 1024  # beside the database in its first backup: the bases lie scattered among it


def scattered_bases(tmp_path: Path, rnd: random.Random, extra: int = 0) -> tuple[Path, Announcing]:
    """A database backed up beside a large scan (format 2 shuffles a pack's blobs, so its blocks
    lie scattered among the scan's), then changed in every block and backed up again: the second
    backup's deltas name bases with other data all around them. The storage says it is remote."""
    src = tmp_path / "src"
    db = database(src, rnd)
    (src / "scan.jpg").write_bytes(rnd.randbytes(SCAN))
    age_tree(src, 7200)
    backend = Announcing(tmp_path / "repo")
    Repository.init(backend, "pw")
    backend.remote = True
    backup(backend, src)
    change_every_block(db, rnd)
    if extra:
        (src / "export.bin").write_bytes(rnd.randbytes(extra))
        age_tree(src)
    assert backup(backend, src)["deltas_added"] == BLOCKS
    return db, backend


def base_bytes(repo: Repository) -> int:
    """The stored size of every blob a delta names as its base."""
    named = {e.base for entries in repo.index.packs().values() for e in entries if e.base is not None}
    return sum(loc.entry.length for b in named if (loc := repo.index.lookup(b)) is not None)


def test_a_remote_check_reads_the_bases_not_windows_around_them(tmp_path: Path) -> None:
    """A year-old repository's deltas name bases in a hundred packs: a window of 8 MiB around
    each would read many times the repository (repository/packbases.py)."""
    _db, backend = scattered_bases(tmp_path, random.Random(13))
    repo = opened(backend)
    sizes = pack_sizes(backend)
    forget_what_was_read(backend)
    result = Checker(repo).run(read_data=True)
    assert not result.errors and not result.damaged_packs and result.packs_read == len(sizes)
    # Each base once, and little else: the bases are a third of what lies around them.
    assert base_bytes(repo) <= read_for_bases(backend, sizes) <= base_bytes(repo) * 5 // 4


def test_a_remote_share_of_the_data_reads_its_packs_and_nothing_for_their_deltas(tmp_path: Path) -> None:
    """The nightly check of a share (`--read-data-subset`) authenticates each delta where it
    lies: from remote storage it reads the share's packs whole, and no base."""
    _db, backend = scattered_bases(tmp_path, random.Random(16))
    repo = opened(backend)
    sizes = pack_sizes(backend)
    holding_deltas = sorted(p.hex() for p, entries in repo.index.packs().items()
                            if any(e.base is not None for e in entries))
    for share in (Share(1, holding_deltas[0][:-1]), Share(100)):  # the first: that pack alone
        forget_what_was_read(backend)
        result = Checker(repo).run(share=share)
        assert result.ok, (result.errors, result.damaged_packs)
        examined = {p.hex() for p in result.examined}
        assert holding_deltas[0] in examined
        assert singles(backend.loaded, sizes) == []
        # Whole packs: the share's, and the folder listings' (the walk of the snapshots).
        whole = {name for name, _start, _stop in backend.loaded if name in sizes}
        assert whole <= examined | backend.tree_packs


def test_a_remote_prune_reads_only_the_packs_it_moves(tmp_path: Path) -> None:
    db, backend = scattered_bases(tmp_path, random.Random(14), extra=32 * PAGE_BLOCK)
    sizes = prune_the_export_away(db, backend)
    assert read_outside_moved(backend, sizes) == []


def test_a_copy_from_remote_storage_reads_the_bases_not_windows_around_them(tmp_path: Path) -> None:
    """The day's deltas copied to an off-site repository that has their bases (shared keys):
    each delta is checked through its base, read from the source."""
    _db, backend = scattered_bases(tmp_path, random.Random(15))
    src = opened(backend)
    target = LocalBackend(tmp_path / "off-site")
    assert src.content_secret is not None
    Repository.init(target, "autre", chunker=src.config.chunker, content=src.content_secret)
    for snap in src.snapshots():  # the first day, then the deltas of the second
        dst = Repository.open(target, "autre")
        dst.load_index()
        forget_what_was_read(backend)
        with Lock(dst, exclusive=False, command="copy") as lock:
            Copier(src, dst, lock).run([snap])
    assert base_bytes(src) <= read_for_bases(backend, pack_sizes(backend)) <= base_bytes(src) * 5 // 4


def test_a_first_copy_from_remote_storage_reads_each_pack_once(tmp_path: Path) -> None:
    """Both days copied at once to an empty off-site repository (shared keys): the bases the
    copy reads to copy them serve the checks of the deltas copied after them (ops/copy.py
    KeptBases), and each run of blobs is read with one request, not through the pack windows,
    which read a window again whole for a blob crossing its end. Before: 2.3 times the packs."""
    _db, backend = scattered_bases(tmp_path, random.Random(16))
    src = opened(backend)
    target = LocalBackend(tmp_path / "off-site")
    assert src.content_secret is not None
    Repository.init(target, "autre", chunker=src.config.chunker, content=src.content_secret)
    dst = Repository.open(target, "autre")
    dst.load_index()
    forget_what_was_read(backend)
    with Lock(dst, exclusive=False, command="copy") as lock:
        Copier(src, dst, lock).run(src.snapshots())
    sizes = pack_sizes(backend)
    read: dict[str, int] = {}
    for name, start, stop in backend.loaded:
        read[name] = read.get(name, 0) + stop - start
    data = {name: size for name, size in sizes.items() if name not in backend.tree_packs}
    assert read.keys() == data.keys()
    for name, n in read.items():  # each pack's blobs once (its header is not read)
        assert n <= data[name], (name, n, data[name])
    assert sum(read.values()) >= sum(data.values()) * 9 // 10
    copied = Repository.open(target, "autre")
    copied.load_index()
    restored = tmp_path / "restored"
    assert not Restorer(copied, RestoreOptions(target=str(restored))).run(copied.snapshots()[-1]).errors
    assert (restored / str(_db).lstrip("/")).read_bytes() == _db.read_bytes()


def test_a_copy_keeps_only_the_bases_it_was_asked_for_within_its_room() -> None:
    """What does not fit, or no delta names, is not kept: the deltas' checks read it from the
    source as before."""
    kept = KeptBases({b"base-1", b"base-2"}, limit=10)
    kept.offer(b"other", b"x" * 4)  # no delta names it
    kept.offer(b"base-1", b"y" * 6)
    kept.offer(b"base-2", b"z" * 6)  # beyond the room left
    assert kept.get(b"base-1") == b"y" * 6
    assert kept.get(b"base-2") is None and kept.get(b"other") is None
