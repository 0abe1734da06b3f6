"""Index files: which pack holds which blob. Rebuildable from the pack headers."""

from __future__ import annotations

from coffre.core.errors import FormatError
from coffre.core.i18n import _
from coffre.format.codec import decode, encode, want, want_id
from coffre.format.pack import PACK_SALT_LEN, BlobEntry


def encode_index(packs: dict[bytes, list[BlobEntry]], version: int = 1) -> bytes:
    """Format 1: [pack id, entries] per pack; format 2: [pack id, entries, pack salt]."""
    if version < 2:
        wire = [[pid, [e.to_wire() for e in entries]] for pid, entries in packs.items()]
    else:
        wire = [[pid, [e.to_wire() for e in entries], _salt(entries)] for pid, entries in packs.items()]
    return encode({"v": version, "packs": wire})


def _salt(entries: list[BlobEntry]) -> bytes:
    salts = {e.salt for e in entries}
    if len(salts) != 1 or None in salts:
        raise ValueError("a format-2 pack's entries must share one pack salt")
    return salts.pop()  # type: ignore[return-value]


def decode_index(data: bytes, version: int = 1) -> dict[bytes, list[BlobEntry]]:
    """An index file of a repository of this format version."""
    d = decode(data, "index")
    if not isinstance(d, dict) or d.get("v") != version:
        raise FormatError(_("index: unknown version"))
    out: dict[bytes, list[BlobEntry]] = {}
    for item in want(d.get("packs"), list, "index packs"):
        if not isinstance(item, list) or len(item) != (2 if version < 2 else 3):
            raise FormatError(_("index: malformed pack entry"))
        pid = want_id(item[0], "pack id")
        salt = None
        if version >= 2:
            salt = item[2]
            if not isinstance(salt, bytes) or len(salt) != PACK_SALT_LEN:
                raise FormatError(_("index: malformed pack salt"))
        out[pid] = [BlobEntry.from_wire(e, salt) for e in want(item[1], list, "index blobs")]
    return out
