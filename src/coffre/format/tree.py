"""Trees: one per directory, the nodes sorted by name. Names and link targets are bytes,
so names that are not valid UTF-8 are stored and restored identically; times are any the
file system holds (codec.wire_time), years before 1677 and after 2262 included.

A restore, a check and every backup's parent read one tree per folder, so decoding is on their
path: msgspec decodes and validates a tree in C, straight into `Node`s, about five times as
fast as MessagePack into maps and checks in Python. It accepts only what `Node.from_wire`
accepts; what it refuses (times beyond 2262, fields a node's type ignores, or damage) is decoded
again by `Node.from_wire`, which accepts the rare forms and words the error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from coffre.core.errors import FormatError
from coffre.core.i18n import _
from coffre.format.codec import (
    MAX_OBJECT,
    WireId,
    decode,
    encode,
    want,
    want_id,
    want_int,
    want_map,
    want_time,
    wire_time,
)

NODE_TYPES = ("file", "dir", "symlink", "chardev", "blockdev", "fifo", "socket")
MAX_NAME = 4096
# The checks of Node.from_wire as types; a MessagePack integer is at most 2**64 - 1, so upper
# bounds from 2**64 on need no check.
_Count = Annotated[int, msgspec.Meta(ge=0)]
_WIRE_NAMES = {"name": "n", "type": "t", "mode": "m", "uid": "u", "gid": "g", "user": "un", "group": "gn",
               "mtime_ns": "mt", "atime_ns": "at", "ctime_ns": "ct", "size": "s", "inode": "i", "device": "d",
               "nlink": "l", "rdev": "r", "content": "c", "subtree": "st", "target": "tg", "xattrs": "x"}


class Node(msgspec.Struct, rename=_WIRE_NAMES):
    name: Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
    type: str  # one of NODE_TYPES (checked by decode_tree and from_wire)
    mode: Annotated[int, msgspec.Meta(ge=0, le=0o7777)] = 0
    uid: Annotated[int, msgspec.Meta(ge=0, le=2**32)] = 0
    gid: Annotated[int, msgspec.Meta(ge=0, le=2**32)] = 0
    user: str = ""
    group: str = ""
    mtime_ns: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0
    size: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0
    inode: _Count = 0
    device: _Count = 0
    nlink: _Count = 1
    rdev: _Count = 0
    content: list[WireId] = msgspec.field(default_factory=list)
    subtree: WireId | None = None
    target: bytes = b""
    xattrs: list[tuple[bytes, bytes]] = msgspec.field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "n": self.name,
            "t": self.type,
            "m": self.mode,
            "u": self.uid,
            "g": self.gid,
            "un": self.user,
            "gn": self.group,
            "mt": wire_time(self.mtime_ns),
            "at": wire_time(self.atime_ns),
            "ct": wire_time(self.ctime_ns),
            "s": self.size,
            "i": self.inode,
            "d": self.device,
            "l": self.nlink,
        }
        if self.rdev:
            d["r"] = self.rdev
        if self.type == "file":
            d["c"] = self.content
        if self.subtree is not None:
            d["st"] = self.subtree
        if self.type == "symlink":
            d["tg"] = self.target
        if self.xattrs:
            d["x"] = [[k, v] for k, v in self.xattrs]
        return d

    @classmethod
    def from_wire(cls, raw: Any) -> Node:
        d = want_map(raw, "tree node")
        name = want(d.get("n"), bytes, "node name")
        if not name or len(name) > MAX_NAME:
            raise FormatError(_("node name: invalid length"))
        ntype = d.get("t")
        if ntype not in NODE_TYPES:
            raise FormatError(_("node type: unknown"))
        node = cls(
            name=name,
            type=ntype,
            mode=want_int(d.get("m", 0), "mode", 0, 0o7777),
            uid=want_int(d.get("u", 0), "uid", 0, 2**32),
            gid=want_int(d.get("g", 0), "gid", 0, 2**32),
            user=want(d.get("un", ""), str, "user"),
            group=want(d.get("gn", ""), str, "group"),
            mtime_ns=want_time(d.get("mt", 0), "mtime"),
            atime_ns=want_time(d.get("at", 0), "atime"),
            ctime_ns=want_time(d.get("ct", 0), "ctime"),
            size=want_int(d.get("s", 0), "size"),
            inode=want_int(d.get("i", 0), "inode", 0, 2**64),
            device=want_int(d.get("d", 0), "device", 0, 2**64),
            nlink=want_int(d.get("l", 1), "nlink", 0, 2**64),
            rdev=want_int(d.get("r", 0), "rdev", 0, 2**64),
        )
        if ntype == "file":
            content = want(d.get("c", []), list, "content")
            node.content = [want_id(c, "content id") for c in content]
        if ntype == "dir":
            node.subtree = want_id(d.get("st"), "subtree id")
        if ntype == "symlink":
            node.target = want(d.get("tg", b""), bytes, "symlink target")
        xattrs = want(d.get("x", []), list, "xattrs")
        for pair in xattrs:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise FormatError(_("xattr: malformed"))
            node.xattrs.append((want(pair[0], bytes, "xattr"), want(pair[1], bytes, "xattr")))
        return node


def validate_name(name: bytes) -> None:
    """A name that is safe to create inside a directory: no separator, no '.' or '..'."""
    if name in (b".", b"..") or b"/" in name or b"\0" in name or not name:
        raise FormatError(_("unsafe file name in snapshot: {name}").format(name=repr(name)))


def encode_tree(nodes: list[Node]) -> bytes:
    ordered = sorted(nodes, key=lambda n: n.name)
    return encode({"v": 1, "nodes": [n.to_wire() for n in ordered]})


class _Tree(msgspec.Struct):
    v: Literal[1]
    nodes: list[Node]


_decoder = msgspec.msgpack.Decoder(_Tree)


def decode_tree(data: bytes) -> list[Node]:
    if len(data) <= MAX_OBJECT:
        try:
            nodes = _decoder.decode(data).nodes
        except msgspec.DecodeError:
            pass
        else:
            # Fields a node's type ignores are typed alike, but from_wire leaves them out.
            if all(n.type in NODE_TYPES and (n.type == "file" or not n.content)
                   and (n.type == "dir") == (n.subtree is not None) and (n.type == "symlink" or not n.target)
                   for n in nodes):
                return nodes
    d = want_map(decode(data, "tree"), "tree")
    if d.get("v") != 1:
        raise FormatError(_("tree: unknown version"))
    return [Node.from_wire(n) for n in want(d.get("nodes"), list, "tree nodes")]
