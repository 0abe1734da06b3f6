"""Segments: pieces of a database's continuous log (PostgreSQL WAL segments and timeline
history files, SQLite WAL frames, MariaDB binary logs), one self-contained object each.

Stored bytes (kind `segments/`, named by their SHA-256 like every object):

    u32 big-endian: length of the header envelope
    header envelope: encrypted (KIND_SEGMENT_HEADER) encoding of SegmentHeader
    payload envelope: encrypted (KIND_SEGMENT, bound to the header's SHA-256) compressed log bytes

The header comes first so that a listing learns every segment's place with one short read
per object; the payload is bound to its header, so a payload cannot be moved under another
header. A segment never refers to packs or to the index: retention deletes whole objects.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

from coffre.core.errors import FormatError, IntegrityError
from coffre.core.i18n import _
from coffre.format.codec import decode, encode, want, want_int, want_map

SEGMENT_ENGINES = ("postgres", "sqlite", "mysql")
# What a segment holds: a log piece, a timeline's history (PostgreSQL), a whole copy that
# starts a generation (SQLite), or the record of pieces lost before they could be stored.
SEGMENT_KINDS = ("log", "history", "base", "gap")
HEADER_PREFIX = struct.Struct(">I")
MAX_HEADER = 16 * 1024  # a header envelope's largest size; a listing reads this much at most
MAX_PAYLOAD = 1024 * 1024 * 1024 + 64 * 1024  # PostgreSQL's largest segment, compressed or not
FIRST_READ = HEADER_PREFIX.size + MAX_HEADER
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass
class SegmentHeader:
    """Where a segment belongs. `stream` names one log that can be replayed in order (a
    PostgreSQL cluster's system identifier, a SQLite database's generation, a MariaDB
    server); `start` and `end` are positions in it ([start, end), engine-defined ints, e.g.
    LSNs); `name` is the engine's own name for the piece (PostgreSQL asks for it by name)."""

    stream: str
    engine: str  # one of SEGMENT_ENGINES
    kind: str  # one of SEGMENT_KINDS
    name: str
    start: int
    end: int
    time_ns: int  # when the piece was captured (the capturing machine's clock)
    size: int  # bytes of the log piece itself
    sha256: str  # of the log piece itself (hex)
    codec: int = 0  # compress's codec of the stored payload
    extra: dict[str, str] = field(default_factory=dict)

    def to_map(self) -> dict[str, Any]:
        return {"v": 1, "stream": self.stream, "engine": self.engine, "kind": self.kind, "name": self.name,
                "start": self.start, "end": self.end, "time": self.time_ns, "size": self.size,
                "sha256": self.sha256, "codec": self.codec, "extra": self.extra}

    @classmethod
    def from_map(cls, d: Any) -> SegmentHeader:
        d = want_map(d, "segment")
        if d.get("v") != 1:
            raise FormatError(_("segment: unknown version"))
        engine = want(d.get("engine"), str, "segment engine")
        kind = want(d.get("kind"), str, "segment kind")
        if engine not in SEGMENT_ENGINES or kind not in SEGMENT_KINDS:
            raise FormatError(_("segment: unknown engine or kind"))
        sha = want(d.get("sha256"), str, "segment hash")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise FormatError(_("segment: invalid hash"))
        name = want(d.get("name"), str, "segment name")
        if not name or len(name) > 255 or "/" in name or "\0" in name or name.startswith("."):
            raise FormatError(_("segment: invalid name"))
        extra = want_map(d.get("extra", {}), "segment extra")
        header = cls(
            stream=want(d.get("stream"), str, "segment stream"), engine=engine, kind=kind, name=name,
            start=want_int(d.get("start"), "segment start"), end=want_int(d.get("end"), "segment end"),
            time_ns=want_int(d.get("time"), "segment time", -(2**63), 2**63 - 1),
            size=want_int(d.get("size"), "segment size", 0, MAX_PAYLOAD), sha256=sha,
            codec=want_int(d.get("codec", 0), "segment codec", 0, 255),
            extra={want(k, str, "extra"): want(v, str, "extra value") for k, v in extra.items()},
        )
        if header.end < header.start or not 0 < len(header.stream) <= 200:
            raise FormatError(_("segment: invalid position or stream"))
        return header

    def as_gap(self, reason: str) -> SegmentHeader:
        """The record that this piece is lost (`reason`: why, in English, for the logs)."""
        return SegmentHeader(stream=self.stream, engine=self.engine, kind="gap", name=self.name,
                             start=self.start, end=self.end, time_ns=self.time_ns, size=0,
                             sha256=EMPTY_SHA256, extra={**self.extra, "reason": reason})

    def to_bytes(self) -> bytes:
        return encode(self.to_map())

    @classmethod
    def from_bytes(cls, data: bytes) -> SegmentHeader:
        return cls.from_map(decode(data, "segment"))


def split(stored: bytes | memoryview) -> tuple[memoryview, memoryview]:
    """(header envelope, payload envelope) of a stored segment; the payload is empty when
    `stored` is only the object's first bytes."""
    view = memoryview(stored)
    if len(view) < HEADER_PREFIX.size:
        raise IntegrityError(_("segment too short"))
    (length,) = HEADER_PREFIX.unpack_from(view)
    if not 0 < length <= MAX_HEADER or len(view) < HEADER_PREFIX.size + length:
        raise IntegrityError(_("segment header has an impossible length"))
    end = HEADER_PREFIX.size + length
    return view[HEADER_PREFIX.size:end], view[end:]


def join(header_envelope: bytes, payload_envelope: bytes) -> bytes:
    if len(header_envelope) > MAX_HEADER:
        raise FormatError(_("segment header too large"))
    return HEADER_PREFIX.pack(len(header_envelope)) + header_envelope + payload_envelope


def header_digest(header_plain: bytes) -> bytes:
    """What binds a payload to its header (the payload envelope's associated object id)."""
    return hashlib.sha256(header_plain).digest()
