"""Packer: gathers encrypted blobs into pack files and records what it wrote.

Blobs are verified after encryption (decrypted, decompressed and re-hashed) before a pack is
stored: a memory fault must not reach the repository.
"""

from __future__ import annotations

import hashlib
import threading

from coffre.compress import compress
from coffre.crypto import aead
from coffre.format import pack as packfmt
from coffre.repository.repo import Repository
from coffre.storage.base import Handle


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

    def claim(self, blob_id: bytes) -> bool:
        """True if the caller should store this blob: not in the index, not claimed yet."""
        if blob_id in self.repo.index:
            return False
        with self._lock:
            if blob_id in self._claimed:
                return False
            self._claimed.add(blob_id)
            return True

    def add(self, kind: int, blob_id: bytes, data: bytes, level: int | None = None) -> None:
        """Compress, encrypt and add a blob; writes a pack when one is full."""
        codec, payload = compress(data, self.repo.config.compression_level if level is None else level)
        envelope = self.repo.crypter.encrypt(kind, bytes([codec]) + payload, blob_id)
        self.add_encrypted(kind, blob_id, envelope, len(data))

    def add_encrypted(self, kind: int, blob_id: bytes, envelope: bytes, raw_length: int) -> None:
        full: tuple[list[bytes], list[packfmt.BlobEntry]] | None = None
        with self._lock:
            entry = packfmt.BlobEntry(kind, blob_id, self._size, len(envelope), raw_length)
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
        view = memoryview(blob)
        for e in entries:  # verify after encrypt
            self.repo.decode_blob(e, view[e.offset : e.offset + e.length])
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
