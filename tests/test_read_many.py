"""Reading many blobs at once (restore): neighbours in a pack come in one request, and any
failure falls back to the other copies of a blob, or to a precise error for that blob only."""

from __future__ import annotations

import random

from coffre.core.errors import CoffreError
from coffre.crypto.aead import KIND_DATA
from coffre.format.pack import BlobEntry
from coffre.repository.packer import Packer
from coffre.repository.repo import Repository
from coffre.storage.base import Handle
from coffre.storage.memory import MemoryBackend

from conftest import PASSWORD


def store(repo: Repository, blobs: list[bytes], base: bytes | None = None) -> dict[bytes, list[BlobEntry]]:
    """One pack holding these blobs (as deltas of `base` when given); indexed."""
    packer = Packer(repo)
    for data in blobs:
        blob_id = repo.crypter.blob_id(data)
        if packer.claim(blob_id):
            packer.add(KIND_DATA, blob_id, data,
                       base=(repo.crypter.blob_id(base), base) if base is not None else None)
    packer.flush()
    written = packer.take_written()
    for pid, entries in written.items():
        repo.index.add_pack(pid, entries)
    return written


def damage(backend: MemoryBackend, pack: bytes, entry: BlobEntry) -> None:
    key = ("data", pack.hex())
    data, t = backend._objects[key]
    at = entry.offset + entry.length // 2
    backend._objects[key] = (data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :], t)


def test_blobs_come_back_in_order_with_duplicates_and_deltas() -> None:
    repo, _ = Repository.init(MemoryBackend(), PASSWORD)
    rnd = random.Random(4)
    plain = [rnd.randbytes(3000) * 3 for _ in range(5)]
    store(repo, plain)
    base = plain[0]
    deltas = [base[:100] + bytes([i]) + base[101:] for i in range(3)]
    store(repo, deltas, base=base)
    assert all(repo.index.lookup(repo.crypter.blob_id(d)).entry.base for d in deltas)  # type: ignore[union-attr]
    wanted = [*deltas, plain[3], plain[1], plain[3], deltas[0]]
    got = repo.load_many([repo.crypter.blob_id(d) for d in wanted])
    assert got == wanted


def test_a_damaged_copy_falls_back_to_another_and_a_lost_blob_fails_alone() -> None:
    backend = MemoryBackend()
    repo, _ = Repository.init(backend, PASSWORD)
    rnd = random.Random(5)
    blobs = [rnd.randbytes(5000) for _ in range(4)]
    first = store(repo, blobs)
    # A second copy of blobs[1] in another pack (as after a crash and a new backup).
    second_packer = Packer(repo)
    bid = repo.crypter.blob_id(blobs[1])
    second_packer.add(KIND_DATA, bid, blobs[1])
    second_packer.flush()
    for pid, entries in second_packer.take_written().items():
        repo.index.add_pack(pid, entries)
    (pack, entries), = first.items()
    by_id = {e.id: e for e in entries}
    damage(backend, pack, by_id[bid])  # first copy of blobs[1]: only a second copy is left
    damage(backend, pack, by_id[repo.crypter.blob_id(blobs[2])])  # blobs[2]: no other copy
    got = repo.load_many([repo.crypter.blob_id(b) for b in blobs])
    assert got[0] == blobs[0] and got[1] == blobs[1] and got[3] == blobs[3]
    assert isinstance(got[2], CoffreError) and "cannot be read" in got[2].message


class Counting(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        if handle.kind == "data":
            self.loads.append(handle.name)
        return super().load(handle, offset, length)


def test_bases_come_with_the_blobs_of_their_pack() -> None:
    # Yesterday's pack holds the bases and files unchanged since; today's the deltas. Each
    # pack is read once: the bases with yesterday's blobs, not in a pass of their own.
    backend = Counting()
    repo, _ = Repository.init(backend, PASSWORD)
    rnd = random.Random(6)
    plain = [rnd.randbytes(3000) * 3 for _ in range(6)]
    yesterday = store(repo, plain)
    base = plain[0]
    deltas = [base[:100] + bytes([i]) + base[101:] for i in range(3)]
    today = store(repo, deltas, base=base)
    backend.loads.clear()
    wanted = [deltas[1], plain[2], deltas[0], plain[5], plain[0]]
    assert repo.load_many([repo.crypter.blob_id(d) for d in wanted]) == wanted
    assert sorted(backend.loads) == sorted(p.hex() for p in [*yesterday, *today])
    # A pack holding a delta and its base: one read too.
    packer = Packer(repo)
    fresh = rnd.randbytes(9000)
    again = fresh[:50] + b"!" + fresh[51:]
    packer.add(KIND_DATA, repo.crypter.blob_id(fresh), fresh)
    packer.add(KIND_DATA, repo.crypter.blob_id(again), again, base=(repo.crypter.blob_id(fresh), fresh))
    packer.flush()
    for pid, entries in packer.take_written().items():
        repo.index.add_pack(pid, entries)
    assert repo.index.base_of(repo.crypter.blob_id(again)) == repo.crypter.blob_id(fresh)
    backend.loads.clear()
    assert repo.load_many([repo.crypter.blob_id(again)]) == [again]
    assert len(backend.loads) == 1
