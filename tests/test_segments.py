"""Segments in the repository and the spool: stored encrypted, listed from their headers,
read back checked; the spool keeps pieces durably within its bound."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from coffre.continuity.spool import Spool
from coffre.core.errors import IntegrityError
from coffre.format.segment import SegmentHeader
from coffre.repository import segments
from coffre.repository.repo import Repository
from coffre.storage.base import Handle
from coffre.storage.local import LocalBackend

PASSWORD = "segments-test-password"


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repository:
    monkeypatch.setenv("COFFRE_TEST_WEAK_KDF", "1")
    Repository.init(LocalBackend(str(tmp_path / "repo")), PASSWORD)
    return Repository.open(LocalBackend(str(tmp_path / "repo")), PASSWORD)


def header(name: str, start: int, stream: str = "postgres:1") -> SegmentHeader:
    return SegmentHeader(stream=stream, engine="postgres", kind="log", name=name, start=start,
                         end=start + 100, time_ns=start, size=0, sha256="0" * 64)


def test_stored_listed_and_read_back(repository: Repository) -> None:
    pieces = {f"seg{i}": os.urandom(50) + bytes(5000) for i in range(3)}
    for i, (name, data) in enumerate(reversed(pieces.items())):
        segments.save(repository, header(name, 1000 - i * 100), data)
    listed = segments.listing(repository)
    assert [s.header.name for s in listed] == ["seg0", "seg1", "seg2"]  # by position
    for s in listed:
        assert segments.load(repository, s) == pieces[s.header.name]
        assert s.header.sha256 == hashlib.sha256(pieces[s.header.name]).hexdigest()
    stored = Path(repository.backend.location) / "segments"
    raw = b"".join(p.read_bytes() for p in stored.iterdir())
    assert pieces["seg0"][:50] not in raw  # encrypted


def test_damage_and_swaps_are_refused(repository: Repository) -> None:
    a = segments.save(repository, header("a", 0), b"A" * 1000)
    b = segments.save(repository, header("b", 100), b"B" * 1000)
    folder = Path(repository.backend.location) / "segments"
    data_a = (folder / a.object).read_bytes()
    data_b = (folder / b.object).read_bytes()
    # b's payload under a's header: same object name scheme, but the binding refuses it.
    from coffre.format import segment as fmt

    head_a, _ = fmt.split(data_a)
    _, body_b = fmt.split(data_b)
    forged = fmt.join(bytes(head_a), bytes(body_b))
    name = hashlib.sha256(forged).hexdigest()
    repository.backend.save(Handle("segments", name), forged)
    with pytest.raises(IntegrityError):
        segments.load(repository, segments.StoredSegment(name, a.header))
    flipped = bytearray(data_a)
    flipped[-1] ^= 1
    (folder / a.object).chmod(0o600)
    (folder / a.object).write_bytes(bytes(flipped))
    with pytest.raises(IntegrityError):
        segments.load(repository, a)
    errors: list[str] = []
    (folder / b.object).write_bytes(b"\0\0\0\5junk")
    listed = segments.listing(repository, errors=errors)
    assert b.object not in {s.object for s in listed} and errors


def test_spool_bound_and_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", limit=10_000)
    data = os.urandom(4000)
    h = header("x", 0)
    h.sha256 = hashlib.sha256(data).hexdigest()
    h.size = len(data)
    assert spool.put(h, data) and spool.put(header("y", 100), data)
    assert not spool.put(header("z", 200), data)  # would pass the bound: not kept
    assert spool.put(header("z", 200).as_gap("spool full"), b"", force=True)
    names = [spool.read(p)[0].name for p in spool.pending()]
    assert names == ["x", "y", "z"]
    got, payload = spool.read(spool.pending()[0])
    assert got == h and payload == data


def test_copy_carries_log_pieces_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`coffre copy` sends the captured log pieces the destination lacks (a standby or a
    point-in-time restore works from the off-site copy), each once."""
    import subprocess
    import sys

    monkeypatch.setenv("COFFRE_TEST_WEAK_KDF", "1")
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    env = {**os.environ, "COFFRE_CACHE_DIR": str(tmp_path / "cache"),
           "COFFRE_STATE_DIR": str(tmp_path / "st"), "COFFRE_FROM_PASSWORD_FILE": str(pw)}

    def coffre(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "coffre", *args], env=env, capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    for name in ("a", "b"):
        coffre("init", "--repo", str(tmp_path / name), "--password-file", str(pw))
    src = Repository.open(LocalBackend(str(tmp_path / "a")), PASSWORD)
    data = os.urandom(3000)
    segments.save(src, header("000000010000000000000001", 0), data)
    copy = ["copy", "--from", str(tmp_path / "a"), "--to", str(tmp_path / "b"), "--password-file", str(pw)]
    assert "1 captured log piece copied" in coffre(*copy)
    assert "log piece" not in coffre(*copy)  # already there
    dst = Repository.open(LocalBackend(str(tmp_path / "b")), PASSWORD)
    [copied] = segments.listing(dst)
    assert copied.header.name == "000000010000000000000001" and segments.load(dst, copied) == data


def test_check_finds_a_damaged_log_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`coffre check` authenticates every piece's header; --read-data reads each whole."""
    import subprocess
    import sys

    monkeypatch.setenv("COFFRE_TEST_WEAK_KDF", "1")
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    env = {**os.environ, "COFFRE_CACHE_DIR": str(tmp_path / "cache"),
           "COFFRE_STATE_DIR": str(tmp_path / "st")}
    repo_dir = tmp_path / "r"
    base = [sys.executable, "-m", "coffre"]
    subprocess.run([*base, "init", "--repo", str(repo_dir), "--password-file", str(pw)], env=env, check=True,
                   capture_output=True)
    repo = Repository.open(LocalBackend(str(repo_dir)), PASSWORD)
    stored = segments.save(repo, header("000000010000000000000001", 0), os.urandom(5000))
    check = [*base, "check", "--repo", str(repo_dir), "--password-file", str(pw)]
    assert subprocess.run([*check, "--read-data"], env=env, capture_output=True, check=False).returncode == 0
    path = repo_dir / "segments" / stored.object
    data = bytearray(path.read_bytes())
    data[-20] ^= 1  # in the payload: the header still reads
    path.chmod(0o600)
    path.write_bytes(bytes(data))
    res = subprocess.run([*check, "--read-data"], env=env, capture_output=True, text=True, check=False)
    assert res.returncode != 0 and "000000010000000000000001" in res.stdout + res.stderr, res
