"""Packer: gathers encrypted blobs into pack files and records what it wrote.

Every blob is verified after encryption (decrypted, decompressed and re-hashed) before it
joins a pack: a memory fault or a codec bug must not reach the repository.

A changed chunk can be stored as a zstd delta against an older data blob (its base), when
that saves enough over compressing it alone.
"""

from __future__ import annotations

import hashlib
import threading

from coffre.compress import CODEC_ZSTD_DELTA, compress, compress_delta
from coffre.crypto import aead
from coffre.format import pack as packfmt
from coffre.repository.repo import Repository
from coffre.storage.base import Handle

# zstd's fast levels index too little of a large dictionary to find its matches.
MIN_DELTA_LEVEL = 3
# A delta this much smaller than the raw chunk is kept without trying plain compression.
SURE_DELTA = 8
# Otherwise it must beat plain compression by this factor to be worth the dependency.
DELTA_GAIN = 0.8
MIN_DELTA_INPUT = 1024


def pack_size(entries: list[packfmt.BlobEntry]) -> int:
    """The exact size of the pack file holding these blobs."""
    return max((e.offset + e.length for e in entries), default=0) + header_size(entries)


def header_size(entries: list[packfmt.BlobEntry]) -> int:
    """What follows the blobs in a pack listing these blobs: the encrypted header (its length
    does not depend on the order of the blobs) and the trailer."""
    return len(packfmt.encode_header(entries)) + aead.OVERHEAD + packfmt.TRAILER.size


class Packer:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.target = repo.config.pack_size
        self._lock = threading.Lock()
        self._parts: list[bytes] = []
        self._entries: list[packfmt.BlobEntry] = []
        self._size = 0
        # Blobs stored (or being stored) by this packer, so concurrent workers do not
        # store the same new blob twice.
        self._claimed: set[bytes] = set()
        self.written: dict[bytes, list[packfmt.BlobEntry]] = {}
        self.bytes_written = 0
        self.blobs_written = 0
        self.raw_bytes_written = 0
        self.deltas_written = 0

    def claim(self, blob_id: bytes) -> bool:
        """True if the caller should store this blob: not in the index, not claimed yet."""
        if blob_id in self.repo.index:
            return False
        with self._lock:
            if blob_id in self._claimed:
                return False
            self._claimed.add(blob_id)
            return True

    def add(
        self, kind: int, blob_id: bytes, data: bytes, level: int | None = None,
        base: tuple[bytes, bytes] | None = None,
    ) -> bytes | None:
        """Compress (as a delta against `base` = (id, content) when that pays), encrypt,
        verify and add a blob; writes a pack when one is full. Returns the base if a delta
        was stored."""
        level = self.repo.config.compression_level if level is None else level
        plain: bytes | None = None
        if base is not None and len(data) >= MIN_DELTA_INPUT and kind == aead.KIND_DATA:
            delta = compress_delta(data, base[1], max(level, MIN_DELTA_LEVEL))
            if len(delta) * SURE_DELTA <= len(data):
                plain = bytes([CODEC_ZSTD_DELTA]) + base[0] + delta
            else:
                codec, payload = compress(data, level)
                if len(delta) < len(payload) * DELTA_GAIN:
                    plain = bytes([CODEC_ZSTD_DELTA]) + base[0] + delta
                else:
                    plain = bytes([codec]) + payload
        if plain is None:
            codec, payload = compress(data, level)
            plain = bytes([codec]) + payload
        base_id = base[0] if plain[0] == CODEC_ZSTD_DELTA and base is not None else None
        envelope = self.repo.crypter.encrypt(kind, plain, blob_id)
        check = packfmt.BlobEntry(kind, blob_id, 0, len(envelope), len(data), base_id)
        self.repo.decode_blob(check, envelope, base[1] if base_id is not None and base else None)
        self.add_encrypted(kind, blob_id, envelope, len(data), base_id)
        return base_id

    def add_encrypted(
        self, kind: int, blob_id: bytes, envelope: bytes, raw_length: int, base: bytes | None = None
    ) -> None:
        """Add a blob already encrypted and verified (by add(), or read back by prune)."""
        full: tuple[list[bytes], list[packfmt.BlobEntry]] | None = None
        with self._lock:
            entry = packfmt.BlobEntry(kind, blob_id, self._size, len(envelope), raw_length, base)
            if base is not None:
                self.deltas_written += 1
            self._parts.append(envelope)
            self._entries.append(entry)
            self._size += len(envelope)
            self.raw_bytes_written += raw_length
            if self._size >= self.target:
                full = self._take()
        if full is not None:
            self._write(*full)

    def _take(self) -> tuple[list[bytes], list[packfmt.BlobEntry]]:
        parts, entries = self._parts, self._entries
        self._parts, self._entries, self._size = [], [], 0
        return parts, entries

    def flush(self) -> None:
        with self._lock:
            full = self._take() if self._entries else None
        if full is not None:
            self._write(*full)

    def _write(self, parts: list[bytes], entries: list[packfmt.BlobEntry]) -> None:
        header = self.repo.crypter.encrypt(aead.KIND_PACK_HEADER, packfmt.encode_header(entries))
        blob = b"".join((*parts, header, packfmt.TRAILER.pack(len(header))))
        parts.clear()  # free the blobs now: the joined pack holds them
        pack_id = hashlib.sha256(blob).digest()
        self.repo.backend.save(Handle("data", pack_id.hex()), blob)
        with self._lock:
            self.written[pack_id] = entries
            self.bytes_written += len(blob)
            self.blobs_written += len(entries)

    def take_written(self) -> dict[bytes, list[packfmt.BlobEntry]]:
        """Packs written since the last call (to be published in an index file)."""
        with self._lock:
            out, self.written = self.written, {}
        return out
