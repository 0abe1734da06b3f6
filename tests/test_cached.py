"""The local copy of remote metadata: a second read does not go to the storage, a damaged or
lost copy is fetched again, copies of pruned objects go away, and the data itself is never
cached."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from coffre.storage.base import Handle, ObjectInfo
from coffre.storage.cached import CachedBackend
from coffre.storage.memory import MemoryBackend


class Counting(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.loads: Counter[str] = Counter()

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        self.loads[handle.kind] += 1
        return super().load(handle, offset, length)


def obj(data: bytes) -> tuple[Handle, bytes]:
    return Handle("index", hashlib.sha256(data).hexdigest()), data


def test_metadata_is_downloaded_once(tmp_path: Path) -> None:
    inner = Counting()
    h, data = obj(b"an index file")
    inner.save(h, data)
    first = CachedBackend(inner, tmp_path / "c")
    assert first.load(h, 0, 1000) == data
    # A later run (a new process) reads its local copy.
    later = CachedBackend(inner, tmp_path / "c")
    assert later.load(h, 0, 1000) == data and later.load(h, 3, 5) == data[3:8]
    assert inner.loads["index"] == 1 and later.hits == 2


def test_what_a_run_writes_is_kept_without_a_download(tmp_path: Path) -> None:
    inner = Counting()
    c = CachedBackend(inner, tmp_path / "c")
    h, data = obj(b"snapshot written by this backup")
    c.save(h, data)
    assert c.load(h) == data and inner.loads["index"] == 0


def test_damaged_or_lost_copies_are_fetched_again(tmp_path: Path) -> None:
    inner = Counting()
    h, data = obj(b"index content " * 100)
    inner.save(h, data)
    c = CachedBackend(inner, tmp_path / "c")
    c.load(h)
    copy = tmp_path / "c" / "index" / h.name
    copy.write_bytes(b"X" + data[1:])  # bit rot on the local disk
    assert c.load(h) == data and inner.loads["index"] == 2
    assert copy.read_bytes() == data  # repaired
    copy.unlink()  # the cache folder wiped
    assert c.load(h) == data and inner.loads["index"] == 3


def test_a_wrong_object_from_storage_is_not_kept(tmp_path: Path) -> None:
    inner = Counting()
    h = Handle("index", "0" * 64)
    inner.save(h, b"bytes that do not hash to the name")
    c = CachedBackend(inner, tmp_path / "c")
    assert c.load(h) == b"bytes that do not hash to the name"  # the repository layer refuses it
    assert not (tmp_path / "c" / "index" / h.name).exists()


def test_copies_of_removed_objects_are_dropped_at_the_next_listing(tmp_path: Path) -> None:
    inner = Counting()
    (h1, d1), (h2, d2) = obj(b"old index"), obj(b"new index")
    inner.save(h1, d1)
    inner.save(h2, d2)
    c = CachedBackend(inner, tmp_path / "c")
    c.load(h1)
    c.load(h2)
    inner.remove(h1)  # pruned by another machine
    assert [i.name for i in c.list("index")] == [h2.name]
    assert sorted(p.name for p in (tmp_path / "c" / "index").iterdir()) == [h2.name]


def test_pack_data_is_never_cached(tmp_path: Path) -> None:
    inner = Counting()
    data = b"pack bytes"
    h = Handle("data", hashlib.sha256(data).hexdigest())
    inner.save(h, data)
    c = CachedBackend(inner, tmp_path / "c")
    c.load(h)
    c.load(h)
    assert inner.loads["data"] == 2 and not (tmp_path / "c" / "data").exists()


class Listing(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.listings: Counter[str] = Counter()

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        self.listings[kind] += 1
        return super().list(kind)


def test_a_listing_lent_by_a_check_serves_the_next_load_once_and_never_after_a_write(tmp_path: Path) -> None:
    inner = Listing()
    c = CachedBackend(inner, tmp_path / "c")
    first, _ = obj(b"first index")
    inner.save(first, b"first index")
    with c.lending_listings(("index",)):
        assert [i.name for i in c.list("index")] == [first.name]  # the check (cli/watching.py)
    assert [i.name for i in c.list("index")] == [first.name]  # the load: no request
    assert inner.listings["index"] == 1
    # Only once: a later look (a backup's check before it commits) asks the storage again.
    second, data = obj(b"second index")
    inner.save(second, data)  # written by another machine meanwhile
    assert {i.name for i in c.list("index")} == {first.name, second.name}
    assert inner.listings["index"] == 2
    # This command's own write drops a listing lent before it.
    with c.lending_listings(("index",)):
        c.list("index")
    third, data = obj(b"third index")
    c.save(third, data)
    assert third.name in {i.name for i in c.list("index")} and inner.listings["index"] == 4
    # Kinds not lent are always listed.
    c.list("snapshots")
    c.list("snapshots")
    assert inner.listings["snapshots"] == 2
