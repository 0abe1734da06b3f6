"""Packer: gathers encrypted blobs into pack files and records what it wrote.

Every blob is verified after encryption (decrypted, decompressed and compared with the bytes
its id was computed from) before it joins a pack: a memory fault or a codec bug must not
reach the repository.

A changed chunk can be stored as a zstd delta against an older data blob (its base), when
that saves enough over compressing it alone.

Folder listings (tree blobs) go to packs of their own, apart from the data: reading the
listings of a snapshot (a restore's plan, a backup's parent) then costs a few whole tree packs,
which a remote repository's cache keeps (repository/treepacks.py), instead of a request per
folder scattered among the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from coffre.compress import CODEC_ZSTD_DELTA, compress, compress_delta
from coffre.core.errors import IntegrityError
from coffre.core.i18n import _
from coffre.crypto import aead
from coffre.format import pack as packfmt
from coffre.repository.repo import Repository
from coffre.storage.base import Handle

# zstd's fast levels index too little of a large dictionary to find its matches.
MIN_DELTA_LEVEL = 3
# When a chunk is stored whole (rebased) rather than as a delta against its base. A chunk
# changed every day drifts from its base: its delta grows about linearly with the days since
# the base, then the chunk is stored whole and the next deltas start small again. If the delta
# grows by d a day and the chunk's plain compression is P, storing it whole every k days costs
# P/k + d*k/2 a day, least when the delta reaches sqrt(2*P*d). A chunk's first delta (its
# ancestor is the base itself) is kept while it pays at all: below that point whenever d < 2P.
# A drifted chunk (its ancestor is already a delta against the same base) is held to a tighter
# limit. Over a year of a steady pharmacy (bench/year.py --steady), keeping every delta up to
# 0.8 x the plain compression (and any under 1/8 of the raw chunk, ~0.35 P for its database
# blocks) let the day's bytes grow from 7 to 24 MB; holding drifted chunks to the limits
# below, to 10.5 MB, for the same backup time (docs/design.md, "Deltas").
# A first delta this much smaller than the raw chunk is kept without trying plain compression;
FIRST_SURE_DELTA = 8
# otherwise it must be smaller than the plain compression times this.
FIRST_DELTA_GAIN = 0.8
# The same for a drifted chunk's delta.
SURE_DELTA = 32
DELTA_GAIN = 0.3
MIN_DELTA_INPUT = 1024
WRITES_QUEUED = 1


def pack_size(entries: list[packfmt.BlobEntry], version: int) -> int:
    """The exact size of the pack file holding these blobs."""
    return max((e.offset + e.length for e in entries), default=0) + header_size(entries, version)


def header_size(entries: list[packfmt.BlobEntry], version: int) -> int:
    """What follows the blobs in a pack listing these blobs: the encrypted header (its length
    does not depend on the order of the blobs) and the trailer."""
    overhead = aead.SEALED_OVERHEAD if version >= 2 else aead.OVERHEAD
    return len(packfmt.encode_header(entries, version)) + overhead + packfmt.trailer_size(version)


@dataclasses.dataclass
class _OpenPack:
    """A pack being filled: of trees or of data, its encrypted blobs, their entries, and
    (format 2) its key's salt."""

    tree: bool
    salt: bytes | None
    parts: list[bytes] = dataclasses.field(default_factory=list)
    entries: list[packfmt.BlobEntry] = dataclasses.field(default_factory=list)
    size: int = 0


class Packer:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.target = repo.config.pack_size
        self._lock = threading.Lock()
        # One pack filled for trees, one for data (keyed by "is a tree").
        self._open = {tree: _OpenPack(tree, self._new_salt()) for tree in (False, True)}
        # Blobs stored (or being stored) by this packer, so concurrent workers do not
        # store the same new blob twice.
        self._claimed: set[bytes] = set()
        self.written: dict[bytes, list[packfmt.BlobEntry]] = {}
        self.bytes_written = 0
        self.blobs_written = 0
        self.raw_bytes_written = 0
        self.deltas_written = 0
        # Full packs are hashed and stored (with fsync) by one writer thread, so the workers
        # that compress never wait for the disk; at most WRITES_QUEUED packs wait for it.
        self._writer: ThreadPoolExecutor | None = None
        self._write_slots = threading.BoundedSemaphore(WRITES_QUEUED)
        self._writes: list[Future[None]] = []

    def claim(self, blob_id: bytes) -> bool:
        """True if the caller should store this blob: not in the index, not claimed yet."""
        if blob_id in self.repo.index:
            return False
        with self._lock:
            if blob_id in self._claimed or blob_id in self.repo.index:
                return False
            self._claimed.add(blob_id)
            return True

    def release_claims(self, blob_ids: list[bytes]) -> None:
        """Forget claims on blobs now in the repository's index (memory stays flat)."""
        with self._lock:
            self._claimed.difference_update(blob_ids)

    def add(
        self, kind: int, blob_id: bytes, data: bytes, level: int | None = None,
        base: tuple[bytes, bytes] | None = None, drifted: bool = False,
        plain_estimate: int | None = None,
    ) -> bytes | None:
        """Compress (as a delta against `base` = (id, content) when that pays), encrypt,
        verify and add a blob; writes a pack when one is full. Returns the base if a delta
        was stored. `drifted`: the chunk's previous version was already a delta against this
        base (the delta is then held to tighter limits: DELTA_GAIN). `plain_estimate`: the
        chunk's plain compression guessed from its base's (the same data, a little older):
        a delta well under it is kept without compressing the chunk only to compare."""
        level = self.repo.config.compression_level if level is None else level
        sure, gain = (SURE_DELTA, DELTA_GAIN) if drifted else (FIRST_SURE_DELTA, FIRST_DELTA_GAIN)
        delta = None
        if base is not None and len(data) >= MIN_DELTA_INPUT and kind == aead.KIND_DATA:
            delta = compress_delta(data, base[1], max(level, MIN_DELTA_LEVEL))
        use_delta = delta is not None and (len(delta) * sure <= len(data) or (
            plain_estimate is not None and len(delta) < plain_estimate * gain))
        if not use_delta:
            codec, payload = compress(data, level)
            use_delta = delta is not None and len(delta) < len(payload) * gain
        if use_delta and base is not None and delta is not None:
            base_id, base_content = base
            body = bytes([CODEC_ZSTD_DELTA]) + base_id + delta
        else:
            base_id, base_content = None, None
            body = bytes([codec]) + payload
        # The stored form decodes to the very bytes the id was computed from (compared rather
        # than hashed again: the same guarantee, cheaper); add_body checks the encryption.
        entry = packfmt.BlobEntry(kind, blob_id, 0, 0, len(data), base_id)
        if self.repo.decode_plain(entry, body, base_content, verify=False) != data:
            raise IntegrityError(_("self-check after compression failed (memory fault?)"))
        self.add_body(kind, blob_id, body, len(data), base_id)
        return base_id

    def add_body(
        self, kind: int, blob_id: bytes, body: bytes | memoryview, raw_length: int,
        base: bytes | None = None,
    ) -> None:
        """Encrypt a blob's body (codec byte and payload, checked by the caller: add(), or
        prune and copy, which read it back from a pack), verify the encryption, add it."""
        crypter = self.repo.crypter
        plain = body if self.repo.version < 2 else packfmt.pad(body)
        tree = kind == aead.KIND_TREE
        full: _OpenPack | None = None
        while full is None:
            salt = self._open[tree].salt
            stored = crypter.encrypt_blob(salt, kind, plain, blob_id)
            # Verify after encrypt: what goes to storage must decrypt to what we meant.
            if crypter.decrypt_blob(salt, kind, stored, blob_id) != plain:
                raise IntegrityError(_("self-check after encryption failed (memory fault?)"))
            with self._lock:
                pack = self._open[tree]
                if salt != pack.salt:
                    continue  # the pack filled meanwhile: seal again under the next pack's key
                entry = packfmt.BlobEntry(kind, blob_id, pack.size, len(stored), raw_length, base, salt)
                if base is not None:
                    self.deltas_written += 1
                pack.parts.append(stored)
                pack.entries.append(entry)
                pack.size += len(stored)
                self.raw_bytes_written += raw_length
                if pack.size < self.target:
                    return
                full = self._take(tree)
        self._queue_write(full)

    def _new_salt(self) -> bytes | None:
        return os.urandom(aead.PACK_SALT_LEN) if self.repo.version >= 2 else None

    def _take(self, tree: bool) -> _OpenPack:
        full, self._open[tree] = self._open[tree], _OpenPack(tree, self._new_salt())
        return full

    def _queue_write(self, full: _OpenPack) -> None:
        self._write_slots.acquire()
        try:
            with self._lock:
                for done in [f for f in self._writes if f.done()]:
                    self._writes.remove(done)
                    done.result()  # a failed write (disk full...) stops the caller here
                if self._writer is None:
                    self._writer = ThreadPoolExecutor(1, thread_name_prefix="packwrite")
                fut = self._writer.submit(self._write, full)
                self._writes.append(fut)
        except BaseException:
            self._write_slots.release()
            raise
        fut.add_done_callback(lambda _: self._write_slots.release())

    def flush(self) -> None:
        """Store the last, partial pack and wait until every pack is stored."""
        with self._lock:
            last = [self._take(tree) for tree in (False, True) if self._open[tree].entries]
        for full in last:
            self._queue_write(full)
        with self._lock:
            writes, self._writes = self._writes, []
            writer, self._writer = self._writer, None
        try:
            for fut in writes:
                fut.result()
        finally:
            if writer is not None:
                writer.shutdown(wait=True)

    def _write(self, full: _OpenPack) -> None:
        crypter = self.repo.crypter
        parts, entries, salt = full.parts, full.entries, full.salt
        if salt is None:
            header = crypter.encrypt(aead.KIND_PACK_HEADER, packfmt.encode_header(entries))
        else:
            parts, entries = _shuffled(parts, entries)
            header = crypter.seal(salt, aead.KIND_PACK_HEADER, packfmt.encode_header(entries, 2))
        blob = b"".join((*parts, header, packfmt.trailer(len(header), salt)))
        parts.clear()  # free the blobs now: the joined pack holds them (format 2: both lists)
        full.parts.clear()
        pack_id = hashlib.sha256(blob).digest()
        self.repo.backend.save(Handle("data", pack_id.hex()), blob)
        if self.repo.tree_packs is not None and full.tree:
            self.repo.tree_packs.keep(pack_id, blob)  # the next backup's parent, a restore's plan
        with self._lock:
            self.written[pack_id] = entries
            self.bytes_written += len(blob)
            self.blobs_written += len(entries)

    def take_written(self) -> dict[bytes, list[packfmt.BlobEntry]]:
        """Packs written since the last call (to be published in an index file)."""
        with self._lock:
            out, self.written = self.written, {}
        return out


def _shuffled(
    parts: list[bytes], entries: list[packfmt.BlobEntry],
) -> tuple[list[bytes], list[packfmt.BlobEntry]]:
    """The blobs of a format-2 pack in a random order, their offsets following: neighbours in a
    pack then say nothing of neighbours in a file (which chunks make up a known file). The order
    sorts the blobs by 64 random bits each from one call to the kernel's generator (a uniform
    permutation; SystemRandom.shuffle asked the kernel once per blob)."""
    keys = os.urandom(8 * len(parts))
    order = sorted(range(len(parts)), key=lambda i: keys[8 * i : 8 * i + 8])
    out_parts, out_entries, offset = [], [], 0
    for i in order:
        out_parts.append(parts[i])
        out_entries.append(packfmt.moved(entries[i], offset))
        offset += len(parts[i])
    return out_parts, out_entries
