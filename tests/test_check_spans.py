"""check on a local disk reads a pack larger than a span (ops/check.py SPAN) in spans, each
hashed and its blobs decoded as it comes, so that a reader holds a span, not a whole pack.
Whatever is amiss must then be told exactly as when the pack is read whole: these tests run
each case both ways (SPAN 64 KiB against the 1 MiB packs of `init_small`, and SPAN larger than
any pack) and compare."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from coffre.core.errors import StorageError
from coffre.format import pack as packfmt
from coffre.format.pack import BlobEntry
from coffre.ops import check
from coffre.ops.check import Checker, CheckResult
from coffre.repository.repo import Repository
from coffre.storage.base import Handle, ObjectInfo
from coffre.storage.local import LocalBackend
from test_backup_reads import BLOCKS
from test_check import Damage, flip, init_small, open_local, packs, two_snapshots
from test_check_walked import replace_index
from test_maintenance_reads import database_changed_everywhere

from conftest import PASSWORD, Coffre

WAYS = {"in spans": 64 * 1024, "whole": 64 * 1024 * 1024}


# A fault of the storage or of the link: given a load (handle, offset, length asked) and the
# bytes it read, the bytes it gives (or it raises).
Fault = Callable[[Handle, int, "int | None", bytes], bytes]


class Recording(LocalBackend):
    """Records the loads of data packs and passes them through `fault`; `after_listing` is
    called once the packs are listed."""

    def __init__(self, path: Path, fault: Fault | None = None,
                 after_listing: Callable[[], None] | None = None) -> None:
        super().__init__(path)
        self.loads: list[tuple[str, int, int]] = []
        self.fault = fault
        self.after_listing = after_listing

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        infos = list(super().list(kind))
        if kind == "data" and self.after_listing is not None:
            self.after_listing()
        return iter(infos)

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        data = super().load(handle, offset, length)
        if handle.kind == "data":
            self.loads.append((handle.name, offset, offset + len(data)))
            if self.fault is not None:
                data = self.fault(handle, offset, length, data)
        return data


class GarbledOnce:
    """A fault: the first load of pack `name` that covers byte `at` (its middle by default),
    and that is not a header read (the pack's last 64 KiB, to its end) unless `header`, gives
    that byte changed."""

    def __init__(self, path: Path, name: str, at: int | None = None, header: bool = False) -> None:
        self.name = name
        self.size = next(path.glob(f"data/*/{name}")).stat().st_size
        self.at = self.size // 2 if at is None else at
        self.header = header
        self.done = False

    def __call__(self, handle: Handle, offset: int, length: int | None, data: bytes) -> bytes:
        header_read = length is None and offset == max(0, self.size - 64 * 1024) and offset > 0
        i = self.at - offset
        if self.done or handle.name != self.name or not 0 <= i < len(data) or header_read != self.header:
            return data
        self.done = True
        return data[:i] + bytes([data[i] ^ 0x40]) + data[i + 1 :]


def checked(path: Path, monkeypatch: pytest.MonkeyPatch, span: int, read_data: bool = True,
            fault: Fault | None = None, after_listing: Callable[[], None] | None = None,
            password: str = PASSWORD) -> tuple[CheckResult, Recording]:
    """The repository at `path` checked with SPAN set to `span`."""
    monkeypatch.setattr(check, "SPAN", span)
    backend = Recording(path, fault, after_listing)
    repo = Repository.open(backend, password)
    repo.load_index()
    return Checker(repo).run(read_data=read_data), backend


def outcome(r: CheckResult) -> tuple[object, ...]:
    return (r.errors, r.notes, r.damaged_packs, r.affected, sorted(r.hashed), sorted(r.examined),
            {p: sorted(b) for p, b in r.damaged_blobs.items()}, r.packs_read, r.bytes_read)


@pytest.fixture
def damage(coffre: Coffre, tmp_path: Path) -> Damage:
    return two_snapshots(init_small(coffre), tmp_path)


def test_a_healthy_repository_is_read_in_spans_of_at_most_a_span(
        coffre: Coffre, damage: Damage, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = {name: path.stat().st_size for name, path in packs(coffre).items()}
    results = {}
    for way, span in WAYS.items():
        results[way], backend = checked(coffre.repo, monkeypatch, span)
        assert results[way].ok and not results[way].notes
        larger = [name for name, size in sizes.items() if size > span]
        assert larger if way == "in spans" else not larger
        blobs = open_local(coffre).index.packs()
        for name in larger:
            body = sorted(load[1:] for load in backend.loads if load[0] == name)
            body.remove((sizes[name] - 64 * 1024, sizes[name]))  # its header, first
            # Then spans from end to end, a blob never cut.
            assert body[0][0] == 0 and body[-1][1] == sizes[name] and len(body) > 1
            assert all(a[1] == b[0] for a, b in itertools.pairwise(body))
            for start, stop in body:
                inside = [(e.offset, e.offset + e.length) for e in blobs[bytes.fromhex(name)]
                          if start <= e.offset < stop]
                assert all(end <= stop for _offset, end in inside)
                # At most a span, unless it is one blob larger than a span.
                assert stop - start <= span or inside == [(start, stop)]
    assert outcome(results["in spans"]) == outcome(results["whole"])
    assert results["whole"].packs_read == len(sizes)


@pytest.mark.parametrize("read_data", [True, False], ids=["read-data", "hashes"])
def test_a_flipped_byte_is_located_as_when_read_whole(
        coffre: Coffre, damage: Damage, monkeypatch: pytest.MonkeyPatch, read_data: bool) -> None:
    flip(packs(coffre)[damage.victim])
    results = {way: checked(coffre.repo, monkeypatch, span, read_data)[0] for way, span in WAYS.items()}
    r = results["in spans"]
    assert list(r.damaged_packs) == [damage.victim]
    assert "does not match its name" in r.damaged_packs[damage.victim]
    assert "1 of" in r.damaged_packs[damage.victim]  # the damaged blob located
    assert r.affected == {sid: [str(damage.big)] for sid in damage.snaps}
    assert outcome(r) == outcome(results["whole"])


@pytest.mark.parametrize("read_data", [True, False], ids=["read-data", "hashes"])
@pytest.mark.parametrize("change", ["shortened", "lengthened"])
def test_a_pack_of_another_length_than_listed_is_damaged(
        coffre: Coffre, damage: Damage, monkeypatch: pytest.MonkeyPatch, change: str,
        read_data: bool) -> None:
    victim = packs(coffre)[damage.victim]
    data = victim.read_bytes()
    changed = data[:-3] if change == "shortened" else data + b"\0"
    results = {}
    for way, span in WAYS.items():
        # Listed at its size, then changed before it is read (damaged meanwhile).
        results[way] = checked(coffre.repo, monkeypatch, span, read_data,
                               after_listing=lambda: victim.write_bytes(changed) and None)[0]
        victim.write_bytes(data)
    r = results["in spans"]
    # The pack's end no longer matches its header's place; its blobs are intact: no file lost.
    assert r.damaged_packs == {damage.victim: "content does not match its name (bit rot or "
                               "tampering): its header is damaged, its blobs are intact"}
    assert r.affected == {}
    assert outcome(r) == outcome(results["whole"])


@pytest.mark.parametrize("way", list(WAYS))
def test_wrong_bytes_read_once_are_a_note_not_damage(
        coffre: Coffre, damage: Damage, monkeypatch: pytest.MonkeyPatch, way: str) -> None:
    fault = GarbledOnce(coffre.repo, damage.victim)
    r = checked(coffre.repo, monkeypatch, WAYS[way], fault=fault)[0]
    assert fault.done  # the fault happened
    assert r.ok and not r.damaged_packs and not r.damaged_blobs
    assert r.notes == [f"pack {damage.victim[:12]} gave wrong bytes once and the right ones when "
                       "read again: check this machine's memory and the connection to the storage"]
    assert bytes.fromhex(damage.victim) in r.examined


def test_a_header_read_wrong_once_is_a_note_not_damage(
        coffre: Coffre, damage: Damage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read in spans, the header comes first, on its own: a byte wrong there fails to decode,
    and the pack read whole then decodes; as for any pack whose bytes were wrong once."""
    size = packs(coffre)[damage.victim].stat().st_size
    fault = GarbledOnce(coffre.repo, damage.victim, at=size - 100, header=True)
    r = checked(coffre.repo, monkeypatch, WAYS["in spans"], fault=fault)[0]
    assert fault.done
    assert r.ok and not r.damaged_packs
    assert r.notes == [f"pack {damage.victim[:12]} gave wrong bytes once and the right ones when "
                       "read again: check this machine's memory and the connection to the storage"]


@pytest.mark.usefixtures("damage")  # a repository of several packs
def test_a_header_read_from_other_bytes_is_not_taken_for_this_packs(
        coffre: Coffre, monkeypatch: pytest.MonkeyPatch) -> None:
    """A misdirected read gives the last bytes of another pack, whose header decodes (every
    pack's is sealed alike): its blobs must not be looked for in this pack, which would be
    damage that is not there. The header's bytes are checked against the spans that cover
    them; the pack is then read again, whole."""
    index = open_local(coffre).index
    data = sorted((path.stat().st_size, name) for name, path in packs(coffre).items()
                  if not index.tree_pack(bytes.fromhex(name)))
    # The other pack no larger: its header's blobs then all lie within this one, so it decodes.
    (size, target), (_, other) = data[-1], data[-2]
    tail = packs(coffre)[other].read_bytes()[-64 * 1024 :]
    served = []

    def misdirected(handle: Handle, offset: int, length: int | None, data: bytes) -> bytes:
        if handle.name == target and length is None and offset > 0 and not served:
            served.append(offset)
            return tail
        return data

    r, backend = checked(coffre.repo, monkeypatch, WAYS["in spans"], fault=misdirected)
    assert served
    # The other header decoded: spans were read after it, then the pack whole.
    assert any(name == target and start == 0 and stop < size for name, start, stop in backend.loads)
    assert r.ok and not r.damaged_packs and not r.damaged_blobs
    assert r.notes == [f"pack {target[:12]} gave wrong bytes once and the right ones when "
                       "read again: check this machine's memory and the connection to the storage"]


@pytest.mark.parametrize("way", list(WAYS))
def test_a_pack_that_cannot_be_read_is_said_so(
        coffre: Coffre, damage: Damage, monkeypatch: pytest.MonkeyPatch, way: str) -> None:
    def failing(handle: Handle, offset: int, length: int | None, data: bytes) -> bytes:
        if handle.name == damage.victim:
            raise StorageError("input/output error")
        return data

    r = checked(coffre.repo, monkeypatch, WAYS[way], fault=failing)[0]
    assert r.damaged_packs == {damage.victim: "cannot be read: input/output error"}


def test_a_blob_sealed_damaged_is_found_in_whichever_span_it_lies(
        coffre: Coffre, damage: Damage, monkeypatch: pytest.MonkeyPatch) -> None:
    """A blob damaged before its pack was written: the pack's bytes match its name, the blob
    does not authenticate. Made here from the victim: its last blob changed, the pack renamed
    after its new hash and the index told."""
    repo = open_local(coffre)
    listed = repo.index.packs()
    entries = listed.pop(bytes.fromhex(damage.victim))
    last = max(entries, key=lambda e: e.offset)
    path = packs(coffre)[damage.victim]
    data = bytearray(path.read_bytes())
    data[last.offset + last.length // 2] ^= 0x40
    name = hashlib.sha256(data).hexdigest()
    (coffre.repo / "data" / name[:2]).mkdir(exist_ok=True)
    (coffre.repo / "data" / name[:2] / name).write_bytes(bytes(data))
    path.unlink()
    replace_index(coffre, repo, {bytes.fromhex(name): entries, **listed})
    results = {way: checked(coffre.repo, monkeypatch, span)[0] for way, span in WAYS.items()}
    r = results["in spans"]
    assert r.damaged_packs == {name: f"blob {last.id.hex()[:12]} does not authenticate (1 of "
                                     f"{len(entries)} blobs damaged)"}
    assert r.affected == {sid: [str(damage.big)] for sid in damage.snaps}
    assert outcome(r) == outcome(results["whole"])


def test_an_index_that_disagrees_with_a_pack_header_is_told_in_spans(
        coffre: Coffre, damage: Damage, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = open_local(coffre)
    listed = repo.index.packs()
    pid = bytes.fromhex(damage.victim)
    first, *rest = listed[pid]
    listed[pid] = [msgspec.structs.replace(first, raw_length=first.raw_length + 1), *rest]
    replace_index(coffre, repo, listed)
    results = {way: checked(coffre.repo, monkeypatch, span)[0] for way, span in WAYS.items()}
    assert results["in spans"].errors == [
        f"pack {damage.victim[:12]}: the index and the pack header disagree"]
    assert outcome(results["in spans"]) == outcome(results["whole"])


@pytest.mark.parametrize("garbled", [False, True], ids=["read once", "a span read wrong once"])
def test_deltas_whose_bases_are_lost_are_counted_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, garbled: bool) -> None:
    """The packs of a database's first version gone, the 96 deltas of its second cannot be
    rebuilt: counted once each, also when the spans of their pack are read again whole."""
    _db, backend = database_changed_everywhere(tmp_path, random.Random(11), extra=1024 * 1024)
    repo = Repository.open(backend, "pw")
    repo.load_index()
    index = repo.index
    deltas = next(p for p, entries in index.packs().items() if any(e.base for e in entries))
    for pid in index.packs():
        if not index.tree_pack(pid) and pid != deltas:
            (backend.root / "data" / pid.hex()[:2] / pid.hex()).unlink()
    results = {}
    for way, span in WAYS.items():
        fault = GarbledOnce(backend.root, deltas.hex()) if garbled else None
        results[way] = checked(backend.root, monkeypatch, span, fault=fault, password="pw")[0]
        assert fault is None or fault.done
    r = results["in spans"]
    assert (f"{BLOCKS} delta blobs that snapshots need cannot be read because their base is "
            "damaged or missing") in r.errors
    assert outcome(r) == outcome(results["whole"])


def test_spans_cover_a_pack_end_to_end_without_cutting_a_blob() -> None:
    def blob(offset: int, length: int) -> BlobEntry:
        return BlobEntry(1, bytes(32), offset, length, length)

    assert packfmt.spans([], 10, 4) == [(0, 4, []), (4, 8, []), (8, 10, [])]
    assert packfmt.spans([], 0, 4) == [(0, 0, [])]
    a, b, c, d, e = blob(6, 3), blob(9, 10), blob(19, 2), blob(20, 3), blob(23, 1)
    assert packfmt.spans([e, d, c, b, a], 30, 4) == [
        (0, 4, []), (4, 6, []),  # bytes before the first blob, cut too
        (6, 9, [a]),
        (9, 19, [b]),  # larger than a span: alone
        (19, 23, [c, d]),  # overlapping: never cut between them
        (23, 24, [e]), (24, 28, []), (28, 30, []),  # after the blobs (the header), cut too
    ]
    beyond = blob(28, 5)  # not within the pack: with the last span, where it does not fit
    assert packfmt.spans([a, beyond], 30, 40) == [(0, 30, [a, beyond])]
