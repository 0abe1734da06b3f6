"""A restore writes the bulk of large files around the page cache (core/directwrite.py): a
restored database does not fill the server's memory with pages it will not read, and each
byte still lands where it belongs, whatever the alignment, the holes, or a system that
refuses direct writes."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import tempfile
from pathlib import Path

import pytest

from coffre.core import directwrite
from coffre.core.directwrite import ALIGN, PIECE, DirectWrites

from conftest import Coffre

MiB = 1024 * 1024


def resident(path: Path) -> int:
    """Bytes of the file in the page cache (util-linux's fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_a_restored_database_stays_out_of_the_page_cache(repo: Coffre, tmp_path: Path) -> None:
    rnd = random.Random(3)
    src = tmp_path / "src"
    src.mkdir()
    # A database cut into aligned 256 KiB blocks (it ends off the alignment), and a large
    # scan cut by content, whose chunks start anywhere.
    db = src / "officine.db"
    db.write_bytes(b"SQLite format 3\x00" + rnd.randbytes(24 * MiB + 1234))
    scan = src / "scan.pdf"
    scan.write_bytes(rnd.randbytes(20 * MiB + 77))
    repo.ok("backup", str(src))
    target = tmp_path / "restored"
    repo.ok("restore", "latest", "--target", str(target))

    out = target / str(src).lstrip("/")
    for name in ("officine.db", "scan.pdf"):
        # Through the page cache, the whole file would be there (written, not yet read).
        assert resident(out / name) < (src / name).stat().st_size // 5, name
        assert (out / name).read_bytes() == (src / name).read_bytes()


def blobs_of(data: bytes, sizes: list[int]) -> list[bytes]:
    out, at = [], 0
    for n in sizes:
        out.append(data[at : at + n])
        at += n
    return out


@pytest.mark.parametrize("offset", [0, ALIGN, 1000, 3 * PIECE - 5])
def test_every_byte_lands_in_place_whatever_the_alignment(tmp_path: Path, offset: int) -> None:
    rnd = random.Random(offset)
    data = rnd.randbytes(PIECE * 2 + 300_000)
    blobs = blobs_of(data, [100_000, 1_500_000, 7, PIECE, len(data) - 1_600_007 - PIECE])
    path = tmp_path / "file"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    writes = DirectWrites()
    direct = writes.open(fd)
    assert direct is not None  # this machine's file systems take O_DIRECT: the path is tested
    try:
        os.ftruncate(fd, offset + len(data) + 5000)
        writes.write(fd, direct, blobs, offset)
    finally:
        os.close(direct)
        os.close(fd)
    got = path.read_bytes()
    assert got[offset : offset + len(data)] == data
    assert got[:offset] == bytes(offset) and got[offset + len(data) :] == bytes(5000)
    aligned_middle = (offset + len(data)) // ALIGN * ALIGN - -(-offset // ALIGN) * ALIGN
    assert writes.written == aligned_middle


def test_a_file_system_that_refuses_direct_writes_gets_ordinary_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = random.Random(1).randbytes(3 * PIECE + 123)
    path = tmp_path / "file"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    writes = DirectWrites()
    direct = writes.open(fd)
    assert direct is not None
    real_pwrite = os.pwrite
    calls = []

    def refusing(to: int, view: bytes, at: int) -> int:
        if to == direct:
            calls.append(at)
            if len(calls) > 1:  # the first piece goes through, the second is refused
                raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(to, view, at)

    monkeypatch.setattr(directwrite.os, "pwrite", refusing)
    try:
        writes.write(fd, direct, [data], 0)
        assert path.read_bytes() == data
        assert calls == [0, PIECE] and writes.written == PIECE
        assert not writes.enabled  # the restore stops asking
        assert writes.open(fd) is None
        writes.write(fd, direct, [data[::-1]], 0)
        assert path.read_bytes() == data[::-1]
        assert calls == [0, PIECE]
    finally:
        os.close(direct)
        os.close(fd)


def test_a_system_without_direct_writes_opens_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "file"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    real_open = os.open

    def refusing(name: str, flags: int, *args: int, **kwargs: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(directwrite.os, "open", refusing)
    try:
        writes = DirectWrites()
        assert writes.open(fd) is None and not writes.enabled
        writes.write(fd, None, [b"x" * MiB], 0)
        assert path.read_bytes() == b"x" * MiB and writes.written == 0
    finally:
        os.close(fd)


def test_files_on_a_file_system_without_a_disk_of_its_own_are_written_as_usual() -> None:
    """tmpfs here; network shares and FUSE mounts have no device number of their own either."""
    fd, name = tempfile.mkstemp(dir="/dev/shm")
    try:
        assert os.major(os.fstat(fd).st_dev) == 0
        writes = DirectWrites()
        assert writes.open(fd) is None
        assert writes.enabled  # the next file may be on a disk
    finally:
        os.close(fd)
        os.unlink(name)
