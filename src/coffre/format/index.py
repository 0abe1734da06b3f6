"""Index files: which pack holds which blob. Rebuildable from the pack headers."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from coffre.core.errors import FormatError
from coffre.core.i18n import _
from coffre.format.codec import MAX_OBJECT, WireId, decode, encode, want, want_id
from coffre.format.pack import (
    PACK_SALT_LEN,
    BlobEntry,
    DataWire,
    TreeWire,
    entries_from_wires,
    wires,
)


def encode_index(packs: dict[bytes, list[BlobEntry]], version: int = 1) -> bytes:
    """Format 1: [pack id, entries] per pack; format 2: [pack id, entries, pack salt]."""
    if version < 2:
        wire = [[pid, wires(entries)] for pid, entries in packs.items()]
    else:
        wire = [[pid, wires(entries), _salt(entries)] for pid, entries in packs.items()]
    return encode({"v": version, "packs": wire})


def _salt(entries: list[BlobEntry]) -> bytes:
    salts = {e.salt for e in entries}
    if len(salts) != 1 or None in salts:
        raise ValueError("a format-2 pack's entries must share one pack salt")
    return salts.pop()  # type: ignore[return-value]


def decode_index(data: bytes, version: int = 1) -> dict[bytes, list[BlobEntry]]:
    """An index file of a repository of this format version. msgspec decodes it in C
    (format/pack.py, "the quick decoder", says why); what it refuses is decoded again entry by
    entry, which words the error."""
    packs = _quick(data, version)
    return packs if packs is not None else _checked(data, version)


class _Pack1(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    id: WireId
    blobs: list[DataWire | TreeWire]


class _Pack2(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    id: WireId
    blobs: list[DataWire | TreeWire]
    salt: Annotated[bytes, msgspec.Meta(min_length=PACK_SALT_LEN, max_length=PACK_SALT_LEN)]


class _Index1(msgspec.Struct):
    v: Literal[1]
    packs: list[_Pack1]


class _Index2(msgspec.Struct):
    v: Literal[2]
    packs: list[_Pack2]


_decoder_1, _decoder_2 = msgspec.msgpack.Decoder(_Index1), msgspec.msgpack.Decoder(_Index2)


def _quick(data: bytes, version: int) -> dict[bytes, list[BlobEntry]] | None:
    if version not in (1, 2) or len(data) > MAX_OBJECT:
        return None
    try:
        index: _Index1 | _Index2 = (_decoder_1 if version == 1 else _decoder_2).decode(data)
    except msgspec.DecodeError:
        return None
    out: dict[bytes, list[BlobEntry]] = {}
    for pack in index.packs:
        entries = entries_from_wires(pack.blobs, pack.salt if isinstance(pack, _Pack2) else None)
        if entries is None:
            return None
        out[pack.id] = entries
    return out


def _checked(data: bytes, version: int) -> dict[bytes, list[BlobEntry]]:
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
