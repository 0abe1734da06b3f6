"""Recently read stretches of packs, for remote repositories, where each request costs a
round trip.

A backup that stores a changed database as deltas needs, one by one, the previous versions of
its chunks as bases. They sit side by side in the packs of the previous backup. Reading a
window of a few MiB from the first one serves the next ones from memory: a handful of
requests instead of one per chunk. Everything served is still authenticated by the caller
(AEAD, then the blob id), so a stale or wrong window can cost a retry, never data.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from coffre.storage.base import Backend, Handle

WINDOW = 8 * 1024 * 1024
CAPACITY = 48 * 1024 * 1024  # bounds the memory the windows hold


class PackWindows:
    def __init__(self, backend: Backend, window: int = WINDOW, capacity: int = CAPACITY) -> None:
        self.backend = backend
        self.window = window
        self.capacity = capacity
        self._windows: OrderedDict[tuple[bytes, int], bytes] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self.requests = 0

    def read(self, pack: bytes, offset: int, length: int) -> bytes:
        with self._lock:
            for (p, start), data in reversed(self._windows.items()):
                if p == pack and start <= offset and offset + length <= start + len(data):
                    self._windows.move_to_end((p, start))
                    return data[offset - start : offset - start + length]
        data = self.backend.load(Handle("data", pack.hex()), offset, max(length, self.window))
        self.requests += 1
        if len(data) <= length:
            return data  # the end of the pack (or a short read: the caller checks)
        with self._lock:
            old = self._windows.pop((pack, offset), None)
            self._held -= len(old) if old is not None else 0
            self._windows[(pack, offset)] = data
            self._held += len(data)
            while self._held > self.capacity and len(self._windows) > 1:
                _, dropped = self._windows.popitem(last=False)
                self._held -= len(dropped)
        return data[:length]
