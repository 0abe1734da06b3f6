"""Compress: zstd for data that compresses, stored as is otherwise; bounded decompression."""

from __future__ import annotations

import threading

import zstandard

from coffre.core.errors import FormatError

CODEC_NONE = 0
CODEC_ZSTD = 1
DEFAULT_LEVEL = 3
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


def decompress(codec: int, payload: bytes, raw_length: int) -> bytes:
    """Undo compress(); refuses output larger than the length recorded in the index."""
    if codec == CODEC_NONE:
        out = payload
    elif codec == CODEC_ZSTD:
        try:
            declared = zstandard.frame_content_size(payload)
            if declared > raw_length:
                raise FormatError("blob declares a larger size than the index")
            out = _decompressor().decompress(payload, max_output_size=raw_length)
        except zstandard.ZstdError as exc:
            raise FormatError(f"blob does not decompress: {exc}") from None
    else:
        raise FormatError(f"unknown compression codec {codec}")
    if len(out) != raw_length:
        raise FormatError("blob length differs from the index")
    return out
