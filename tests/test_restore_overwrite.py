"""Restore into a folder that already holds files: --overwrite never (the default),
if-changed, always; replacements written beside and renamed; the progress of a restore."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from coffre.core.progress import Progress
from coffre.ops.inspect import iter_tree
from coffre.ops.restore import RestoreOptions, Restorer
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre

SKIPPED = "existing files left as they were (--overwrite if-changed or always replaces them)"


@pytest.fixture
def restored_once(repo: Coffre, tree: Path, restored: Path) -> Path:
    """The tree backed up and restored once: the base folder of the restored copy."""
    repo.ok("backup", str(tree))
    repo.ok("restore", "latest", "--target", str(restored))
    return restored / str(tree).lstrip("/")


def test_existing_files_are_left_as_they_were_by_default(
    repo: Coffre, tree: Path, restored: Path, restored_once: Path
) -> None:
    base = restored_once
    (base / "docs" / "lettre-1.txt").write_text("my own edits\n")
    (base / "docs" / "lettre-2.txt").unlink()
    total = sum(1 for _p in tree.rglob("*") if not _p.is_dir())

    res = repo.ok("restore", "latest", "--target", str(restored))

    assert (base / "docs" / "lettre-1.txt").read_text() == "my own edits\n"
    assert (base / "docs" / "lettre-2.txt").read_bytes() == (tree / "docs" / "lettre-2.txt").read_bytes()
    assert f"{total - 1} {SKIPPED}" in res.out, res
    assert "1 file," in res.out
    out = repo.ok("restore", "latest", "--target", str(restored), "--json").json()
    assert (out["files"], out["skipped"], out["replaced"], out["overwrite"]) == (0, total, 0, "never")


def test_never_leaves_symlinks_and_files_in_the_way_and_follows_none(
    repo: Coffre, tree: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("untouched\n")
    repo.ok("backup", str(tree))
    target = tmp_path / "target"
    base = target / str(tree).lstrip("/")
    (base / "docs").mkdir(parents=True)
    (base / "docs" / "lettre-0.txt").symlink_to(outside / "victim.txt")
    (base / "scans").symlink_to(outside)  # where the snapshot has a folder
    (base / "db").write_text("a file where a folder was\n")

    res = repo.ok("restore", "latest", "--target", str(target), "--json").json()

    assert (outside / "victim.txt").read_text() == "untouched\n"
    assert sorted(os.listdir(outside)) == ["victim.txt"]
    assert (base / "docs" / "lettre-0.txt").is_symlink() and (base / "scans").is_symlink()
    assert (base / "db").read_text() == "a file where a folder was\n"
    # lettre-0.txt, the 5 scans below the symlink, officine.db below the file
    assert res["skipped"] == 7, res
    assert (base / "docs" / "lettre-1.txt").read_bytes() == (tree / "docs" / "lettre-1.txt").read_bytes()


def test_if_changed_replaces_only_what_differs(
    repo: Coffre, tree: Path, restored: Path, restored_once: Path
) -> None:
    base = restored_once
    grown = base / "docs" / "lettre-3.txt"
    grown.write_text("longer than it was " * 50)
    same_size = base / "docs" / "lettre-4.txt"
    original = same_size.read_bytes()
    same_size.write_bytes(b"X" + original[1:])  # same size, new time: compared by content
    touched = base / "docs" / "lettre-5.txt"
    os.utime(touched, (1_000_000, 1_000_000))  # same content, another time: left
    inode = touched.stat().st_ino

    out = repo.ok("restore", "latest", "--target", str(restored), "--overwrite", "if-changed",
                  "--json").json()

    assert grown.read_bytes() == (tree / "docs" / "lettre-3.txt").read_bytes()
    assert same_size.read_bytes() == original
    assert touched.stat().st_ino == inode and touched.stat().st_mtime == 1_000_000
    assert (out["files"], out["replaced"]) == (2, 2), out
    total = sum(1 for _p in tree.rglob("*") if not _p.is_dir())
    assert out["unchanged"] == total - 2 and out["skipped"] == 0
    text = repo.ok("restore", "latest", "--target", str(restored), "--overwrite", "if-changed").out
    assert f"{total} files already as in the snapshot, left as they were" in text


def test_always_replaces_by_renaming_a_new_file_over_the_old(
    repo: Coffre, tree: Path, restored: Path, restored_once: Path, tmp_path: Path
) -> None:
    base = restored_once
    letter = base / "docs" / "lettre-6.txt"
    letter.write_text("changed")
    kept_open = letter.open("rb")  # the old file, as a reader still sees it
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    (base / "docs" / "lettre-7.txt").unlink()
    os.link(outside, base / "docs" / "lettre-7.txt")  # a hard link to a file elsewhere

    out = repo.ok("restore", "latest", "--target", str(restored), "--overwrite", "always", "--json").json()

    assert letter.read_bytes() == (tree / "docs" / "lettre-6.txt").read_bytes()
    assert kept_open.read() == b"changed"  # a new inode took the name: never written in place
    kept_open.close()
    assert outside.read_text() == "outside\n"
    assert (base / "docs" / "lettre-7.txt").read_bytes() == (tree / "docs" / "lettre-7.txt").read_bytes()
    total = sum(1 for _p in tree.rglob("*") if not _p.is_dir())
    assert (out["files"], out["replaced"], out["skipped"]) == (total, total, 0), out
    assert not [n for n in os.listdir(base / "docs") if n.startswith(".coffre-restore-")]


def test_a_folder_is_never_replaced_by_a_file(repo: Coffre, tree: Path, tmp_path: Path) -> None:
    repo.ok("backup", str(tree))
    target = tmp_path / "target"
    folder = target / str(tree).lstrip("/") / "docs" / "lettre-8.txt"
    folder.mkdir(parents=True)
    (folder / "inside").write_text("kept\n")

    res = repo("restore", "latest", "--target", str(target), "--overwrite", "always")

    assert res.code == 1, res
    assert f"{folder} exists as a folder; not replaced" in res.err
    assert (folder / "inside").read_text() == "kept\n"
    assert repo.ok("restore", "latest", "--target", str(target), "--json").json()["skipped"] > 0


def test_a_replacement_that_fails_leaves_the_old_file_whole(
    repo: Coffre, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ordonnance.pdf").write_bytes(os.urandom(200_000))
    repo.ok("backup", str(src))
    target = tmp_path / "target"
    old = target / str(src).lstrip("/") / "ordonnance.pdf"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"the pharmacist's copy")
    stored = Repository.open(LocalBackend(repo.repo), PASSWORD)
    stored.load_index()
    node = next(n for p, n in iter_tree(stored, stored.snapshots()[0].tree) if p.endswith("/ordonnance.pdf"))
    loc = stored.index.lookup(node.content[0])
    assert loc is not None
    pack = next((Path(repo.repo) / "data").glob(f"*/{loc.pack.hex()}"))
    data = bytearray(pack.read_bytes())
    data[loc.entry.offset + loc.entry.length // 2] ^= 0x40
    pack.write_bytes(bytes(data))

    res = repo("restore", "latest", "--target", str(target), "--overwrite", "always", "--json")

    assert res.code == 1, res
    assert old.read_bytes() == b"the pharmacist's copy"
    assert os.listdir(old.parent) == ["ordonnance.pdf"]


def test_symlinks_and_fifos_in_the_way(repo: Coffre, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "link").symlink_to("target-a")
    os.mkfifo(src / "fifo")
    repo.ok("backup", str(src))
    target = tmp_path / "target"
    base = target / str(src).lstrip("/")
    base.mkdir(parents=True)
    (base / "link").symlink_to("elsewhere")
    os.mkfifo(base / "fifo")

    never = repo.ok("restore", "latest", "--target", str(target), "--json").json()
    assert os.readlink(base / "link") == "elsewhere" and never["skipped"] == 2
    changed = repo.ok("restore", "latest", "--target", str(target), "--overwrite", "if-changed",
                      "--json").json()
    assert os.readlink(base / "link") == "target-a"
    assert stat.S_ISFIFO(os.lstat(base / "fifo").st_mode)
    assert (changed["replaced"], changed["unchanged"]) == (1, 1), changed


def test_progress_counts_every_file_and_byte(repo: Coffre, tree: Path, tmp_path: Path) -> None:
    repo.ok("backup", str(tree))
    stored = Repository.open(LocalBackend(repo.repo), PASSWORD)
    stored.load_index()
    snap = stored.snapshots()[0]
    files = [p for p in tree.rglob("*") if p.is_file()]
    progress = Progress()

    restorer = Restorer(stored, RestoreOptions(target=str(tmp_path / "r")), progress=progress)
    restorer.run(snap)

    status = progress.status()
    assert status.phase == "restore" and status.total_known
    assert status.files_total == status.files_done == len(files)
    assert status.bytes_total == status.bytes_done == sum(p.stat().st_size for p in files)
    assert status.current is not None and status.current.startswith(str(tmp_path / "r"))
    again = Progress()
    Restorer(stored, RestoreOptions(target=str(tmp_path / "r")), progress=again).run(snap)
    assert again.status().files_done == len(files)  # files left as they were count as done


def test_hard_links_left_as_they_were(repo: Coffre, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "hard-1").write_text("linked\n")
    os.link(src / "hard-1", src / "hard-2")
    repo.ok("backup", str(src))
    target = tmp_path / "target"
    base = target / str(src).lstrip("/")
    repo.ok("restore", "latest", "--target", str(target))

    again = repo.ok("restore", "latest", "--target", str(target), "--json").json()
    assert (again["skipped"], again["errors"]) == (2, []), again

    (base / "hard-2").unlink()
    (base / "hard-1").unlink()
    (base / "hard-1").write_text("the pharmacist's own\n")
    res = repo("restore", "latest", "--target", str(target))
    assert res.code == 1, res
    assert "hard link to" in res.err and "left as it was" in res.err
    assert not (base / "hard-2").exists()  # never a link to content that is not the snapshot's
    repo.ok("restore", "latest", "--target", str(target), "--overwrite", "if-changed")
    assert (base / "hard-1").read_text() == (base / "hard-2").read_text() == "linked\n"
    assert (base / "hard-1").stat().st_ino == (base / "hard-2").stat().st_ino


def test_progress_of_a_file_written_by_ranges(repo: Coffre, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    # More than 8 blobs (at most 1 MiB each, whatever the key): written by ranges.
    (src / "base.db").write_bytes(os.urandom(9 * 1024 * 1024))
    (src / "note.txt").write_text("note\n")
    repo.ok("backup", str(src))
    stored = Repository.open(LocalBackend(repo.repo), PASSWORD)
    stored.load_index()
    snap = stored.snapshots()[0]
    node = next(n for p, n in iter_tree(stored, snap.tree) if p.endswith("/base.db"))
    assert len(node.content) > 8
    progress = Progress()

    Restorer(stored, RestoreOptions(target=str(tmp_path / "r")), progress=progress).run(snap)

    status = progress.status()
    assert (status.files_done, status.files_total) == (2, 2)
    assert status.bytes_done == status.bytes_total == 9 * 1024 * 1024 + 5
