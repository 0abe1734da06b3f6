"""Index files: which pack holds which blob. Rebuildable from the pack headers."""

from __future__ import annotations

from coffre.core.errors import FormatError
from coffre.format.codec import decode, encode, want, want_id
from coffre.format.pack import BlobEntry


def encode_index(packs: dict[bytes, list[BlobEntry]]) -> bytes:
    return encode(
        {"v": 1, "packs": [[pid, [e.to_wire() for e in entries]] for pid, entries in packs.items()]}
    )


def decode_index(data: bytes) -> dict[bytes, list[BlobEntry]]:
    d = decode(data, "index")
    if not isinstance(d, dict) or d.get("v") != 1:
        raise FormatError("index: unknown version")
    out: dict[bytes, list[BlobEntry]] = {}
    for item in want(d.get("packs"), list, "index packs"):
        if not isinstance(item, list) or len(item) != 2:
            raise FormatError("index: malformed pack entry")
        pid = want_id(item[0], "pack id")
        out[pid] = [BlobEntry.from_wire(e) for e in want(item[1], list, "index blobs")]
    return out
