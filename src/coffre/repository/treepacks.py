"""Whole tree packs of a remote repository, kept on this machine.

Folder listings (trees) are written to packs of their own (repository/packer.py). A backup's
parent and a restore's plan read many of them, one folder at a time: over a link each would
be a round trip. Instead, the first listing wanted from a tree pack brings the whole pack
(one request), and the others are served from it. A backup keeps the tree packs it writes,
so the next backup and a restore on the same machine read no listing from the storage at all
(restic keeps its tree packs the same way).

The copies live in the cache folder, in `trees/`, named by their pack id, which is the
SHA-256 of their bytes: a copy is used only if it still hashes to its name (a damaged or
planted file is dropped and the pack fetched again), and every blob served is then
authenticated by its reader as any other. The cache never holds the only copy of anything;
copies of packs the index no longer lists (removed by prune) are deleted by `tidy`. In memory,
at most CAPACITY bytes of packs are held, the least recently used dropped first.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Collection
from pathlib import Path

from coffre.storage.base import Backend, Handle

CAPACITY = 64 * 1024 * 1024


class TreePacks:
    def __init__(self, backend: Backend, directory: Path | None = None, capacity: int = CAPACITY) -> None:
        self.backend = backend
        self.dir = directory  # None: held in memory only
        self.capacity = capacity
        self._packs: OrderedDict[bytes, bytes] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self._loading: dict[bytes, threading.Event] = {}
        self.requests = 0
        self.local_reads = 0

    def read(self, pack: bytes, offset: int, length: int) -> bytes:
        """The stored bytes of one blob of a tree pack (the caller authenticates them)."""
        data = self._pack(pack)
        return data[offset : offset + length]

    def _pack(self, pack: bytes) -> bytes:
        while True:
            with self._lock:
                data = self._packs.get(pack)
                if data is not None:
                    self._packs.move_to_end(pack)
                    return data
                loading = self._loading.get(pack)
                if loading is None:
                    self._loading[pack] = threading.Event()
                    break
            loading.wait()  # another thread brings this pack
        try:
            data = self._from_disk(pack)
            if data is None:
                data = self.backend.load(Handle("data", pack.hex()))
                self.requests += 1
                if not hmac.compare_digest(hashlib.sha256(data).digest(), pack):
                    return data  # not kept: its blobs fail their checks, a later read retries
                self._to_disk(pack, data)
            self._hold(pack, data)
            return data
        finally:
            with self._lock:
                self._loading.pop(pack).set()

    def keep(self, pack: bytes, data: bytes) -> None:
        """A tree pack just written by this machine: kept on disk for the next runs."""
        self._to_disk(pack, data)

    def tidy(self, listed: Collection[bytes]) -> int:
        """Delete the copies of packs the index no longer lists; how many were deleted."""
        if self.dir is None:
            return 0
        try:
            names = os.listdir(self.dir)
        except OSError:
            return 0
        wanted = {p.hex() for p in listed}
        removed = 0
        for name in names:
            if name not in wanted:
                (self.dir / name).unlink(missing_ok=True)
                removed += 1
        return removed

    def _hold(self, pack: bytes, data: bytes) -> None:
        with self._lock:
            self._packs[pack] = data
            self._held += len(data)
            while self._held > self.capacity and len(self._packs) > 1:
                _, dropped = self._packs.popitem(last=False)
                self._held -= len(dropped)

    def _from_disk(self, pack: bytes) -> bytes | None:
        if self.dir is None:
            return None
        path = self.dir / pack.hex()
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if not hmac.compare_digest(hashlib.sha256(data).digest(), pack):
            path.unlink(missing_ok=True)  # damaged on the local disk: fetched again
            return None
        self.local_reads += 1
        return data

    def _to_disk(self, pack: bytes, data: bytes) -> None:
        """Store a copy atomically; a cache that cannot be written only costs requests."""
        if self.dir is None:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.dir / f".tmp-{secrets.token_hex(8)}"
            tmp.write_bytes(data)
            os.replace(tmp, self.dir / pack.hex())
        except OSError:
            pass
