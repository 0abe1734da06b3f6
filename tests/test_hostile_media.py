"""A write-protected backup disk and a full one, for real: a read-only bind mount and small
tmpfs file systems. Reading works on both; a full disk is always recoverable by forget and
prune, which delete unused packs first and repack only what fits."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

from coffre.chunker import ChunkerParams
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre, Mount, age_tree, snapshot_ids, tree_digest

SMALL_CHUNKS = ChunkerParams(64 * 1024, 128 * 1024, 256 * 1024)


def fill(directory: Path) -> Path:
    """Fill the file system up to the last byte, with a file beside the repository."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 512, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def files(root: Path, seed: int, count: int, size: int) -> None:
    rnd = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"scan-{seed}-{i:02d}.jpg").write_bytes(rnd.randbytes(size))
    age_tree(root)


def test_a_write_protected_disk_can_be_read_by_every_reading_command(
        repo: Coffre, tree: Path, mount: Mount, tmp_path: Path) -> None:
    repo.ok("backup", str(tree))
    repo.ok("backup", str(tree), "--tag", "second")
    protected = mount("protected", "--bind", "-o", "ro", str(repo.repo))
    ro = Coffre(protected, repo.pwfile, tmp_path / "cache")
    sid = snapshot_ids(ro)[0][:8]
    for args in (("snapshots",), ("ls", "latest", str(tree)), ("diff", sid, "latest"), ("stats",),
                 ("dump", "latest", str(tree / "docs" / "lettre-3.txt")), ("check", "--read-data"),
                 ("verify", "latest", str(tree)),
                 ("restore", "latest", "--target", str(tmp_path / "r"), "--verify")):
        res = ro(*args)
        assert res.code == 0 and "Traceback" not in res.err, (args, res)
    assert tree_digest(tmp_path / "r" / str(tree).lstrip("/")) == tree_digest(tree)
    assert "reading it without a lock" in ro("check").err
    # What writes says clearly that it cannot.
    for args in (("backup", str(tree)), ("forget", "--keep-last", "1"), ("prune",)):
        res = ro(*args)
        assert res.code == 1 and "Traceback" not in res.err, (args, res)
        assert "Read-only file system" in res.err, (args, res)


def small_disk(coffre: Coffre, mount: Mount, tmp_path: Path, size: str) -> tuple[Path, Coffre]:
    """A tmpfs of this size holding a repository of 1 MiB packs."""
    disk = mount("disk", "-t", "tmpfs", "-o", f"size={size}", "tmpfs")
    c = Coffre(disk / "coffre", coffre.pwfile, tmp_path / "cache")
    Repository.init(LocalBackend(c.repo), PASSWORD, chunker=SMALL_CHUNKS, pack_size=1024 * 1024)
    return disk, c


def new_day(src: Path, day: int, count: int) -> None:
    """The day's scans replace yesterday's (400 kB each)."""
    for old in src.glob("*"):
        old.unlink()
    files(src, day, count, 400_000)


def test_a_full_disk_is_recovered_by_forget_and_prune(coffre: Coffre, mount: Mount, tmp_path: Path) -> None:
    disk, c = small_disk(coffre, mount, tmp_path, "12m")
    src = tmp_path / "src"
    for day in range(6):
        new_day(src, day, 8)
        res = c("backup", str(src))
        if res.code != 0:
            break
    assert res.code == 1 and "no space left on the backup medium" in res.err, res
    assert "Traceback" not in res.err
    fill(disk)  # 100 % full: not even a lock file fits
    kept = snapshot_ids(c)
    assert len(kept) >= 2
    # Reading still works on the full disk.
    c.ok("restore", "latest", "--target", str(tmp_path / "r1"), "--verify")
    # Forget works on the full disk (it only deletes)...
    res = c("forget", "--keep-last", "1")
    assert res.code == 0, res
    assert snapshot_ids(c) == kept[-1:]
    fill(disk)  # (what forget freed, the filler takes again)
    # ...and prune frees it: unused packs go first, before anything is written.
    res = c("prune")
    assert res.code == 0, res
    assert "the medium was full: deleted" in res.err
    assert os.statvfs(disk).f_bavail > 0
    res = c("check", "--read-data")
    assert res.code == 0 and "no errors" in res.out, res
    restored = tmp_path / "r2"
    c.ok("restore", "latest", "--target", str(restored), "--verify")
    # And backing up works again.
    (disk / "filler").unlink()
    c.ok("backup", str(src))


def test_prune_on_a_nearly_full_disk_repacks_only_what_fits(coffre: Coffre, mount: Mount,
                                                             tmp_path: Path) -> None:
    disk, c = small_disk(coffre, mount, tmp_path, "16m")
    src = tmp_path / "src"
    files(src, 1, 24, 300_000)  # 7 MB in 1 MiB packs, each pack holding several files
    c.ok("backup", str(src))
    for i, f in enumerate(sorted(src.iterdir())):
        if i % 3:
            f.unlink()  # two files in three go: every pack is now mostly unused
    c.ok("backup", str(src))
    c.ok("forget", snapshot_ids(c)[0])
    filler = fill(disk)
    os.truncate(filler, filler.stat().st_size - 2_200_000)  # 2.2 MB free: room to repack ~1 MB of 2.4
    res = c("prune", "--json")
    assert res.code == 0, res
    st = res.json()
    assert st["packs_repacked"] >= 1 and st["packs_not_repacked"] >= 1, st
    assert any("free space" in n for n in st["notes"]), st
    assert "no errors" in c.ok("check", "--read-data").out
    c.ok("restore", "latest", "--target", str(tmp_path / "r"), "--verify")
    assert tree_digest(tmp_path / "r" / str(src).lstrip("/")) == tree_digest(src)
    # With repacking switched off, prune only deletes what is wholly unused.
    st = c.ok("prune", "--json", "--max-repack-size", "0").json()
    assert st["packs_repacked"] == 0


def test_forget_works_on_a_full_disk_and_prune_refuses_beside_a_live_command(
        coffre: Coffre, mount: Mount, tmp_path: Path) -> None:
    disk, c = small_disk(coffre, mount, tmp_path, "8m")
    src = tmp_path / "src"
    for day in range(2):
        new_day(src, day, 4)
        c.ok("backup", str(src))
    # Another command's live lock, written before the disk filled up.
    repo = Repository.open(LocalBackend(c.repo), PASSWORD)
    other = Lock(repo, exclusive=False, command="restore").acquire()
    try:
        fill(disk)
        res = c("forget", "--keep-last", "1", "--prune")
        assert res.code != 0 and "is using the repository" in res.err, res
        assert len(snapshot_ids(c)) == 2  # nothing was forgotten
    finally:
        other.release()
    fill(disk)  # (the page the other lock freed)
    res = c("forget", "--keep-last", "1")
    assert res.code == 0 and "going on without a lock" in res.err, res
    c.ok("prune")
