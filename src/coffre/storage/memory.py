"""An in-memory backend for fast tests; same contract as the others."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from coffre.core.errors import CoffreError, ObjectExists, ObjectNotFound
from coffre.storage.base import Handle, ObjectInfo


class MemoryBackend:
    remote = False

    def __init__(self) -> None:
        self.location = "memory"
        self._objects: dict[tuple[str, str], tuple[bytes, int]] = {}
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return ("config", "config") in self._objects

    def create(self) -> None:
        if self._objects:
            raise CoffreError("memory repository is not empty")

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        key = (handle.kind, handle.name)
        blob = bytes(data)
        with self._lock:
            if key in self._objects:
                if self._objects[key][0] != blob:
                    raise ObjectExists(f"{handle.kind}/{handle.name} exists with other content")
                return
            self._objects[key] = (blob, time.time_ns())

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        try:
            blob = self._objects[(handle.kind, handle.name)][0]
        except KeyError:
            raise ObjectNotFound(f"{handle.kind}/{handle.name}: not found") from None
        end = len(blob) if length is None else offset + length
        return blob[offset:end]

    def stat(self, handle: Handle) -> ObjectInfo:
        try:
            blob, mtime = self._objects[(handle.kind, handle.name)]
        except KeyError:
            raise ObjectNotFound(f"{handle.kind}/{handle.name}: not found") from None
        return ObjectInfo(handle.name, len(blob), mtime)

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        with self._lock:
            items = [(k, v) for k, v in self._objects.items() if k[0] == kind]
        for (_, name), (blob, mtime) in items:
            yield ObjectInfo(name, len(blob), mtime)

    def remove(self, handle: Handle) -> None:
        with self._lock:
            if self._objects.pop((handle.kind, handle.name), None) is None:
                raise ObjectNotFound(f"{handle.kind}/{handle.name}: not found")

    def clean_temporaries(self, older_than_ns: int) -> int:
        return 0  # writes are atomic in memory

    def free_space(self) -> int | None:
        return None

    def will_read(self, handle: Handle, offset: int, length: int) -> None:
        pass  # in memory already

    def close(self) -> None:
        pass
