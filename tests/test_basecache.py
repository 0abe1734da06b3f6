"""Delta bases kept locally for remote repositories: tomorrow's backup makes its deltas without
downloading yesterday's database, a damaged or planted entry is never used, and old entries
expire."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coffre.core.clock import FixedClock
from coffre.crypto.aead import Crypter, SubKeys
from coffre.ops.backup import Backup, BackupOptions
from coffre.ops.restore import RestoreOptions, Restorer
from coffre.repository.basecache import DAY_NS, EXPIRE_DAYS, BaseCache
from coffre.repository.locks import Lock
from coffre.repository.repo import Repository
from coffre.storage.local import LocalBackend
from test_delta import make_db, one_day

from conftest import tree_digest

NOW = 1_800_000_000 * 10**9


def crypter(seed: bytes = b"k") -> Crypter:
    return Crypter(SubKeys.derive(seed * 32), b"r" * 16)


def test_entries_round_trip_and_damage_is_never_used(tmp_path: Path) -> None:
    c = crypter()
    cache = BaseCache(tmp_path, c, FixedClock(NOW))
    data = b"page de la base " * 16_000
    blob_id = c.blob_id(data)
    cache.put(blob_id, data)
    assert cache.get(blob_id, len(data)) == data
    entry = next(tmp_path.glob("??/*"))
    raw = bytearray(entry.read_bytes())
    raw[40] ^= 1
    entry.write_bytes(bytes(raw))
    assert cache.get(blob_id, len(data)) is None and not entry.exists()
    # An entry made with another key, or for another id, is refused the same way.
    other = b"autre contenu " * 1000
    BaseCache(tmp_path, crypter(b"z"), FixedClock(NOW)).put(c.blob_id(other), other)
    assert cache.get(c.blob_id(other), len(other)) is None


def test_unused_entries_expire(tmp_path: Path) -> None:
    clock = FixedClock(NOW)
    c = crypter()
    cache = BaseCache(tmp_path, c, clock)
    old, fresh = b"ancienne page " * 100, b"page du jour " * 100
    cache.put(c.blob_id(old), old)
    clock.advance((EXPIRE_DAYS - 1) * DAY_NS / 1e9)
    cache.put(c.blob_id(fresh), fresh)
    clock.advance(2 * DAY_NS / 1e9)
    assert cache.expire() == 1
    assert cache.get(c.blob_id(old), len(old)) is None
    assert cache.get(c.blob_id(fresh), len(fresh)) == fresh


class RemoteDisk(LocalBackend):
    """A local repository that says it is remote."""

    remote = True


def backup(backend: RemoteDisk, src: Path, bases: BaseCache | None) -> tuple[dict[str, int], int]:
    """The snapshot's summary, and how many bases were read from the repository."""
    repo = Repository.open(backend, "pw")
    downloads = 0
    load_base = repo.load_base

    def counting(base_id: bytes, verify: bool = True) -> bytes:
        nonlocal downloads
        downloads += 1
        return load_base(base_id, verify)

    repo.load_base = counting  # type: ignore[method-assign]
    with Lock(repo, exclusive=False, command="backup") as lock:
        repo.load_index()
        snap = Backup(repo, lock, BackupOptions(paths=[str(src)], host="h"), bases=bases).run().snapshot
    return snap.summary, downloads


@pytest.mark.parametrize("kept", [True, False])
def test_a_days_deltas_need_no_download_of_yesterday(kept: bool, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_db(src / "officine.db")
    rnd = os.urandom(16).hex()
    (src / "dump.sql").write_bytes(
        b"\n".join(f"{i}\tproduit {rnd}\t{i % 500}".encode() for i in range(40_000)))
    (src / "app.log").write_bytes(b"08:00 ouverture\n" * 2000)
    backend = RemoteDisk(tmp_path / "repo")
    repo, _ = Repository.init(backend, "pw")
    cache_dir = tmp_path / "bases"
    backup(backend, src, BaseCache(cache_dir, repo.crypter))
    one_day(src)
    bases = BaseCache(cache_dir if kept else tmp_path / "empty", repo.crypter)
    summary, downloads = backup(backend, src, bases)
    assert summary["deltas_added"] > 0
    if kept:
        # The database and the dump (a dump by its name, however small) were kept from the
        # first backup; the log's last chunk, appended to for the first time, is stored whole
        # rather than downloading its base: nothing of yesterday is downloaded.
        assert downloads == 0
        one_day(src, seed=2)
        summary, downloads = backup(backend, src, BaseCache(cache_dir, repo.crypter))
        assert summary["deltas_added"] > 0 and downloads == 0
    else:
        assert downloads >= summary["deltas_added"]  # without it, yesterday's chunks are downloaded
    restored = tmp_path / "restored"
    fresh = Repository.open(backend, "pw")
    fresh.load_index()
    snap = fresh.snapshots()[-1]
    assert not Restorer(fresh, RestoreOptions(target=str(restored))).run(snap).errors
    assert tree_digest(restored / str(src).lstrip("/")) == tree_digest(src)
