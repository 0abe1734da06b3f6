"""How a backup reads a small file: in one system call when it gives the size the file was
found with, in two when that size says nothing (a /proc file, 0 bytes by its size) or the file
grew meanwhile; through a descriptor opened with O_NONBLOCK (against a fifo put in a file's
place), which a filesystem honouring it for regular files would answer with EAGAIN: read again,
blocking, never taken for the end of the file (ops/backup.py `_read_file_bytes`)."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from coffre.ops.backup import Backup, BackupOptions
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend

from conftest import PASSWORD, Coffre, age_tree


def small_files(src: Path) -> dict[str, bytes]:
    rnd = random.Random(5)
    files = {"empty": b"", "one": b"x", **{f"f{n}": rnd.randbytes(n) for n in (100, 4096, 40_000)}}
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    age_tree(src)
    return files


def test_a_file_whose_size_says_nothing_is_read_to_its_end(repo: Coffre, tmp_path: Path,
                                                           restored: Path) -> None:
    proc_file = Path("/proc/version")
    assert proc_file.stat().st_size == 0 and proc_file.read_bytes()  # what makes it a case
    files = small_files(tmp_path / "src")
    repo.ok("backup", str(proc_file), str(tmp_path / "src"))
    repo.ok("restore", "latest", "--target", str(restored))
    assert (restored / "proc/version").read_bytes() == proc_file.read_bytes()
    for name, data in files.items():
        assert (restored / str(tmp_path / "src" / name).lstrip("/")).read_bytes() == data


def test_a_read_refused_for_want_of_blocking_is_made_again_blocking(
        repo: Coffre, tmp_path: Path, restored: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = small_files(tmp_path / "src")
    real_read, refused = os.read, set()

    def read(fd: int, size: int) -> bytes:
        if not os.get_blocking(fd) and os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) in files:
            refused.add(fd)
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        return real_read(fd, size)

    opened = Repository.open(LocalBackend(repo.repo), PASSWORD)
    with Lock(opened, exclusive=False, command="backup") as lock:
        opened.load_index()
        monkeypatch.setattr(os, "read", read)
        result = Backup(opened, lock, BackupOptions(paths=[str(tmp_path / "src")], host="h")).run()
        monkeypatch.undo()
    assert len(refused) == len(files) and not result.problems.errors, result.problems.errors
    repo.ok("restore", "latest", "--target", str(restored))
    for name, data in files.items():
        assert (restored / str(tmp_path / "src" / name).lstrip("/")).read_bytes() == data
