"""Index files and pack headers are decoded by msgspec in C (format/pack.py, "the quick
decoder") and, for what it refuses, entry by entry by BlobEntry.from_wire: the two must agree on
every index and header, damaged or not, since every command loads the index this way and a
wrongly accepted entry would send a restore to the wrong bytes."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffre.core.errors import FormatError
from coffre.format import index as indexfmt
from coffre.format import pack as packfmt
from coffre.format.index import decode_index, encode_index
from coffre.format.pack import BlobEntry, decode_header, encode_header, max_raw, max_stored

ID, BASE, PACK, SALT = b"\x07" * 32, b"\x08" * 32, b"\x09" * 32, b"\x0a" * 16
# Values near every check of from_wire: wrong types, bounds of each kind and their
# neighbours, ids and salts of the wrong length, bools posing as integers, nil.
EDGES = [0, 1, 2, 3, -1, True, False, None, 1.5, "1", "", b"", ID, BASE, ID + b"!", ID[:31], SALT,
         SALT + b"!", [], [1], [ID], {"v": 1}, packfmt.MAX_PACK, packfmt.MAX_PACK + 1,
         *(n + d for kind in (1, 2) for n in (max_stored(kind), max_raw(kind)) for d in (-1, 0, 1)),
         2**63, 2**64 - 1]
ODD = st.one_of(st.sampled_from(EDGES), st.integers(-(2**63), 2**64 - 1), st.binary(max_size=40))
GOOD = [[1, ID, 0, 100, 4096], [1, ID, 7, 100, 262144, BASE], [2, ID, 0, 300, 1000]]


def entry(i: int, changes: dict[int, Any], cut: int) -> list[Any]:
    wire: list[Any] = list(GOOD[i])
    for pos, value in changes.items():
        if pos < len(wire):
            wire[pos] = value
        else:
            wire.append(value)
    return wire[: len(wire) - cut] if cut else wire


def refused_or(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except FormatError:
        return "refused"


def agree_on_index(doc: Any, version: int) -> None:
    raw = msgpack.packb(doc, use_bin_type=True)
    quick = indexfmt._quick(raw, version)
    checked = refused_or(indexfmt._checked, raw, version)
    # The quick decoder may leave a case to the checked one, never accept it otherwise.
    assert quick is None or quick == checked, doc
    assert refused_or(decode_index, raw, version) == checked


def agree_on_header(doc: Any, salt: bytes | None) -> None:
    raw = msgpack.packb(doc, use_bin_type=True)
    quick = packfmt._quick_header(raw, salt)
    checked = refused_or(packfmt._checked_header, raw, salt)
    assert quick is None or quick == checked, doc
    assert refused_or(decode_header, raw, 2**31, salt) == checked  # no blob outside the pack


@pytest.mark.parametrize("good", range(len(GOOD)))
def test_both_decoders_agree_on_every_field_of_an_entry_changed_added_or_missing(good: int) -> None:
    for pos in range(7):
        for value in EDGES:
            wire = entry(good, {pos: value}, 0)
            agree_on_index({"v": 2, "packs": [[PACK, [GOOD[0], wire], SALT]]}, 2)
            agree_on_index({"v": 1, "packs": [[PACK, [wire]]]}, 1)
            agree_on_header({"v": 2, "blobs": [wire, GOOD[2]]}, SALT)
            agree_on_header({"v": 1, "blobs": [wire]}, None)
    for cut in range(1, 6):
        agree_on_index({"v": 2, "packs": [[PACK, [entry(good, {}, cut)], SALT]]}, 2)
        agree_on_header({"v": 1, "blobs": [entry(good, {}, cut)]}, None)


@given(good=st.integers(0, len(GOOD) - 1), changes=st.dictionaries(st.integers(0, 6), ODD, max_size=3),
       cut=st.integers(0, 3))
@settings(max_examples=300)
def test_both_decoders_agree_on_any_entry(good: int, changes: dict[int, Any], cut: int) -> None:
    wire = entry(good, changes, cut)
    agree_on_index({"v": 2, "packs": [[PACK, [wire], SALT]]}, 2)
    agree_on_header({"v": 2, "blobs": [wire]}, SALT)


@given(top=st.dictionaries(st.sampled_from(["v", "packs", "blobs", "w"]), ODD, max_size=3),
       item=st.lists(ODD, max_size=4), version=st.sampled_from([1, 2]))
def test_both_decoders_agree_on_any_index_or_header(
        top: dict[str, Any], item: list[Any], version: int) -> None:
    agree_on_index(top, version)
    agree_on_index({"v": version, "packs": [item]}, version)
    agree_on_index({"v": version, "packs": [[PACK, [GOOD[0]], *item]]}, version)
    agree_on_header(top, SALT if version == 2 else None)


def test_indexes_and_headers_as_coffre_writes_them_never_reach_the_entry_by_entry_decoder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The speed: plain blobs, deltas and trees, in both formats, are decoded in C only."""
    def entries(salt: bytes | None) -> list[BlobEntry]:
        return [BlobEntry(1, ID, 0, 100, 4096, salt=salt),
                BlobEntry(1, b"\x01" * 32, 100, 50, 262144, BASE, salt),
                BlobEntry(2, b"\x02" * 32, 150, 300, 1000, salt=salt)]

    def refused(raw: Any, salt: bytes | None = None) -> BlobEntry:
        raise AssertionError("decoded in Python")

    monkeypatch.setattr(packfmt.BlobEntry, "from_wire", classmethod(lambda cls, raw, salt=None: refused(raw)))
    for version, salt in ((1, None), (2, SALT)):
        packs = {PACK: entries(salt), b"\x03" * 32: entries(salt)[:1]}
        assert decode_index(encode_index(packs, version), version) == packs
        assert decode_header(encode_header(entries(salt), version), 450, salt) == entries(salt)
