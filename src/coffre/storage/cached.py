"""A local copy of a remote repository's small metadata objects (index files, snapshots, key
slots), so a daily backup over a slow link lists them but does not download them again.

Safe because those objects never change: each is named by the SHA-256 of its bytes, and
objects are never overwritten. A cached copy is used only if its bytes still hash to its
name; a damaged copy is dropped and fetched again. The cache holds nothing the repository
does not: losing it costs one download of the metadata. Copies of objects that are no longer
listed (removed by prune) are deleted at the next listing.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coffre.storage.base import Backend, Handle, ObjectInfo, Wrapper

CACHED_KINDS = ("index", "snapshots", "keys")


def read_copy(path: Path, name: str) -> bytes | None:
    """A local copy of an object named by the SHA-256 (hex) of its bytes, if it still matches
    its name; a damaged copy is deleted (the caller fetches the object again)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != name:
        path.unlink(missing_ok=True)
        return None
    return data


def keep_copy(path: Path, name: str, data: bytes) -> None:
    """Store a local copy atomically, only if the bytes match their name."""
    if hashlib.sha256(data).hexdigest() == name:
        write_copy(path, data)


def write_copy(path: Path, data: bytes) -> None:
    """Store a local copy atomically, of bytes the caller knows match the name of `path`. A
    cache that cannot be written (disk full, read-only) only costs speed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".tmp-{secrets.token_hex(8)}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        pass


class CachedBackend(Wrapper):
    def __init__(self, inner: Backend, directory: Path) -> None:
        super().__init__(inner)
        self.dir = directory
        self.hits = 0
        self._keep_next: set[str] = set()  # kinds whose listings are lent (lending_listings)
        self._kept: dict[str, list[ObjectInfo]] = {}

    @property
    def tree_packs_dir(self) -> Path:
        """Where the repository's whole tree packs are kept (repository/treepacks.py)."""
        return self.dir.with_name("trees")

    def _file(self, handle: Handle) -> Path | None:
        if handle.kind not in CACHED_KINDS:
            return None
        return self.dir / handle.kind / handle.name


    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        path = self._file(handle)
        if path is None:
            return self.inner.load(handle, offset, length)
        data = read_copy(path, handle.name)
        if data is None:
            # From the start, so a whole object can be checked against its name and kept.
            data = self.inner.load(handle, 0, None if length is None else offset + length)
            keep_copy(path, handle.name, data)
        else:
            self.hits += 1
        end = len(data) if length is None else offset + length
        return data[offset:end]

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        self._kept.pop(handle.kind, None)
        self.inner.save(handle, data)
        path = self._file(handle)
        if path is not None:
            keep_copy(path, handle.name, bytes(data))

    @contextmanager
    def lending_listings(self, kinds: tuple[str, ...]) -> Iterator[None]:
        """The listings of these kinds made in the block each serve the next listing after it,
        once: for a command that checks the storage (cli/watching.py), then at once loads what
        it listed. Writing or removing an object of the kind drops the kept listing."""
        self._keep_next = set(kinds)
        try:
            yield
        finally:
            self._keep_next = set()

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        if kind not in self._keep_next:
            kept = self._kept.pop(kind, None)
            if kept is not None:
                return iter(kept)
        listed = list(self.inner.list(kind))
        if kind in self._keep_next:
            self._kept[kind] = listed
        if kind in CACHED_KINDS:
            names = {i.name for i in listed}
            try:
                stale = [p for p in (self.dir / kind).iterdir() if p.name not in names]
            except OSError:
                stale = []
            for p in stale:
                p.unlink(missing_ok=True)
        return iter(listed)

    def remove(self, handle: Handle) -> None:
        self._kept.pop(handle.kind, None)
        path = self._file(handle)
        if path is not None:
            path.unlink(missing_ok=True)
        self.inner.remove(handle)
