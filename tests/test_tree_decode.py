"""Folder listings are decoded by msgspec in C (format/tree.py) and, for what it refuses, by
Node.from_wire in Python: the two must agree on every listing, damaged or not, since restore,
check and every backup's parent read listings this way."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coffre.core.errors import FormatError
from coffre.format import tree
from coffre.format.tree import Node, decode_tree, encode_tree

ID = b"\x07" * 32
# Values near every check of from_wire: the wrong type, bounds and their neighbours, ids of
# the wrong length, the [seconds, ns] form of times, bools posing as integers.
EDGES = [0, 1, -1, 0o7777, 0o10000, 2**32, 2**32 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), True, False,
         None, 1.5, 1.0, "1", "", "file", "dir", "symlink", "fifo", "zzz", b"", b"x", b"a/b", b"x" * 4097, ID,
         ID + b"!", [ID], [ID, b"short"], [], [1, 2], [1, 10**9], [-1, 0], [[b"k", b"v"]], [[b"k"]],
         [b"k", b"v"], [(b"k", "v")], {"n": b"x"}]
ODD = st.one_of(st.sampled_from(EDGES), st.integers(-(2**63), 2**64 - 1), st.binary(max_size=40))
TYPES = ["file", "dir", "symlink", "fifo", "chardev", "blockdev", "socket"]
KEYS = ["n", "t", "m", "u", "g", "un", "gn", "mt", "at", "ct", "s", "i", "d", "l", "r", "c", "st", "tg",
        "x", "zz"]


def plain(raw: Any) -> list[Node] | str:
    """What from_wire alone makes of a listing: its nodes, or the error."""
    try:
        d = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        if not isinstance(d, dict) or d.get("v") != 1 or not isinstance(d.get("nodes"), list):
            raise FormatError("tree")
        return [Node.from_wire(n) for n in d["nodes"]]
    except FormatError:
        return "refused"


def decoded(raw: bytes) -> list[Node] | str:
    try:
        return decode_tree(raw)
    except FormatError:
        return "refused"


def ordinary(name: bytes, kind: str) -> dict[str, Any]:
    node = Node(name=name, type=kind, mode=0o644, user="pharmacie", mtime_ns=1_700_000_000_123_456_789,
                size=3, inode=42, device=2049)
    if kind == "file":
        node.content = [ID]
    elif kind == "dir":
        node.subtree = ID
    elif kind == "symlink":
        node.target = b"../ordonnances"
    return node.to_wire()


def listing(*nodes: dict[str, Any]) -> bytes:
    return msgpack.packb({"v": 1, "nodes": [ordinary(b"a", "file"), *nodes]}, use_bin_type=True)


@pytest.mark.parametrize("base", TYPES)
def test_the_fast_decoder_agrees_with_from_wire_on_every_field_changed_or_missing(base: str) -> None:
    for key in KEYS:
        for value in EDGES:
            raw = listing(ordinary(b"ordonnance.pdf", base) | {key: value})
            assert decoded(raw) == plain(raw), (key, value)
        raw = listing({k: v for k, v in ordinary(b"ordonnance.pdf", base).items() if k != key})
        assert decoded(raw) == plain(raw), key


@given(base=st.sampled_from(TYPES),
       changes=st.dictionaries(st.sampled_from(KEYS), ODD, max_size=3),
       dropped=st.lists(st.sampled_from(KEYS), max_size=2))
@settings(max_examples=300)
def test_the_fast_decoder_agrees_with_from_wire_on_any_node(
        base: str, changes: dict[str, Any], dropped: list[str]) -> None:
    wire = ordinary(b"ordonnance.pdf", base) | changes
    for key in dropped:
        wire.pop(key, None)
    raw = listing(wire)
    assert decoded(raw) == plain(raw)


@given(top=st.dictionaries(st.sampled_from(["v", "nodes", "w"]), ODD, max_size=3))
def test_the_fast_decoder_agrees_with_from_wire_on_any_listing(top: dict[str, Any]) -> None:
    raw = msgpack.packb(top, use_bin_type=True)
    assert decoded(raw) == plain(raw)


def test_ordinary_listings_never_reach_the_python_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The speed: listings as backups write them (every type, xattrs) are decoded in C only."""
    nodes = [Node.from_wire(ordinary(b"f%d" % i, kind)) for i, kind in enumerate(TYPES)]
    nodes[0].xattrs = [(b"user.origine", b"scanner")]
    data = encode_tree(nodes)

    def refused(raw: Any) -> Node:
        raise AssertionError("decoded in Python")

    monkeypatch.setattr(tree.Node, "from_wire", classmethod(lambda cls, raw: refused(raw)))
    assert decode_tree(data) == nodes
