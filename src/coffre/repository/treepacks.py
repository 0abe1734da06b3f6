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
at most CAPACITY bytes of packs are held (repository/wholepacks.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection
from pathlib import Path

from coffre.repository.wholepacks import WholePacks
from coffre.storage.base import Backend
from coffre.storage.cached import read_copy, write_copy

CAPACITY = 64 * 1024 * 1024


class TreePacks(WholePacks):
    def __init__(self, backend: Backend, directory: Path | None = None, capacity: int = CAPACITY) -> None:
        super().__init__(backend, capacity)
        self.dir = directory  # None: held in memory only
        self.local_reads = 0

    def _fetch(self, pack: bytes) -> tuple[bytes, bool]:
        data = self._from_disk(pack)
        if data is not None:
            return data, True
        data, _ = super()._fetch(pack)
        if hashlib.sha256(data).digest() != pack:
            return data, False  # not kept: its blobs fail their checks, a later read retries
        self.keep(pack, data)
        return data, True

    def keep(self, pack: bytes, data: bytes) -> None:
        """A tree pack this machine wrote or fetched, kept on disk for the next runs. `pack` is
        the SHA-256 of `data`, as both callers have just computed it."""
        if self.dir is not None:
            write_copy(self.dir / pack.hex(), data)

    def tidy(self, listed: Collection[bytes], before_ns: int) -> int:
        """Delete the copies of packs the index no longer lists, written before `before_ns`;
        how many were deleted. A copy younger than that may be a pack another command on this
        machine (a backup running beside this one) has written and not indexed yet."""
        if self.dir is None:
            return 0
        try:
            names = os.listdir(self.dir)
        except OSError:
            return 0
        wanted = {p.hex() for p in listed}
        removed = 0
        for name in names:
            if name in wanted:
                continue
            path = self.dir / name
            try:
                if path.stat().st_mtime_ns >= before_ns:
                    continue
            except OSError:
                continue
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    def _from_disk(self, pack: bytes) -> bytes | None:
        data = read_copy(self.dir / pack.hex(), pack.hex()) if self.dir is not None else None
        self.local_reads += data is not None
        return data
