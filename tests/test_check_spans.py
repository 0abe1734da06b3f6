"""check on a local disk reads a pack larger than a span (ops/check.py SPAN) in spans, each
hashed and its blobs decoded as it comes, so that a reader holds a span, not a whole pack.
Whatever is amiss must then be told exactly as when the pack is read whole: these tests run
each case both ways (SPAN 64 KiB against the 1 MiB packs of `init_small`, and SPAN larger than
any pack) and compare."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coffre.ops import check
from coffre.ops.check import Checker, CheckResult
from coffre.repository.repo import Repository
from coffre.storage.base import Handle, ObjectInfo
from coffre.storage.local import LocalBackend
from test_check import Damage, flip, init_small, open_local, packs, two_snapshots

from conftest import PASSWORD, Coffre

WAYS = {"in spans": 64 * 1024, "whole": 64 * 1024 * 1024}


class Recording(LocalBackend):
    """Records the loads of data packs; `garble` names a pack whose first load covering its
    middle byte gives that byte changed (a fault of memory or of the link, once);
    `after_listing` is called once the packs are listed."""

    def __init__(self, path: Path, garble: str = "",
                 after_listing: Callable[[], None] | None = None) -> None:
        super().__init__(path)
        self.loads: list[tuple[str, int, int]] = []
        self.garble = garble
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
            if handle.name == self.garble:
                middle = self.stat(handle).size // 2 - offset
                if 0 <= middle < len(data):
                    self.garble = ""
                    data = data[:middle] + bytes([data[middle] ^ 0x40]) + data[middle + 1 :]
        return data


def checked(c: Coffre, monkeypatch: pytest.MonkeyPatch, span: int, read_data: bool = True,
            garble: str = "", after_listing: Callable[[], None] | None = None,
            ) -> tuple[CheckResult, Recording]:
    monkeypatch.setattr(check, "SPAN", span)
    backend = Recording(c.repo, garble, after_listing)
    repo = Repository.open(backend, PASSWORD)
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
        results[way], backend = checked(coffre, monkeypatch, span)
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
                inside = sorted((e.offset, e.offset + e.length) for e in blobs[bytes.fromhex(name)]
                                if start <= e.offset < stop)
                assert inside and inside[-1][1] <= stop
                # At most a span, unless its first blob alone is larger (the header aside).
                assert inside[-1][1] - start <= max(span, inside[0][1] - inside[0][0])
    assert outcome(results["in spans"]) == outcome(results["whole"])
    assert results["whole"].packs_read == len(sizes)


@pytest.mark.parametrize("read_data", [True, False], ids=["read-data", "hashes"])
def test_a_flipped_byte_is_located_as_when_read_whole(
        coffre: Coffre, damage: Damage, monkeypatch: pytest.MonkeyPatch, read_data: bool) -> None:
    flip(packs(coffre)[damage.victim])
    results = {way: checked(coffre, monkeypatch, span, read_data)[0] for way, span in WAYS.items()}
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
        results[way] = checked(coffre, monkeypatch, span, read_data,
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
    r, backend = checked(coffre, monkeypatch, WAYS[way], garble=damage.victim)
    assert backend.garble == ""  # the fault happened
    assert r.ok and not r.damaged_packs and not r.damaged_blobs
    assert r.notes == [f"pack {damage.victim[:12]} gave wrong bytes once and the right ones when "
                       "read again: check this machine's memory and the connection to the storage"]
    assert bytes.fromhex(damage.victim) in r.examined
