"""Compress: zstd for data that compresses, stored as is otherwise; bounded decompression;
zstd deltas (a chunk compressed with an older chunk's content as a raw dictionary)."""

from __future__ import annotations

import threading

import zstandard

from coffre.core.errors import FormatError
from coffre.core.i18n import _

CODEC_NONE = 0
CODEC_ZSTD = 1
CODEC_ZSTD_DELTA = 2
# Level 1 compresses this project's data ~45 % faster than level 3 for ~1 % more bytes
# (../shared/reference/perf-baseline.md §4); deltas use level 3 or more (compress_delta).
DEFAULT_LEVEL = 1
# Keep the compressed form only if it saves at least this share of the bytes.
MIN_SAVING = 0.03

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    key = f"c{level}"
    comp = getattr(_local, key, None)
    if comp is None:
        comp = zstandard.ZstdCompressor(level=level, write_content_size=True)
        setattr(_local, key, comp)
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_local, "d", None)
    if dec is None:
        dec = zstandard.ZstdDecompressor()
        _local.d = dec
    return dec


def compress(data: bytes, level: int = DEFAULT_LEVEL) -> tuple[int, bytes]:
    """(codec, payload). Incompressible data is stored as is."""
    if len(data) < 64:
        return CODEC_NONE, data
    packed = _compressor(level).compress(data)
    if len(packed) <= len(data) * (1 - MIN_SAVING):
        return CODEC_ZSTD, packed
    return CODEC_NONE, data


def compress_delta(data: bytes, base: bytes, level: int = DEFAULT_LEVEL) -> bytes:
    """`data` compressed with `base` as a raw-content dictionary: what `base` already holds
    costs a few bytes per match, so a 4 KiB page changed in one row stores as ~100 bytes."""
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return zstandard.ZstdCompressor(
        level=level, dict_data=dictionary, write_content_size=True, write_dict_id=False
    ).compress(data)


def decompress_delta(payload: bytes | memoryview, base: bytes, raw_length: int) -> bytes:
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    try:
        if zstandard.frame_content_size(payload) > raw_length:
            raise FormatError(_("blob declares a larger size than the index"))
        out = zstandard.ZstdDecompressor(dict_data=dictionary).decompress(
            payload, max_output_size=raw_length
        )
    except zstandard.ZstdError as exc:
        raise FormatError(_("delta blob does not decompress: {error}").format(error=exc)) from None
    if len(out) != raw_length:
        raise FormatError(_("blob length differs from the index"))
    return out


def decompress(codec: int, payload: bytes | memoryview, raw_length: int) -> bytes:
    """Undo compress(); refuses output larger than the length recorded in the index."""
    if codec == CODEC_NONE:
        out = bytes(payload)
    elif codec == CODEC_ZSTD:
        try:
            declared = zstandard.frame_content_size(payload)
            if declared > raw_length:
                raise FormatError(_("blob declares a larger size than the index"))
            out = _decompressor().decompress(payload, max_output_size=raw_length)
        except zstandard.ZstdError as exc:
            raise FormatError(_("blob does not decompress: {error}").format(error=exc)) from None
    else:
        raise FormatError(_("unknown compression codec {codec}").format(codec=codec))
    if len(out) != raw_length:
        raise FormatError(_("blob length differs from the index"))
    return out
