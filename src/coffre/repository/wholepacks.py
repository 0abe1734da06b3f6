"""Whole packs read with one request each and held in memory, for remote repositories, where
each request costs a round trip: tree packs (repository/treepacks.py) and the packs a restore
reads most of (PlannedPacks).

Each pack is read once while it is held: threads wanting the same pack wait for the one
reading it. At most `capacity` bytes are held, the least recently used pack dropped first.
Everything served is still authenticated by its reader (AEAD, then the blob id).
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict

from coffre.repository.index import MasterIndex
from coffre.storage.base import Backend, Handle

PLANNED_CAPACITY = 256 * 1024 * 1024
# A pack a restore needs at least this share of is read whole (one request), not by spans.
WHOLE_SHARE = 0.5


class WholePacks:
    def __init__(self, backend: Backend, capacity: int) -> None:
        self.backend = backend
        self.capacity = capacity
        self._packs: OrderedDict[bytes, bytes] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self._loading: dict[bytes, threading.Event] = {}
        self.requests = 0

    def read(self, pack: bytes, offset: int, length: int) -> bytes:
        """The stored bytes at `offset` of a pack (the caller authenticates them)."""
        return self._pack(pack)[offset : offset + length]

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
            data, hold = self._fetch(pack)
            if hold:
                self._hold(pack, data)
            return data
        finally:
            with self._lock:
                self._loading.pop(pack).set()

    def _fetch(self, pack: bytes) -> tuple[bytes, bool]:
        """The pack's bytes, and whether to hold them."""
        self.requests += 1
        return self.backend.load(Handle("data", pack.hex())), True

    def _hold(self, pack: bytes, data: bytes) -> None:
        with self._lock:
            self._packs[pack] = data
            self._held += len(data)
            while self._held > self.capacity and len(self._packs) > 1:
                _, dropped = self._packs.popitem(last=False)
                self._held -= len(dropped)

    def _drop(self, pack: bytes) -> None:
        with self._lock:
            data = self._packs.pop(pack, None)
            self._held -= len(data) if data is not None else 0


class PlannedPacks(WholePacks):
    """The packs a restore needs most of, read whole; each is dropped once the restore has
    taken as many blobs from it as its plan counted (a wrong count costs a read, not data)."""

    def __init__(self, backend: Backend, reads: dict[bytes, int], capacity: int = PLANNED_CAPACITY) -> None:
        super().__init__(backend, capacity)
        self._left = dict(reads)  # pack -> blobs still to serve

    def wants(self, pack: bytes) -> bool:
        return pack in self._left

    def take(self, pack: bytes, offset: int, length: int, blobs: int) -> bytes:
        """Bytes of `blobs` blobs of a planned pack; the pack is dropped after its last ones."""
        data = self.read(pack, offset, length)
        with self._lock:
            left = self._left.get(pack, 0) - blobs
            if left > 0:
                self._left[pack] = left
                return data
            self._left.pop(pack, None)
        self._drop(pack)
        return data


class PackDemand:
    """What a restore will read of each pack, counted by its plan: the blobs of every file (and
    the bases of the deltas among them)."""

    def __init__(self, index: MasterIndex) -> None:
        self.index = index
        self.reads: Counter[bytes] = Counter()
        self.bytes: Counter[bytes] = Counter()

    def add(self, blob_ids: list[bytes]) -> None:
        for blob_id in blob_ids:
            loc = self.index.lookup(blob_id)
            if loc is None:
                continue
            self.reads[loc.pack] += 1
            self.bytes[loc.pack] += loc.entry.length
            base = loc.entry.base and self.index.lookup(loc.entry.base)
            if base:
                self.reads[base.pack] += 1
                self.bytes[base.pack] += base.entry.length

    def planned(self, backend: Backend) -> PlannedPacks:
        """The packs of which at least WHOLE_SHARE is needed, to be read whole."""
        sizes = {pid: max(e.offset + e.length for e in entries)
                 for pid, entries in self.index.packs().items() if pid in self.reads}
        return PlannedPacks(backend, {pid: n for pid, n in self.reads.items()
                                      if self.bytes[pid] >= WHOLE_SHARE * sizes[pid]})
