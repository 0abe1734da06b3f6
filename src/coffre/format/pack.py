"""Pack files: encrypted blobs back to back, then the encrypted header, then its length.

    blob_0 | blob_1 | ... | header envelope | u32 little-endian header envelope length

The header lists (kind, id, offset, length, raw_length[, base]) for every blob, so an index can
be rebuilt from the packs alone. A blob's plaintext is one codec byte then the payload. A delta
blob (codec 2) also names its base: a data blob that is not itself a delta, whose raw content
is the zstd dictionary the delta was compressed with (docs/design.md §3).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from coffre.core.errors import FormatError
from coffre.format.codec import decode, encode, want, want_id, want_int

MAX_BLOB_RAW = 16 * 1024 * 1024  # data blobs: chunks are at most 4 MiB
# A tree lists one folder: ~150 bytes an entry, so this allows folders of ~1.5 million entries.
MAX_TREE_RAW = 224 * 1024 * 1024


def max_raw(kind: int) -> int:
    return MAX_TREE_RAW if kind == 2 else MAX_BLOB_RAW
MAX_PACK = 1024 * 1024 * 1024
TRAILER = struct.Struct("<I")
MAX_HEADER = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BlobEntry:
    kind: int
    id: bytes
    offset: int
    length: int
    raw_length: int
    base: bytes | None = None  # delta blobs only: the blob whose content is the dictionary

    def to_wire(self) -> list[object]:
        wire: list[object] = [self.kind, self.id, self.offset, self.length, self.raw_length]
        if self.base is not None:
            wire.append(self.base)
        return wire

    @classmethod
    def from_wire(cls, raw: object) -> BlobEntry:
        if not isinstance(raw, list) or len(raw) not in (5, 6):
            raise FormatError("blob entry: malformed")
        kind = want_int(raw[0], "blob kind", 1, 2)
        base = None
        if len(raw) == 6:
            if kind != 1:
                raise FormatError("blob entry: only data blobs can be deltas")
            base = want_id(raw[5], "blob base")
            if base == raw[1]:
                raise FormatError("blob entry: a blob cannot be its own base")
        return cls(
            kind=kind,
            id=want_id(raw[1], "blob id"),
            offset=want_int(raw[2], "blob offset", 0, MAX_PACK),
            length=want_int(raw[3], "blob length", 1, max_raw(kind) + 1024),
            raw_length=want_int(raw[4], "blob raw length", 0, max_raw(kind)),
            base=base,
        )


def encode_header(entries: list[BlobEntry]) -> bytes:
    return encode({"v": 1, "blobs": [e.to_wire() for e in entries]})


def decode_header(data: bytes, pack_size: int) -> list[BlobEntry]:
    d = decode(data, "pack header")
    if not isinstance(d, dict) or d.get("v") != 1:
        raise FormatError("pack header: unknown version")
    entries = [BlobEntry.from_wire(e) for e in want(d.get("blobs"), list, "pack blobs")]
    for e in entries:
        if e.offset + e.length > pack_size:
            raise FormatError("pack header: blob outside the pack")
    return entries


def split_trailer(tail: bytes, pack_size: int) -> int:
    """Length of the header envelope, read from the last four bytes of the pack."""
    if len(tail) < TRAILER.size:
        raise FormatError("pack too short")
    (length,) = TRAILER.unpack(tail[-TRAILER.size :])
    if length + TRAILER.size > pack_size or length == 0 or length > MAX_HEADER:
        raise FormatError("pack trailer: header length out of range")
    return int(length)
