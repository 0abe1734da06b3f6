"""Retries on flaky links: transient failures are retried with growing pauses (injected, no
sleeping), permanent ones are not, a listing is never partial, and a removal whose answer was
lost is not an error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coffre.core.errors import ObjectNotFound, StoragePermissionDenied, TransientStorageError
from coffre.storage.base import Handle, ObjectInfo
from coffre.storage.memory import MemoryBackend
from coffre.storage.retry import RetryBackend

H = Handle("data", "ab" + "0" * 62)


class Flaky(MemoryBackend):
    """Fails the next `failures` calls of the named operations, then works."""

    def __init__(self, failures: int, ops: tuple[str, ...], after: bool = False) -> None:
        super().__init__()
        self.failures = failures
        self.ops = ops
        self.after = after  # fail after doing the work (the answer is lost)
        self.calls = 0

    def _maybe_fail(self, op: str) -> None:
        if op in self.ops and self.failures > 0:
            self.failures -= 1
            raise TransientStorageError(f"{op}: connection reset")

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        self.calls += 1
        if self.after:
            super().save(handle, data)
        self._maybe_fail("save")
        super().save(handle, data)

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        self.calls += 1
        self._maybe_fail("load")
        return super().load(handle, offset, length)

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        items = list(super().list(kind))
        yield items[0]
        self._maybe_fail("list")  # fails mid-listing, after yielding a first object
        yield from items[1:]

    def remove(self, handle: Handle) -> None:
        if self.after:
            super().remove(handle)
        self._maybe_fail("remove")
        super().remove(handle)


def retrying(inner: MemoryBackend, attempts: int = 5) -> tuple[RetryBackend, list[float], list[str]]:
    pauses: list[float] = []
    warnings: list[str] = []
    return RetryBackend(inner, attempts=attempts, sleep=pauses.append, warn=warnings.append), pauses, warnings


def test_transient_failures_are_retried_with_growing_pauses() -> None:
    inner = Flaky(3, ("save", "load"))
    b, pauses, warnings = retrying(inner)
    b.save(H, b"data")
    assert b.load(H) == b"data"
    assert len(pauses) == 3 and pauses[0] < pauses[2] and all(p > 0 for p in pauses)
    assert "connection reset" in warnings[0] and "trying again" in warnings[0]


def test_save_retried_after_a_lost_answer_succeeds_without_duplicate() -> None:
    inner = Flaky(1, ("save",), after=True)
    b, pauses, _ = retrying(inner)
    b.save(H, b"data")  # stored, answer lost, retried: same bytes are a success
    assert len(pauses) == 1 and inner.load(H) == b"data"


def test_remove_retried_after_a_lost_answer_is_not_an_error() -> None:
    inner = Flaky(1, ("remove",), after=True)
    inner.failures = 0
    inner.save(H, b"data")
    inner.failures = 1
    b, pauses, _ = retrying(inner)
    b.remove(H)
    assert len(pauses) == 1
    with pytest.raises(ObjectNotFound):
        b.remove(H)  # a real "not found" on the first attempt is still reported


def test_a_listing_is_never_partial() -> None:
    inner = Flaky(0, ("list",))
    for i in range(5):
        inner.save(Handle("data", f"{i:064x}"), b"x")
    inner.failures = 1
    b, pauses, _ = retrying(inner)
    assert len(list(b.list("data"))) == 5
    assert len(pauses) == 1
    inner.failures = 10
    b2, _, _ = retrying(inner, attempts=3)
    with pytest.raises(TransientStorageError):
        list(b2.list("data"))  # nothing yielded before the error: prune cannot see a short list


def test_permanent_failures_are_not_retried() -> None:
    class Denied(MemoryBackend):
        def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
            raise StoragePermissionDenied("reading: access denied")

    b, pauses, _ = retrying(Denied())
    with pytest.raises(StoragePermissionDenied):
        b.load(H)
    with pytest.raises(ObjectNotFound):
        b.stat(H)
    assert pauses == []


def test_giving_up_says_so() -> None:
    b, pauses, _ = retrying(Flaky(100, ("load",)), attempts=4)
    with pytest.raises(TransientStorageError) as info:
        b.load(H)
    assert "gave up after 4 attempts" in info.value.message
    assert info.value.hint and "network" in info.value.hint
    assert len(pauses) == 3
    assert max(pauses) <= 60


# -- a listing error never lets prune delete data ---------------------------------------------
class DataListing(MemoryBackend):
    """Fails, or lies with an empty answer, when the packs are listed."""

    def __init__(self, inner_objects: MemoryBackend, mode: str) -> None:
        super().__init__()
        self._objects = inner_objects._objects
        self.mode = mode

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        if kind == "data" and self.mode == "fail":
            raise TransientStorageError("listing data: connection reset")
        if kind == "data" and self.mode == "empty":
            return iter([])
        return super().list(kind)


@pytest.mark.parametrize("mode", ["fail", "empty"])
def test_a_listing_error_never_lets_prune_delete(mode: str, tmp_path: Path) -> None:
    from coffre.core.errors import CoffreError
    from coffre.ops.backup import Backup, BackupOptions
    from coffre.ops.prune import Pruner
    from coffre.repository.locks import Lock
    from coffre.repository.repo import Repository

    from conftest import make_tree

    store = MemoryBackend()
    repo, _ = Repository.init(store, "pw")
    src = make_tree(tmp_path / "src", big=300_000)
    for host in ("a", "b"):
        with Lock(repo, exclusive=False, command="backup") as lock:
            repo.load_index()
            Backup(repo, lock, BackupOptions(paths=[str(src)], host=host, force_read=True)).run()
    snaps = repo.snapshots()
    repo.backend.remove(Handle("snapshots", snaps[0].id))  # something for prune to do
    before = {k: v[0] for k, v in store._objects.items() if k[0] == "data"}
    flaky = RetryBackend(DataListing(store, mode), attempts=3, sleep=lambda _: None)
    pruning = Repository.open(flaky, "pw")
    with Lock(pruning, exclusive=True, command="prune") as lock, pytest.raises(CoffreError) as info:
        Pruner(pruning, lock).run()
    expected = "gave up" if mode == "fail" else "missing from storage"
    assert expected in info.value.message
    assert {k: v[0] for k, v in store._objects.items() if k[0] == "data"} == before
