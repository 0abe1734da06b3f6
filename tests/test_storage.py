"""The backend contract, run over every backend (memory and local disk for now)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coffre.core.errors import ObjectExists, ObjectNotFound, StorageError
from coffre.storage.base import Backend, Handle
from coffre.storage.local import LocalBackend
from coffre.storage.memory import MemoryBackend


@pytest.fixture(params=["memory", "local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b: Backend = MemoryBackend() if request.param == "memory" else LocalBackend(tmp_path / "r")
    b.create()
    b.save(Handle("config", "config"), b"{}")
    yield b
    b.close()


def test_save_load_ranges_and_stat(backend: Backend) -> None:
    h = Handle("data", "ab" + "0" * 62)
    backend.save(h, b"0123456789")
    assert backend.load(h) == b"0123456789"
    assert backend.load(h, 2, 3) == b"234"
    assert backend.load(h, 8) == b"89"
    assert backend.stat(h).size == 10


def test_objects_are_never_overwritten(backend: Backend) -> None:
    h = Handle("snapshots", "a" * 64)
    backend.save(h, b"first")
    backend.save(h, b"first")  # same bytes: idempotent success
    with pytest.raises(ObjectExists):
        backend.save(h, b"other")
    assert backend.load(h) == b"first"


def test_missing_objects(backend: Backend) -> None:
    h = Handle("index", "f" * 64)
    with pytest.raises(ObjectNotFound):
        backend.load(h)
    with pytest.raises(ObjectNotFound):
        backend.stat(h)
    with pytest.raises(ObjectNotFound):
        backend.remove(h)


def test_listing_thousands_and_removal(backend: Backend) -> None:
    names = {f"{i:064x}" for i in range(2500)}
    for n in names:
        backend.save(Handle("data", n), n.encode())
    assert {i.name for i in backend.list("data")} == names
    assert {i.size for i in backend.list("data")} == {64}
    backend.remove(Handle("data", f"{7:064x}"))
    assert len(list(backend.list("data"))) == 2499
    assert list(backend.list("locks")) == []


def test_handle_names_are_validated() -> None:
    for bad in ("", "../x", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            Handle("data", bad)
    with pytest.raises(ValueError):
        Handle("nope", "abc")


def test_local_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "r")
    b.create()
    b.save(Handle("index", "1" * 64), b"x" * 1000)
    assert [p.name for p in (tmp_path / "r" / "index").iterdir()] == ["1" * 64]


def test_local_os_errors_are_translated(tmp_path: Path) -> None:
    b = LocalBackend(tmp_path / "r")
    b.create()
    (tmp_path / "r" / "index").rmdir()
    (tmp_path / "r" / "index").write_text("a file where a folder should be")
    with pytest.raises(StorageError) as info:
        b.save(Handle("index", "2" * 64), b"x")
    assert isinstance(info.value.__cause__, OSError)
    assert "writing index/" in info.value.message
