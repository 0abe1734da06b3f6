"""Canonical MessagePack encoding (no pickle) with bounded, validated decoding."""

from __future__ import annotations

from typing import Annotated, Any

import msgpack
import msgspec

from coffre.core.errors import FormatError
from coffre.core.i18n import _

MAX_OBJECT = 256 * 1024 * 1024


ID_LEN = 32  # every id: keyed BLAKE3 of blobs, SHA-256 of stored objects
# A blob, tree or pack id in the structs msgspec decodes (trees, index files, pack headers).
WireId = Annotated[bytes, msgspec.Meta(min_length=ID_LEN, max_length=ID_LEN)]

# msgspec writes the same bytes as msgpack.packb(obj, use_bin_type=True) (the smallest form of
# each int, bin for bytes, str for text), in about half the time: a prune writes a year's
# index, ~55,000 entries, and check sizes every pack's header from its index entries.
_encode = msgspec.msgpack.Encoder().encode


def encode(obj: Any) -> bytes:
    return _encode(obj)


def decode(data: bytes | memoryview, what: str) -> Any:
    if len(data) > MAX_OBJECT:
        raise FormatError(_("{field}: object too large").format(field=what))
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True
        )
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise FormatError(_("{field}: malformed ({error})").format(
            field=what, error=type(exc).__name__)) from None


def want(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and kind is int:
        raise FormatError(_("{field}: expected {kind}").format(field=what, kind=kind))
    if not isinstance(value, kind):
        raise FormatError(_("{field}: expected {kind}").format(
            field=what, kind=getattr(kind, "__name__", kind)))
    return value


def want_int(value: Any, what: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise FormatError(_("{field}: invalid integer").format(field=what))
    return value


# Times are ns since the epoch. A MessagePack integer holds -2**63 .. 2**64 - 1 ns (years 1677
# to 2554); a time beyond is [seconds, nanoseconds] with int64 seconds, which holds any time a
# file system can (time_t is 64 bits). Times that fit keep the plain integer every earlier
# version wrote, so trees of unchanged folders keep their bytes and their ids.
NS = 1_000_000_000
INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def wire_time(ns: int) -> int | list[int]:
    if INT64_MIN <= ns <= UINT64_MAX:
        return ns
    seconds, nanos = divmod(ns, NS)
    if not INT64_MIN <= seconds <= INT64_MAX:
        raise FormatError(_("time {ns} ns is out of range (more than 2**63 seconds)").format(ns=ns))
    return [seconds, nanos]


def want_time(value: Any, what: str) -> int:
    if isinstance(value, list) and len(value) == 2:
        seconds = want_int(value[0], what, INT64_MIN, INT64_MAX)
        return seconds * NS + want_int(value[1], what, 0, NS - 1)
    return want_int(value, what, INT64_MIN, UINT64_MAX)


def want_id(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != ID_LEN:
        raise FormatError(_("{field}: invalid id").format(field=what))
    return value


def want_map(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FormatError(_("{field}: expected a map").format(field=what))
    return value
