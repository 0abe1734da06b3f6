"""A restore as root into a folder other users can write in: another process swapping the
target's folders for symlinks while it runs gets nothing written outside the target, and the
restore ends with its counts, not a traceback. Device nodes are made only on request, and
setuid/setgid bits survive only a restore as root. Real `coffre` processes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from coffre.ops.target import KEPT_PER_THREAD, TargetDirs

from conftest import NOBODY, AsNobody, Coffre, age_tree, chown_tree

# Swaps every folder directly under the target for a symlink to the same path under
# `outside` (where the same folders wait), and back, as fast as it can, until killed.
SWAPPER = """
import os, sys
target, outside = sys.argv[1], sys.argv[2]
print("ready", flush=True)
while True:
    for name in os.listdir(target):
        real, aside = os.path.join(target, name), os.path.join(target, "." + name + ".aside")
        if name.startswith(".") or os.path.islink(real):
            continue
        try:
            os.rename(real, aside)
            os.symlink(os.path.join(outside, name), real)
            os.unlink(real)
            os.rename(aside, real)
        except OSError:
            pass
"""


def files_under(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, names in os.walk(root) for f in names]


def test_folders_swapped_for_symlinks_during_a_root_restore_lead_nowhere(
        repo: Coffre, tmp_path: Path, shared_dir: Path) -> None:
    src = tmp_path / "src"
    for d in range(8):
        for sub in ("a", "b"):
            (src / f"dossier-{d}" / sub).mkdir(parents=True)
            for i in range(60):
                (src / f"dossier-{d}" / sub / f"ordonnance-{i}.txt").write_text(f"{d} {sub} {i}\n")
    age_tree(src)
    repo.ok("backup", str(src))
    target, outside = shared_dir / "target", shared_dir / "outside"
    target.mkdir()
    # The attacker prepares the same folders outside, so a followed symlink would work.
    for d in range(8):
        for sub in ("a", "b"):
            (outside / str(src).lstrip("/") / f"dossier-{d}" / sub).mkdir(parents=True)
    for _ in range(3):
        swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(target), str(outside)],
                                   stdout=subprocess.PIPE)
        try:
            assert swapper.stdout is not None and swapper.stdout.readline() == b"ready\n"
            res = repo("restore", "latest", "--target", str(target), "--json")
        finally:
            swapper.kill()
            swapper.wait()
        assert files_under(outside) == [], res
        assert res.code in (0, 1), res
        assert "Traceback" not in res.err
        counts = res.json()
        assert counts["files"] + counts["files_failed"] == 8 * 2 * 60, counts
        shutil.rmtree(target)
        target.mkdir()



def test_the_walk_from_the_target_never_goes_through_a_symlink(tmp_path: Path) -> None:
    """What the restore relies on when a folder is swapped after it was made: reaching a
    folder from the target refuses a symlink at any depth instead of following it out,
    while a thread that kept the real folder open still writes inside the target. (The race
    above hits this only when a swap falls between two lookups.)"""
    target, outside = tmp_path / "target", tmp_path / "outside"
    (target / "a").mkdir(parents=True)
    (outside / "b").mkdir(parents=True)
    dirs = TargetDirs(os.fsencode(target))
    try:
        folder, name = dirs.parent(os.fsencode(target / "a" / "x"))  # kept by this thread
        (target / "a").rename(target / "a.real")
        (target / "a").symlink_to(outside)
        for inside in (target / "a", target / "a" / "b"):
            with pytest.raises(OSError):
                dirs.open_dir(os.fsencode(inside))
        with pytest.raises(OSError):
            dirs.parent(os.fsencode(target / "a" / "b" / "x"))
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=folder))
        assert (target / "a.real" / "x").exists() and files_under(outside) == []
        # A fifo's place swapped for a symlink before its mode is set: the mode is never
        # set on what the symlink points to.
        (outside / "victim").write_text("précieux\n")
        (outside / "victim").chmod(0o600)
        (target / "fifo").symlink_to(outside / "victim")
        with pytest.raises(OSError), dirs.node(os.fsencode(target / "fifo")) as itself:
            os.chmod(itself, 0o666)
        assert stat.S_IMODE((outside / "victim").stat().st_mode) == 0o600
    finally:
        dirs.close()


def test_device_nodes_are_made_only_with_devices(repo: Coffre, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "rapport.txt").write_text("ok\n")
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    age_tree(src)
    repo.ok("backup", str(src))
    res = repo.ok("restore", "latest", "--target", str(tmp_path / "r1"))
    restored = tmp_path / "r1" / str(src).lstrip("/")
    assert (restored / "rapport.txt").exists() and not (restored / "null").exists()
    assert "1 device node not restored: give --devices to make it" in res.err
    repo.ok("restore", "latest", "--target", str(tmp_path / "r2"), "--devices")
    node = (tmp_path / "r2" / str(src).lstrip("/") / "null").lstat()
    assert stat.S_ISCHR(node.st_mode) and node.st_rdev == os.makedev(1, 3)


def test_setuid_and_setgid_bits_survive_only_a_restore_as_root(repo: Coffre, tmp_path: Path,
                                                               shared_dir: Path) -> None:
    src = tmp_path / "src"
    (src / "partage").mkdir(parents=True)
    (src / "outil").write_bytes(b"#!/bin/sh\n")
    (src / "outil").chmod(0o6755)
    (src / "partage").chmod(0o2775)  # a folder's setgid only picks the group of new files
    age_tree(src)
    repo.ok("backup", str(src))
    shutil.copytree(repo.repo, shared_dir / "repo")
    shutil.copy(repo.pwfile, shared_dir / "password")
    chown_tree(shared_dir, NOBODY)
    nobody = AsNobody(shared_dir / "repo", shared_dir / "password", shared_dir / "cache")
    res = nobody("restore", "latest", "--target", str(shared_dir / "r"))
    assert res.code == 0, res
    restored = shared_dir / "r" / str(src).lstrip("/")
    assert stat.S_IMODE((restored / "outil").stat().st_mode) == 0o755
    assert stat.S_IMODE((restored / "partage").stat().st_mode) == 0o2775
    assert "setuid/setgid bits removed from 1 file:" in res.err
    repo.ok("restore", "latest", "--target", str(tmp_path / "as-root"))
    as_root = tmp_path / "as-root" / str(src).lstrip("/")
    assert stat.S_IMODE((as_root / "outil").stat().st_mode) == 0o6755


def test_a_folder_is_reached_from_its_deepest_kept_ancestor(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A restore writes folder after folder, depth first: reaching the next folder opens one
    name, not every name from the target down (a deep tree of small folders cost twice the
    system calls). Folders kept are bounded and all closed at the end."""
    target = tmp_path / "target"
    deep = target / "srv" / "officine" / "documents" / "2026" / "novembre"
    for i in range(40):
        (deep / f"jour-{i:02d}").mkdir(parents=True)
    opened: list[str] = []

    def open_inside() -> int:
        """Descriptors of this process open on the target or below (other tests' threads
        may hold other descriptors meanwhile)."""
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                count += os.readlink(f"/proc/self/fd/{fd}").startswith(str(target))
            except OSError:
                pass  # closed since listed
        return count

    real_open = os.open

    def counting(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fsdecode(path))
        return real_open(path, *args, **kwargs)

    dirs = TargetDirs(os.fsencode(target))
    monkeypatch.setattr(os, "open", counting)
    try:
        dirs.parent(os.fsencode(deep / "jour-00" / "ordonnance.pdf"))
        assert opened == ["srv", "officine", "documents", "2026", "novembre", "jour-00"]
        for i in range(1, 40):  # beyond the folders kept: the oldest are closed
            opened.clear()
            folder, name = dirs.parent(os.fsencode(deep / f"jour-{i:02d}" / "ordonnance.pdf"))
            assert opened == [f"jour-{i:02d}"]
            os.close(real_open(name, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=folder))
        opened.clear()
        fd = dirs.open_dir(os.fsencode(deep / "jour-39"))
        os.close(fd)
        assert opened == ["jour-39"]
        opened.clear()
        dirs.parent(os.fsencode(deep / "jour-00" / "ordonnance.pdf"))  # closed meanwhile: opened again
        assert opened == ["jour-00"]
        assert open_inside() <= KEPT_PER_THREAD + 1  # the folders kept, and the target
    finally:
        dirs.close()
    assert open_inside() == 0
    assert all((deep / f"jour-{i:02d}" / "ordonnance.pdf").exists() for i in range(1, 40))
