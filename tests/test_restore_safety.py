"""Restore never writes outside its target, whatever the snapshot or the target contains.

Hostile snapshots are written in-process with the repository API (the backup never produces
them); the restore itself always runs through the real command line."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from coffre.crypto import aead
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node, encode_tree
from coffre.repository.packer import Packer
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre


class SnapshotWriter:
    """Stores trees exactly as given (no name checks) and commits them as a snapshot."""

    def __init__(self, c: Coffre) -> None:
        self.repo = Repository.open(LocalBackend(c.repo), PASSWORD)
        self.repo.load_index()
        self.packer = Packer(self.repo)

    def _blob(self, kind: int, data: bytes) -> bytes:
        blob_id = self.repo.crypter.blob_id(data)
        if self.packer.claim(blob_id):
            self.packer.add(kind, blob_id, data)
        return blob_id

    def _meta(self) -> dict[str, int]:
        now = time.time_ns()
        return {"uid": os.getuid(), "gid": os.getgid(), "mtime_ns": now, "atime_ns": now}

    def file(self, name: bytes, data: bytes = b"pwned\n") -> Node:
        return Node(name=name, type="file", mode=0o644, size=len(data),
                    content=[self._blob(aead.KIND_DATA, data)], **self._meta())

    def dir(self, name: bytes, children: list[Node]) -> Node:
        return Node(name=name, type="dir", mode=0o755, subtree=self.tree(children),
                    **self._meta())

    def link(self, name: bytes, target: bytes) -> Node:
        return Node(name=name, type="symlink", mode=0o777, target=target, **self._meta())

    def tree(self, nodes: list[Node]) -> bytes:
        return self._blob(aead.KIND_TREE, encode_tree(nodes))

    def commit(self, nodes: list[Node]) -> str:
        tree = self.tree(nodes)
        self.packer.flush()
        self.repo.save_index(self.packer.take_written())
        snap = Snapshot(time_ns=time.time_ns(), hostname="attacker", username="mallory",
                        paths=["/"], tree=tree)
        return self.repo.save_snapshot(snap)


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """(target, outside): the target sits alone in a 'jail' directory, next to an outside
    directory holding a file that must never change."""
    target = tmp_path / "jail" / "target"
    target.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_bytes(b"precious\n")
    return target, outside


def assert_nothing_outside(target: Path, outside: Path) -> None:
    assert os.listdir(target.parent) == ["target"]
    assert os.listdir(outside) == ["victim.txt"]
    assert (outside / "victim.txt").read_bytes() == b"precious\n"
    assert not os.path.lexists(outside.parent / "evil")


def layout(root: Path) -> dict[str, tuple[str, bytes, int]]:
    """Path -> (kind, content or link target, mode) below root; hard links by inode order."""
    out: dict[str, tuple[str, bytes, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                body = p.read_bytes() + f" nlink={st.st_nlink}".encode()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p).encode()
            else:
                body = b""
            out[str(p.relative_to(root))] = (stat.filemode(st.st_mode)[0], body,
                                             stat.S_IMODE(st.st_mode))
    return out


Hostile = Callable[[SnapshotWriter, Path], list[Node]]

HOSTILE: dict[str, Hostile] = {
    "file named ..": lambda w, out: [w.file(b"..")],
    "file ../evil": lambda w, out: [w.file(b"../evil")],
    "file ../../outside/evil": lambda w, out: [w.file(b"../../outside/evil")],
    "absolute file name": lambda w, out: [w.file(os.fsencode(out / "evil"))],
    "name with a slash": lambda w, out: [w.dir(b"a", []), w.file(b"a/evil")],
    "name with NUL": lambda w, out: [w.file(b"evil\0")],
    "directory ..": lambda w, out: [w.dir(b"..", [w.file(b"evil")])],
    "directory .": lambda w, out: [w.dir(b".", [w.file(b"evil")])],
    "directory a/../..": lambda w, out: [w.dir(b"a/../..", [w.file(b"evil")])],
    "absolute directory": lambda w, out: [w.dir(os.fsencode(out), [w.file(b"evil")])],
    "symlink named ../link": lambda w, out: [w.link(b"../link", os.fsencode(out))],
    "deep ../../../evil": lambda w, out: [
        w.file(b"fine.txt"), w.dir(b"ok", [w.dir(b"deeper", [w.file(b"../../../evil")])])],
    "symlink then directory of the same name": lambda w, out: [
        w.link(b"d", os.fsencode(out)), w.dir(b"d", [w.file(b"evil")])],
    "directory then symlink of the same name": lambda w, out: [
        w.dir(b"d", [w.file(b"evil")]), w.link(b"d", os.fsencode(out))],
    "symlink then file through it": lambda w, out: [
        w.link(b"d", os.fsencode(out)), w.dir(b"d", [w.file(b"victim.txt")])],
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_snapshot_is_refused(repo: Coffre, places: tuple[Path, Path], case: str) -> None:
    target, outside = places
    writer = SnapshotWriter(repo)
    snap = writer.commit(HOSTILE[case](writer, outside))

    res = repo("restore", snap[:8], "--target", str(target))

    assert res.code != 0, res
    assert "unsafe file name" in res.err or "duplicate name" in res.err, res
    assert_nothing_outside(target, outside)
    for dirpath, _, filenames in os.walk(target):
        assert "evil" not in filenames, dirpath


def test_symlinks_pointing_outside_are_restored_as_links_only(
    repo: Coffre, places: tuple[Path, Path]
) -> None:
    """The control case: the same writer, legal names, links leading out of the target."""
    target, outside = places
    w = SnapshotWriter(repo)
    snap = w.commit([w.link(b"d", os.fsencode(outside)),
                     w.link(b"v", os.fsencode(outside / "victim.txt")),
                     w.dir(b"ok", [w.file(b"fine.txt", b"fine\n")])])

    repo.ok("restore", snap[:8], "--target", str(target))

    assert_nothing_outside(target, outside)
    assert os.readlink(target / "d") == str(outside)
    assert os.readlink(target / "v") == str(outside / "victim.txt")
    assert (target / "ok" / "fine.txt").read_bytes() == b"fine\n"


# -- a target that already holds symlinks --------------------------------------------------------
@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "d" / "sub").mkdir(parents=True)
    (src / "d" / "victim.txt").write_bytes(b"from the snapshot\n")
    (src / "d" / "sub" / "f.txt").write_bytes(b"sub file\n")
    (src / "file.txt").write_bytes(b"restored content\n")
    (src / "hard-1").write_bytes(b"linked\n")
    os.link(src / "hard-1", src / "hard-2")
    (src / "link").symlink_to("file.txt")
    os.mkfifo(src / "fifo")
    return src


def _restore_over(repo: Coffre, src: Path, target: Path, outside: Path,
                  plant: dict[str, Path]) -> Path:
    """Back up src, plant symlinks (name -> outside path) at the restored places, restore."""
    repo.ok("backup", str(src))
    base = target / str(src).lstrip("/")
    base.mkdir(parents=True)
    for name, dest in plant.items():
        (base / name).symlink_to(dest)
    repo.ok("restore", "latest", "--target", str(target), "--verify", "--overwrite", "always")
    return base


def test_existing_symlink_at_a_directory_place_is_not_followed(
    repo: Coffre, small_tree: Path, places: tuple[Path, Path]
) -> None:
    target, outside = places
    base = _restore_over(repo, small_tree, target, outside, {"d": outside})

    assert_nothing_outside(target, outside)
    assert not (base / "d").is_symlink()
    assert layout(base) == layout(small_tree)


def test_existing_symlink_above_the_restored_tree_is_not_followed(
    repo: Coffre, small_tree: Path, places: tuple[Path, Path]
) -> None:
    target, outside = places
    top = str(small_tree).lstrip("/").split("/")[0]  # 'tmp'
    (target / top).symlink_to(outside)
    repo.ok("backup", str(small_tree))

    repo.ok("restore", "latest", "--target", str(target), "--overwrite", "always")

    assert_nothing_outside(target, outside)
    assert not (target / top).is_symlink()
    assert layout(target / str(small_tree).lstrip("/")) == layout(small_tree)


def test_existing_symlinks_at_file_places_are_replaced(
    repo: Coffre, small_tree: Path, places: tuple[Path, Path]
) -> None:
    target, outside = places
    victim = outside / "victim.txt"
    planted = {"file.txt": victim, "hard-1": victim, "hard-2": victim, "link": victim,
               "fifo": victim}
    base = _restore_over(repo, small_tree, target, outside, planted)

    assert_nothing_outside(target, outside)
    assert layout(base) == layout(small_tree)
    assert (base / "file.txt").read_bytes() == b"restored content\n"
    assert os.readlink(base / "link") == "file.txt"
    assert stat.S_ISFIFO(os.lstat(base / "fifo").st_mode)
    assert (base / "hard-1").stat().st_ino == (base / "hard-2").stat().st_ino


def test_existing_hard_link_to_an_outside_file_is_replaced(
    repo: Coffre, small_tree: Path, places: tuple[Path, Path]
) -> None:
    target, outside = places
    repo.ok("backup", str(small_tree))
    base = target / str(small_tree).lstrip("/")
    base.mkdir(parents=True)
    os.link(outside / "victim.txt", base / "file.txt")

    repo.ok("restore", "latest", "--target", str(target), "--overwrite", "always")

    assert_nothing_outside(target, outside)
    assert (base / "file.txt").read_bytes() == b"restored content\n"


# -- partial restore ------------------------------------------------------------------------------
def test_restore_of_one_subtree(repo: Coffre, tree: Path, restored: Path) -> None:
    repo.ok("backup", str(tree))
    wanted = tree / "scans" / "2026"

    repo.ok("restore", "latest", "--target", str(restored), "--include", str(wanted), "--verify")

    base = restored / str(tree).lstrip("/")
    assert sorted(os.listdir(base)) == ["scans"]
    assert os.listdir(base / "scans") == ["2026"]
    assert layout(base / "scans" / "2026") == layout(wanted)


def test_restore_of_one_file(repo: Coffre, tree: Path, restored: Path) -> None:
    repo.ok("backup", str(tree))
    wanted = tree / "docs" / "lettre-7.txt"

    repo.ok("restore", "latest", "--target", str(restored), "--include", str(wanted))

    base = restored / str(tree).lstrip("/")
    assert os.listdir(base) == ["docs"] and os.listdir(base / "docs") == ["lettre-7.txt"]
    assert (base / "docs" / "lettre-7.txt").read_bytes() == wanted.read_bytes()
