"""Compress: zstd for data that compresses, stored as is otherwise; bounded decompression;
zstd deltas (a chunk compressed with an older chunk's content as a raw dictionary)."""

from __future__ import annotations

import functools
import importlib
import threading
from typing import Any

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
    binding = _zstd_binding()
    if binding is not None:
        return _prefix_compressor(*binding).compress(data, base, level)
    dictionary = zstandard.ZstdCompressionDict(base, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return zstandard.ZstdCompressor(
        level=level, dict_data=dictionary, write_content_size=True, write_dict_id=False
    ).compress(data)


# Why a context of zstd's own per thread, through python-zstandard's cffi binding of zstd's API:
# its compressor binds a dictionary for its lifetime, so a delta needed a new compressor and a
# digested dictionary each time, four times the cost of the compression itself (a day's 876
# changed 256 KiB blocks of a 240 MB database: 0.53 s, against 0.11 s here). zstd's "prefix"
# is the same raw content, referenced for one frame without being digested, and the frame it
# gives decodes with the base as a raw-content dictionary (decompress_delta). Where the binding
# is missing, the compressor above gives frames of the same meaning. The packer decodes every
# delta it stores and compares it with the chunk either way.
_BINDING_NEEDS = ("ZSTD_createCCtx", "ZSTD_freeCCtx", "ZSTD_CCtx_reset", "ZSTD_CCtx_setParameter",
                  "ZSTD_CCtx_refPrefix", "ZSTD_compress2", "ZSTD_compressBound", "ZSTD_isError",
                  "ZSTD_getErrorName")


@functools.cache
def _zstd_binding() -> tuple[Any, Any] | None:
    """(ffi, lib) of python-zstandard's cffi backend, or None if it is not there."""
    try:
        backend = importlib.import_module("zstandard.backend_cffi")
    except ImportError:
        return None
    ffi, lib = getattr(backend, "ffi", None), getattr(backend, "lib", None)
    if ffi is None or not all(hasattr(lib, name) for name in _BINDING_NEEDS):
        return None
    return ffi, lib


def _prefix_compressor(ffi: Any, lib: Any) -> _PrefixCompressor:
    comp: _PrefixCompressor | None = getattr(_local, "prefix", None)
    if comp is None:
        comp = _local.prefix = _PrefixCompressor(ffi, lib)
    return comp


class _PrefixCompressor:
    """One thread's zstd compression context and output buffer, kept from delta to delta."""

    def __init__(self, ffi: Any, lib: Any) -> None:
        self.ffi, self.lib = ffi, lib
        self.cctx = ffi.gc(lib.ZSTD_createCCtx(), lib.ZSTD_freeCCtx)
        self.alloc = ffi.new_allocator(should_clear_after_alloc=False)  # zstd writes what is read
        self.out = self.alloc("char[]", 1)

    def compress(self, data: bytes, base: bytes, level: int) -> bytes:
        ffi, lib, cctx = self.ffi, self.lib, self.cctx
        bound = self._check(lib.ZSTD_compressBound(len(data)))
        if bound > len(self.out):
            self.out = self.alloc("char[]", bound)
        self._check(lib.ZSTD_CCtx_reset(cctx, lib.ZSTD_reset_session_and_parameters))
        self._check(lib.ZSTD_CCtx_setParameter(cctx, lib.ZSTD_c_compressionLevel, level))
        self._check(lib.ZSTD_CCtx_setParameter(cctx, lib.ZSTD_c_contentSizeFlag, 1))
        prefix = ffi.from_buffer(base)  # referenced by the context until the frame is made
        self._check(lib.ZSTD_CCtx_refPrefix(cctx, prefix, len(base)))
        out = self.out
        size = self._check(lib.ZSTD_compress2(cctx, out, len(out), ffi.from_buffer(data), len(data)))
        return bytes(ffi.buffer(out, size))

    def _check(self, code: int) -> int:
        if self.lib.ZSTD_isError(code):
            name = self.ffi.string(self.lib.ZSTD_getErrorName(code)).decode("ascii", "replace")
            raise zstandard.ZstdError(f"zstd delta compression failed: {name}")
        return code


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


def delta_declared_length(payload: bytes | memoryview) -> int:
    """The content size a delta's zstd frame declares in its header (every delta Coffre
    writes declares it), read without the base; raises FormatError if it is not a frame."""
    try:
        return int(zstandard.frame_content_size(payload))
    except zstandard.ZstdError as exc:
        raise FormatError(_("delta blob is not a zstd frame: {error}").format(error=exc)) from None


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
