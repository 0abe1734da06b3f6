"""A local copy of the chunks that tomorrow's deltas will be made against, for remote
repositories.

A delta needs the previous version of its chunk (its base). On a local disk, reading it from
the repository is cheap; over a pharmacy's link it means downloading the previous version
of every changed database and dump each day (780 MB on the benchmark day, for 32 MB sent).
So a backup to a remote repository keeps, in the cache folder, the chunks of the files that
change in place (database files, and files that changed since the last backup) and the bases
it fetched, and reads bases here first.

Entries are compressed and encrypted with the repository's key, bound to their id, and
checked against their id when read: a damaged or planted entry is dropped and the base read
from the repository instead. The cache never holds the only copy of anything. Entries unused
for EXPIRE_DAYS are removed, and the oldest go first beyond MAX_BYTES.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from coffre.compress import compress, decompress
from coffre.core.clock import Clock, SystemClock
from coffre.core.errors import CoffreError
from coffre.crypto import aead
from coffre.crypto.aead import Crypter

EXPIRE_DAYS = 8
MAX_BYTES = 8 * 1024**3
DAY_NS = 86_400 * 1_000_000_000


class BaseCache:
    def __init__(self, directory: Path, crypter: Crypter, clock: Clock | None = None) -> None:
        self.dir = directory
        self.crypter = crypter
        self.clock = clock or SystemClock()
        self.hits = 0
        self.kept = 0

    def _file(self, blob_id: bytes) -> Path:
        name = blob_id.hex()
        return self.dir / name[:2] / name

    def get(self, blob_id: bytes, raw_length: int) -> bytes | None:
        """The content of a base, or None (absent, or damaged: then removed)."""
        path = self._file(blob_id)
        try:
            envelope = path.read_bytes()
        except OSError:
            return None
        try:
            plain = self.crypter.decrypt(aead.KIND_DATA, envelope, blob_id)
            data = decompress(plain[0], plain[1:], raw_length)
            if not hmac.compare_digest(self.crypter.blob_id(data), blob_id):
                raise CoffreError("base cache entry does not match its id")
        except (CoffreError, IndexError):
            path.unlink(missing_ok=True)
            return None
        self._touch(path)
        self.hits += 1
        return data

    def put(self, blob_id: bytes, data: bytes) -> None:
        """Keep a chunk (idempotent); a cache that cannot be written only costs downloads."""
        path = self._file(blob_id)
        if path.exists():
            self._touch(path)
            return
        codec, payload = compress(data)
        envelope = self.crypter.encrypt(aead.KIND_DATA, bytes([codec]) + payload, blob_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".tmp-{secrets.token_hex(8)}")
            tmp.write_bytes(envelope)
            os.replace(tmp, path)
            self._touch(path)  # ages are counted on the cache's clock
            self.kept += 1
        except OSError:
            pass

    def _touch(self, path: Path) -> None:
        now = self.clock.now_ns()
        try:
            os.utime(path, ns=(now, now))
        except OSError:
            pass

    def expire(self) -> int:
        """Remove entries unused for EXPIRE_DAYS, then the oldest beyond MAX_BYTES."""
        entries = []
        for sub in self.dir.glob("??"):
            for p in sub.iterdir():
                try:
                    st = p.stat()
                except OSError:
                    continue
                entries.append((st.st_mtime_ns, st.st_size, p))
        entries.sort(reverse=True)
        cutoff = self.clock.now_ns() - EXPIRE_DAYS * DAY_NS
        total, removed = 0, 0
        for mtime, size, p in entries:
            total += size
            if mtime < cutoff or total > MAX_BYTES or p.name.startswith(".tmp-"):
                p.unlink(missing_ok=True)
                removed += 1
        return removed

