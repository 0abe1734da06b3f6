"""Snapshots: the commit record of a backup, written last."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coffre.core.errors import FormatError
from coffre.format.codec import decode, encode, want, want_id, want_int, want_map


@dataclass
class Snapshot:
    time_ns: int
    hostname: str
    username: str
    paths: list[str]
    tree: bytes
    tags: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    summary: dict[str, int] = field(default_factory=dict)
    program: str = ""
    parent: str = ""  # the snapshot whose files served as delta bases, if any
    original: str = ""  # for a copy (coffre copy): the id of the snapshot it was copied from
    id: str = ""  # the storage name; not part of the encoding

    def to_bytes(self) -> bytes:
        return encode(
            {
                "v": 1,
                "time": self.time_ns,
                "hostname": self.hostname,
                "username": self.username,
                "paths": self.paths,
                "tags": self.tags,
                "excludes": self.excludes,
                "tree": self.tree,
                "summary": self.summary,
                "program": self.program,
                "parent": self.parent,
                **({"original": self.original} if self.original else {}),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, snap_id: str) -> Snapshot:
        d: dict[str, Any] = want_map(decode(data, "snapshot"), "snapshot")
        if d.get("v") != 1:
            raise FormatError("snapshot: unknown version")
        summary = want_map(d.get("summary", {}), "snapshot summary")
        for k, v in summary.items():
            want_int(v, f"summary {k}")
        return cls(
            time_ns=want_int(d.get("time"), "snapshot time", -(2**63), 2**63 - 1),
            hostname=want(d.get("hostname"), str, "hostname"),
            username=want(d.get("username", ""), str, "username"),
            paths=[want(p, str, "path") for p in want(d.get("paths"), list, "paths")],
            tags=[want(t, str, "tag") for t in want(d.get("tags", []), list, "tags")],
            excludes=[want(t, str, "exclude") for t in want(d.get("excludes", []), list, "x")],
            tree=want_id(d.get("tree"), "snapshot tree"),
            summary=summary,
            program=want(d.get("program", ""), str, "program"),
            parent=want(d.get("parent", ""), str, "parent"),
            original=want(d.get("original", ""), str, "original"),
            id=snap_id,
        )
