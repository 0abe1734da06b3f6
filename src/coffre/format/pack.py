"""Pack files: encrypted blobs back to back, then the encrypted header, then its length.

Format 1:  blob_0 | blob_1 | ... | header envelope | u32 LE header envelope length
Format 2:  blob_0 | blob_1 | ... | sealed header | pack salt (16) | u32 LE sealed header length

In format 2 every blob and the header are sealed under the pack's own key (crypto/aead.py),
a blob's plaintext is padded (`pad`: Padmé) so its stored size tells little of the chunk's,
and the blobs are stored in a random order.

The header lists (kind, id, offset, length, raw_length[, base]) for every blob, so an index can
be rebuilt from the packs alone. A blob's plaintext is one codec byte then the payload. A delta
blob (codec 2) also names its base: a data blob that is not itself a delta, whose raw content
is the zstd dictionary the delta was compressed with (docs/design.md §3).
"""

from __future__ import annotations

import struct
from typing import Annotated, Literal

import msgspec

from coffre.core.errors import FormatError
from coffre.core.i18n import _
from coffre.format.codec import ID_LEN, MAX_OBJECT, WireId, decode, encode, want, want_id, want_int

MAX_BLOB_RAW = 16 * 1024 * 1024  # data blobs: chunks are at most 4 MiB
# A tree lists one folder: ~150 bytes an entry, so this allows folders of ~1.5 million entries.
MAX_TREE_RAW = 224 * 1024 * 1024


def max_raw(kind: int) -> int:
    return MAX_TREE_RAW if kind == 2 else MAX_BLOB_RAW
MAX_PACK = 1024 * 1024 * 1024
PACK_SALT_LEN = 16  # format 2: the salt of the pack key, as crypto/aead.py draws it
TRAILER = struct.Struct("<I")
MAX_HEADER = 64 * 1024 * 1024


class BlobEntry(msgspec.Struct, frozen=True, gc=False):
    """Where a blob lies in its pack, and what it is. A frozen msgspec Struct rather than a
    dataclass: an index builds one per blob at the start of most commands (55,000 after a
    year of the bench's pharmacy), and a Struct is made in C, ~7 times as fast as a frozen
    dataclass's slots set one by one. It holds only ints, bytes and None, so it can never be
    part of a reference cycle and the garbage collector need not track it (gc=False). Its
    constructor checks nothing: entries read from storage go through from_wire or the quick
    decoder."""

    kind: int
    id: bytes
    offset: int
    length: int
    raw_length: int
    base: bytes | None = None  # delta blobs only: the blob whose content is the dictionary
    salt: bytes | None = None  # format 2: the salt of the pack key the blob is sealed under

    def to_wire(self) -> list[object]:
        """[kind, id, offset, length, raw_length(, base)], as headers and indexes store it
        (`wires` makes many at once)."""
        return list(wires([self])[0])

    @classmethod
    def from_wire(cls, raw: object, salt: bytes | None = None) -> BlobEntry:
        # The common cases, a plain blob and a delta (most of a database's blocks), are checked
        # in one expression.
        if type(raw) is list and len(raw) == 5:
            kind, blob_id, offset, length, raw_length = raw
            base, plain = None, True
        elif type(raw) is list and len(raw) == 6:
            kind, blob_id, offset, length, raw_length, base = raw
            plain = False
        else:
            kind = None
        if (type(kind) is int and 1 <= kind <= 2 and type(blob_id) is bytes and len(blob_id) == ID_LEN
                and type(offset) is int and 0 <= offset <= MAX_PACK
                and type(length) is int and 1 <= length <= _MAX_STORED[kind]
                and type(raw_length) is int and 0 <= raw_length <= _MAX_RAW[kind]
                and (plain or (kind == 1 and type(base) is bytes and len(base) == ID_LEN
                               and base != blob_id))):
            return cls(kind, blob_id, offset, length, raw_length, base, salt)
        # Anything else (a malformed entry) goes through each check with its message.
        if not isinstance(raw, list) or len(raw) not in (5, 6):
            raise FormatError(_("blob entry: malformed"))
        kind = want_int(raw[0], "blob kind", 1, 2)
        base = None
        if len(raw) == 6:
            if kind != 1:
                raise FormatError(_("blob entry: only data blobs can be deltas"))
            base = want_id(raw[5], "blob base")
            if base == raw[1]:
                raise FormatError(_("blob entry: a blob cannot be its own base"))
        return cls(
            kind=kind,
            id=want_id(raw[1], "blob id"),
            offset=want_int(raw[2], "blob offset", 0, MAX_PACK),
            length=want_int(raw[3], "blob length", 1, max_stored(kind)),
            raw_length=want_int(raw[4], "blob raw length", 0, max_raw(kind)),
            base=base,
            salt=salt,
        )


def max_stored(kind: int) -> int:
    """The largest stored form of a blob: its content stored uncompressed, padded (Padmé adds
    at most 1/32 above 64 KiB), and sealed."""
    return max_raw(kind) + max_raw(kind) // 16 + 1024


def moved(entry: BlobEntry, offset: int) -> BlobEntry:
    """The same entry at another offset (a pack's blobs shuffled)."""
    return BlobEntry(entry.kind, entry.id, offset, entry.length, entry.raw_length, entry.base, entry.salt)


def spans(entries: list[BlobEntry], size: int, limit: int) -> list[tuple[int, int, list[BlobEntry]]]:
    """A pack of `size` bytes cut into consecutive spans covering it all, each of at most
    `limit` bytes, with the blobs that lie in it. A blob is never cut: one larger than `limit`
    has a span of its own, as have blobs that overlap one another. The bytes between and after the blobs
    (the header) are cut every `limit` bytes. An entry that does not lie within the pack
    goes with the last span (where it does not fit: it is damaged)."""
    inside = sorted((e for e in entries if e.offset + e.length <= size), key=lambda e: e.offset)
    out: list[tuple[int, int, list[BlobEntry]]] = []
    cut, reach = 0, 0  # where the current span starts; the end of the blobs met so far
    group: list[BlobEntry] = []

    def bytes_alone(stop: int) -> None:
        """Spans of at most `limit` from `cut` to `stop`, no blob in them."""
        nonlocal cut
        while stop - cut > limit:
            out.append((cut, cut + limit, []))
            cut += limit

    for e in inside:
        if group and e.offset >= reach and e.offset + e.length - cut > limit:
            # A cut falls only where no blob before reaches past it.
            out.append((cut, reach, group))
            cut, group = reach, []
        if not group:
            bytes_alone(e.offset)
            if cut < e.offset and e.offset + e.length - cut > limit:
                out.append((cut, e.offset, []))
                cut = e.offset
        group.append(e)
        reach = max(reach, e.offset + e.length)
    if group and size - cut > limit:
        out.append((cut, reach, group))
        cut, group = reach, []
    bytes_alone(size)
    group += [e for e in entries if e.offset + e.length > size]
    out.append((cut, size, group))
    return out


_MAX_STORED = {kind: max_stored(kind) for kind in (1, 2)}
_MAX_RAW = {kind: max_raw(kind) for kind in (1, 2)}


_astuple = msgspec.structs.astuple


def wires(entries: list[BlobEntry]) -> list[tuple[object, ...]]:
    """Each entry as stored (`BlobEntry.to_wire`), made in C but for the loop: a prune writes a
    year's index, 55,000 entries, at once."""
    return [t[:5] if t[5] is None else t[:6] for t in map(_astuple, entries)]


def encode_header(entries: list[BlobEntry], version: int = 1) -> bytes:
    return encode({"v": version, "blobs": wires(entries)})


# -- the quick decoder ------------------------------------------------------------------------
# Most commands start by loading the whole index, one entry per blob, and prune and check read
# pack headers by the hundred: msgspec decodes and checks entries in C, each kind of blob a
# tagged array (its first element, the kind, selects the bounds), in about half the time of
# MessagePack into lists checked by from_wire. It accepts only what from_wire accepts; what it
# refuses (damage, or forms such as a bool for a version) is decoded again by from_wire, which
# accepts the rare forms and words the error (format/tree.py does the same for trees).
_Offset = Annotated[int, msgspec.Meta(ge=0, le=MAX_PACK)]
_DATA_STORED, _DATA_RAW = _MAX_STORED[1], _MAX_RAW[1]
_TREE_STORED, _TREE_RAW = _MAX_STORED[2], _MAX_RAW[2]


class DataWire(msgspec.Struct, array_like=True, tag=1, forbid_unknown_fields=True):
    """A data blob's entry as stored: [1, id, offset, length, raw_length(, base)]."""
    id: WireId
    offset: _Offset
    length: Annotated[int, msgspec.Meta(ge=1, le=_DATA_STORED)]
    raw_length: Annotated[int, msgspec.Meta(ge=0, le=_DATA_RAW)]
    base: WireId | msgspec.UnsetType = msgspec.UNSET


class TreeWire(msgspec.Struct, array_like=True, tag=2, forbid_unknown_fields=True):
    """A tree blob's entry as stored: [2, id, offset, length, raw_length]."""
    id: WireId
    offset: _Offset
    length: Annotated[int, msgspec.Meta(ge=1, le=_TREE_STORED)]
    raw_length: Annotated[int, msgspec.Meta(ge=0, le=_TREE_RAW)]


def entries_from_wires(wires: list[DataWire | TreeWire], salt: bytes | None) -> list[BlobEntry] | None:
    """The entries msgspec decoded; None if a delta names itself as its base (from_wire words
    the error)."""
    out: list[BlobEntry] = []
    append = out.append
    unset = msgspec.UNSET
    entry = BlobEntry
    for w in wires:
        if type(w) is DataWire:
            base = w.base
            if base is unset:
                append(entry(1, w.id, w.offset, w.length, w.raw_length, None, salt))
            elif base != w.id:
                append(entry(1, w.id, w.offset, w.length, w.raw_length, base, salt))
            else:
                return None
        else:
            append(entry(2, w.id, w.offset, w.length, w.raw_length, None, salt))
    return out


class _Header(msgspec.Struct):
    v: Literal[1, 2]
    blobs: list[DataWire | TreeWire]


_header_decoder = msgspec.msgpack.Decoder(_Header)


def decode_header(data: bytes, pack_size: int, salt: bytes | None = None) -> list[BlobEntry]:
    """A pack's header: format 1 (salt None) or format 2 (the salt from its trailer)."""
    entries = _quick_header(data, salt)
    if entries is None:
        entries = _checked_header(data, salt)
    for e in entries:
        if e.offset + e.length > pack_size:
            raise FormatError(_("pack header: blob outside the pack"))
    return entries


def _checked_header(data: bytes, salt: bytes | None) -> list[BlobEntry]:
    d = decode(data, "pack header")
    if not isinstance(d, dict) or d.get("v") != (1 if salt is None else 2):
        raise FormatError(_("pack header: unknown version"))
    return [BlobEntry.from_wire(e, salt) for e in want(d.get("blobs"), list, "pack blobs")]


def _quick_header(data: bytes, salt: bytes | None) -> list[BlobEntry] | None:
    if len(data) > MAX_OBJECT:
        return None
    try:
        header = _header_decoder.decode(data)
    except msgspec.DecodeError:
        return None
    if header.v != (1 if salt is None else 2):
        return None
    return entries_from_wires(header.blobs, salt)


def trailer_size(version: int) -> int:
    return TRAILER.size + (PACK_SALT_LEN if version >= 2 else 0)


def split_trailer(tail: bytes, pack_size: int, version: int = 1) -> int:
    """Length of the header envelope, read from the end of the pack."""
    size = trailer_size(version)
    if len(tail) < size:
        raise FormatError(_("pack too short"))
    (length,) = TRAILER.unpack(tail[-TRAILER.size :])
    if length + size > pack_size or length == 0 or length > MAX_HEADER:
        raise FormatError(_("pack trailer: header length out of range"))
    return int(length)


def trailer_salt(tail: bytes) -> bytes:
    """The pack salt of a format-2 pack, from its last bytes (split_trailer checked them)."""
    return bytes(tail[-TRAILER.size - PACK_SALT_LEN : -TRAILER.size])


def trailer(header_length: int, salt: bytes | None) -> bytes:
    return (salt or b"") + TRAILER.pack(header_length)


# -- format 2: padded blob plaintexts ------------------------------------------------------------
# A blob's plaintext is u32 LE length of its body (codec byte and payload) | body | zeros, the
# whole padded to padme(4 + length): the stored size then reveals about log2(log2(size)) bits
# instead of every byte of the chunk's compressed length, for at most 1/32 more bytes above
# 64 KiB (Nikitin et al., "Reducing metadata leakage from encrypted files", PETS 2019).
BODY_LENGTH = struct.Struct("<I")


def padme(n: int) -> int:
    if n < 2:
        return n
    e = n.bit_length() - 1
    low_bits = e - e.bit_length()
    mask = (1 << low_bits) - 1
    return (n + mask) & ~mask


def padded_size(body_length: int) -> int:
    return padme(BODY_LENGTH.size + body_length)


def pad(body: bytes | memoryview) -> bytes:
    zeros = padded_size(len(body)) - BODY_LENGTH.size - len(body)
    return b"".join((BODY_LENGTH.pack(len(body)), body, bytes(zeros)))


def unpad(plain: bytes) -> bytes:
    """The body of a padded plaintext; FormatError unless it is exactly as pad() makes it."""
    return bytes(unpad_view(plain))


def unpad_view(plain: bytes) -> memoryview:
    """unpad(), as a view into `plain` rather than a copy: a restore reads every blob once."""
    if len(plain) < BODY_LENGTH.size:
        raise FormatError(_("blob is too short to hold its length"))
    (n,) = BODY_LENGTH.unpack_from(plain)
    end = BODY_LENGTH.size + n
    if end > len(plain) or padme(end) != len(plain) or plain.count(0, end) != len(plain) - end:
        raise FormatError(_("blob padding is malformed"))
    return memoryview(plain)[BODY_LENGTH.size : end]
