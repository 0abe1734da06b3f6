"""Recently read stretches of packs, for remote repositories, where each request costs a
round trip.

A backup that stores a changed database as deltas needs, one by one, the previous versions of
its chunks as bases. They sit in the packs of the previous backup (side by side in format 1,
in a random order within each pack in format 2). Reading the window of a few MiB that holds
the first one serves the next ones from memory: a handful of requests instead of one per
chunk, and no stretch of a pack read twice while its window is kept. Everything served is
still authenticated by the caller (AEAD, then the blob id), so a stale or wrong window can
cost a retry, never data.
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
        self._loading: dict[tuple[bytes, int], threading.Event] = {}  # windows being read
        self.requests = 0

    def read(self, pack: bytes, offset: int, length: int) -> bytes:
        # Windows start at multiples of the window size: blobs wanted in a random order (format 2
        # shuffles packs) are served by the window that holds them, and no stretch of a pack is
        # read twice (a window from each blob's offset would read most of the pack each time).
        start = offset - offset % self.window
        key = (pack, start)
        while True:
            with self._lock:
                data = self._windows.get(key)
                if data is not None and offset + length <= start + len(data):
                    self._windows.move_to_end(key)
                    return data[offset - start : offset - start + length]
                loading = self._loading.get(key)
                if loading is None:
                    self._loading[key] = threading.Event()
                    break
            loading.wait()  # another thread reads this window (backup workers want bases at once)
        try:
            handle = Handle("data", pack.hex())
            with self._lock:
                have = self._windows.get(key)
            if have is not None and len(have) >= self.window:
                # The window is there but a blob crosses its end: only the missing end is read
                # (reading the window again whole read most of a pack twice in a copy).
                held_end = start + len(have)
                data = have + self.backend.load(handle, held_end, offset + length - held_end)
            else:
                data = self.backend.load(handle, start, max(offset + length - start, self.window))
            self.requests += 1
            if data:
                with self._lock:
                    old = self._windows.pop(key, None)
                    self._held -= len(old) if old is not None else 0
                    self._windows[key] = data
                    self._held += len(data)
                    while self._held > self.capacity and len(self._windows) > 1:
                        _, dropped = self._windows.popitem(last=False)
                        self._held -= len(dropped)
        finally:
            with self._lock:
                self._loading.pop(key).set()
        # At the end of the pack (or after a short read) less than asked: the caller checks.
        return data[offset - start : offset - start + length]
