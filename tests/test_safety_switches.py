"""Tests that notice: each protects one safety mechanism and fails when it is switched off
(issue 19). Verify after encrypt in the packer and for whole objects; a drill whose restored
rows differ from the recorded counts; the files cache noticing a change in ctime alone or
in size alone; an object saved under another object's name."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import pytest

from coffre import compress as compress_module
from coffre.core.errors import IntegrityError
from coffre.crypto import aead
from coffre.ops.backup import Backup, BackupOptions
from coffre.repository import packer as packer_module
from coffre.repository.locks import Lock
from coffre.repository.packer import Packer
from coffre.repository.repo import Repository
from coffre.sources.databases.base import Captured, Database
from coffre.sources.databases.engines import source
from coffre.storage.local import LocalBackend
from coffre.storage.memory import MemoryBackend

from conftest import PASSWORD, Coffre, age_tree, snapshot_ids

T = TypeVar("T")


# ------------------------------------------------------------- verify after encrypt


def stored_packs(backend: MemoryBackend) -> list[str]:
    return [i.name for i in backend.list("data")]


def test_a_compression_fault_is_caught_before_the_pack_is_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    """A codec that returns a valid but wrong stream (a bug, a memory fault): the blob decrypts
    and decompresses fine, only the comparison with the original bytes sees it."""
    backend = MemoryBackend()
    repo, _ = Repository.init(backend, "pw")
    real = compress_module.compress

    def faulty(data: bytes, level: int = 1) -> tuple[int, bytes]:
        wrong = bytearray(data)
        wrong[len(wrong) // 2] ^= 0x01
        return real(bytes(wrong), level)

    monkeypatch.setattr(packer_module, "compress", faulty)
    packer = Packer(repo)
    data = b"ordonnance " * 10_000
    with pytest.raises(IntegrityError, match="self-check after compression failed"):
        packer.add(aead.KIND_DATA, repo.crypter.blob_id(data), data)
    packer.flush()
    assert stored_packs(backend) == []


def test_a_delta_fault_is_caught_before_the_pack_is_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = MemoryBackend()
    repo, _ = Repository.init(backend, "pw")
    base = os.urandom(200_000)
    data = base[:100_000] + b"nouvelle vente" + base[100_014:]
    real = compress_module.compress_delta

    def faulty(new: bytes, old: bytes, level: int = 3) -> bytes:
        return real(new[:-1] + bytes([new[-1] ^ 1]), old, level)

    monkeypatch.setattr(packer_module, "compress_delta", faulty)
    packer = Packer(repo)
    with pytest.raises(IntegrityError, match="self-check after compression failed"):
        packer.add(aead.KIND_DATA, repo.crypter.blob_id(data), data, base=(repo.crypter.blob_id(base), base))
    packer.flush()
    assert stored_packs(backend) == []


@pytest.mark.parametrize("version", [1, 2])
def test_a_blob_encrypted_wrong_is_never_packed(monkeypatch: pytest.MonkeyPatch, version: int) -> None:
    """A bit flipped in memory between padding and encryption: the blob decrypts, but not to
    what was meant; the packer compares and refuses."""
    backend = MemoryBackend()
    repo, _ = Repository.init(backend, "pw", version=version)
    real = repo.crypter.encrypt_blob

    def faulty(salt: bytes | None, kind: int, plain: bytes | memoryview, blob_id: bytes) -> bytes:
        wrong = bytearray(plain)
        wrong[len(wrong) // 2] ^= 0x01
        return real(salt, kind, bytes(wrong), blob_id)

    monkeypatch.setattr(repo.crypter, "encrypt_blob", faulty)
    packer = Packer(repo)
    data = os.urandom(50_000)
    with pytest.raises(IntegrityError, match="self-check after encryption failed"):
        packer.add(aead.KIND_DATA, repo.crypter.blob_id(data), data)
    packer.flush()
    assert stored_packs(backend) == []


def test_a_whole_object_encrypted_wrong_is_never_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = MemoryBackend()
    repo, _ = Repository.init(backend, "pw")
    real = repo.crypter.encrypt

    def faulty(kind: int, plaintext: bytes | memoryview, object_id: bytes = b"") -> bytes:
        wrong = bytearray(plaintext)
        wrong[-1] ^= 0x01  # a flipped bit in memory before encryption
        return real(kind, bytes(wrong), object_id)

    monkeypatch.setattr(repo.crypter, "encrypt", faulty)
    with pytest.raises(IntegrityError, match="encryption self-check failed"):
        repo.save_object("index", b"\x81\xa1v\x01" + b"x" * 100)
    assert list(backend.list("index")) == []


# ------------------------------------------------------------ the files cache


def test_the_files_cache_notices_a_change_of_ctime_alone_or_of_size_alone(
        repo: Coffre, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    same_size = src / "ordonnance.txt"
    same_size.write_bytes(b"A" * 5000)
    grown = src / "stock.csv"
    grown.write_bytes(b"B" * 5000)
    age_tree(src)
    repo.ok("backup", str(src))
    summary = repo.ok("backup", str(src), "--json").json()["summary"]
    assert summary["files_unmodified"] == 2  # the cache knows them
    # Rewritten in place with the same size, its old mtime put back: only ctime differs.
    st = same_size.stat()
    same_size.write_bytes(b"C" * 5000)
    os.utime(same_size, ns=(st.st_atime_ns, st.st_mtime_ns))
    # Grown, with its mtime kept (a program that puts it back): the size differs (and the
    # ctime, which a real file system always changes with it: see the test below).
    st = grown.stat()
    with open(grown, "ab") as f:
        f.write(b"D" * 10)
    os.utime(grown, ns=(st.st_atime_ns, st.st_mtime_ns))
    summary = repo.ok("backup", str(src), "--json").json()["summary"]
    assert summary["files_changed"] == 2 and summary["files_unmodified"] == 0, summary
    assert repo.ok("dump", "latest", str(same_size)).outb == b"C" * 5000
    assert repo.ok("dump", "latest", str(grown)).outb == b"B" * 5000 + b"D" * 10


def test_the_files_cache_judges_size_and_ctime_each_on_its_own() -> None:
    """The two witnesses one at a time (a change of size with ctime equal cannot be made on a
    real file system, so the judgement is checked directly)."""
    from coffre.repository.cache import _judge, _key

    st = os.stat(__file__)
    row = (_key(st), b"\x00" * 32)
    assert _judge(row, st) == (True, [b"\x00" * 32])
    for field, delta in (("st_size", 1), ("st_ctime_ns", 1), ("st_mtime_ns", 1), ("st_ino", 1)):
        changed = FakeStat(st, **{field: getattr(st, field) + delta})
        assert _judge(row, changed) == (True, None), field  # type: ignore[arg-type]


class FakeStat:
    def __init__(self, st: os.stat_result, **changes: int) -> None:
        for name in ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns"):
            setattr(self, name, changes.get(name, getattr(st, name)))


# --------------------------------------------------- an object under another's name


def test_an_object_saved_under_another_objects_name_is_refused(repo: Coffre, tree: Path) -> None:
    """Whole objects carry no id in their associated data: only the check that their bytes
    hash to their name stops snapshot A's bytes served as snapshot B."""
    repo.ok("backup", str(tree))
    (first,) = snapshot_ids(repo)
    impostor = "0" * 8 + first[8:]  # a well-formed name that is not its content's hash
    shutil.copy(repo.repo / "snapshots" / first, repo.repo / "snapshots" / impostor)
    res = repo.ok("snapshots", "--json")
    assert [s["id"] for s in json.loads(res.out)] == [first]
    assert f"snapshot {impostor[:12]}: " in res.err and "does not match its name" in res.err
    res = repo("check")
    assert res.code == 1 and "does not match its name" in res.out, res


# --------------------------------------------------------- a drill that must fail


class Miscounted(Database):
    """A real SQLite source whose recorded row count for one table is off by one, as if the
    backup had lost a row: the drill must see the restored count differ."""

    def __init__(self, inner: Database) -> None:
        self.inner = inner
        self.engine, self.name, self.suffix = inner.engine, inner.name, inner.suffix
        self.fixed = inner.fixed

    def describe(self) -> str:
        return self.inner.describe()

    def dump(self, consume: Callable[[BinaryIO], T]) -> tuple[T, Captured]:
        result, captured = self.inner.dump(consume)
        tables = dict(captured.tables)
        tables["ventes"] += 1
        return result, dataclasses.replace(captured, tables=tables)


def test_a_drill_whose_restored_rows_differ_from_the_backup_fails(repo: Coffre, tmp_path: Path) -> None:
    db = tmp_path / "officine.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE ventes (id INTEGER PRIMARY KEY, produit TEXT)")
        conn.executemany("INSERT INTO ventes (produit) VALUES (?)", [(f"p{i}",) for i in range(500)])
    repo.ok("backup", "--sqlite", str(db))  # a good one first: the drill passes
    assert "PASS" in repo.ok("drill").out
    r = Repository.open(LocalBackend(repo.repo), PASSWORD)
    with Lock(r, exclusive=False, command="backup") as lock:
        r.load_index()
        opts = BackupOptions(databases=[Miscounted(source("sqlite", str(db)))])
        Backup(r, lock, opts).run()
    res = repo("drill", "--json")
    assert res.code == 1, res
    report: Any = res.json()
    text = json.dumps(report)
    assert "501 rows at backup time, 500 rows restored" in text, text
    res = repo("drill")
    assert res.code == 1 and "FAIL" in res.out, res
