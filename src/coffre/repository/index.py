"""The in-memory master index: blob id -> where it is stored. Thread-safe."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

import msgspec

from coffre.crypto.aead import KIND_DATA, KIND_TREE
from coffre.format.pack import BlobEntry


class Location(msgspec.Struct, frozen=True, gc=False):
    """A blob's pack and entry: one per blob loaded, made in C and holding no container, so
    not tracked by the garbage collector (format/pack.py's BlobEntry says why)."""

    pack: bytes
    entry: BlobEntry


class MasterIndex:
    def __init__(self) -> None:
        self._blobs: dict[bytes, Location] = {}
        self._extra: dict[bytes, list[Location]] = {}  # further copies of a blob
        self._packs: dict[bytes, list[BlobEntry]] = {}
        self._tree_packs: set[bytes] = set()  # packs holding trees only
        self.loaded_files: set[str] = set()
        self._lock = threading.Lock()

    def add_pack(self, pack_id: bytes, entries: list[BlobEntry]) -> None:
        with self._lock:
            self._packs[pack_id] = entries
            self._add_blobs(pack_id, entries)

    def _add_blobs(self, pack_id: bytes, entries: list[BlobEntry]) -> None:
        if entries and all(e.kind == KIND_TREE for e in entries):
            self._tree_packs.add(pack_id)
        located = Location
        for e in entries:
            loc = located(pack_id, e)
            first = self._blobs.setdefault(e.id, loc)
            if first is not loc and first.pack != pack_id:
                if first.entry.base is not None and e.base is None:
                    # A plain copy needs no other blob: readers try it first.
                    self._blobs[e.id] = loc
                    loc = first
                self._extra.setdefault(e.id, []).append(loc)

    def drop_packs(self, gone: set[bytes]) -> None:
        """Forget packs known to be missing from storage, so their blobs are stored again."""
        with self._lock:
            if gone.isdisjoint(self._packs):
                return  # the common case: nothing to rebuild (a year's index, ~20 ms)
            for pid in gone:
                self._packs.pop(pid, None)
            self._rebuild()

    def _rebuild(self) -> None:
        self._blobs, self._extra, self._tree_packs = {}, {}, set()
        for pid, entries in self._packs.items():
            self._add_blobs(pid, entries)

    def retain(self, keep: Callable[[bytes, BlobEntry], bool]) -> int:
        """Keep only the (pack, entry) pairs `keep` accepts; how many entries were dropped.
        Packs left without entries are forgotten."""
        with self._lock:
            dropped = 0
            for pid in list(self._packs):
                entries = self._packs[pid]
                kept = [e for e in entries if keep(pid, e)]
                dropped += len(entries) - len(kept)
                if kept:
                    self._packs[pid] = kept
                else:
                    del self._packs[pid]
            if dropped:
                self._rebuild()
            return dropped

    def drop_unreadable(self, damaged: Collection[tuple[bytes, bytes]] = ()) -> int:
        """Forget what cannot be read: the (pack, blob) pairs known to be damaged, then every
        delta whose base is no longer a plain data blob of the index (its base was in a lost
        or damaged pack). Depth one: dropping deltas never orphans other deltas."""
        dropped = self.retain(lambda pid, e: (pid, e.id) not in damaged) if damaged else 0
        return dropped + self.retain(lambda pid, e: e.base is None or self.plain_data(e.base))

    def lookup(self, blob_id: bytes) -> Location | None:
        return self._blobs.get(blob_id)

    def lookup_function(self) -> Callable[[bytes], Location | None]:
        """`lookup` without a method call per blob, for walks over a year's history (a third
        of check's walk went to the call): valid while no pack is dropped (drop_packs, retain,
        drop_unreadable make a new map; add_pack does not)."""
        return self._blobs.get

    def tree_pack(self, pack_id: bytes) -> bool:
        """Whether a pack holds folder listings only (read whole by remote readers)."""
        return pack_id in self._tree_packs

    def base_of(self, blob_id: bytes) -> bytes | None:
        """The base of a delta blob (None for a plain blob or an unknown one)."""
        loc = self._blobs.get(blob_id)
        return loc.entry.base if loc is not None else None

    def plain_data(self, blob_id: bytes) -> bool:
        """Whether a blob is indexed as a data blob that is not a delta: the only kind of
        blob a delta may use as its base (depth one)."""
        loc = self._blobs.get(blob_id)
        return loc is not None and loc.entry.base is None and loc.entry.kind == KIND_DATA

    def readable(self, blob_id: bytes, present: Callable[[bytes], bool], but: bytes | None = None) -> bool:
        """Whether some copy of the blob can be read: in a pack `present` accepts (and not the
        pack `but`), and, for a delta, with its base stored whole in such a pack."""
        first = self._blobs.get(blob_id)
        if first is not None and first.pack != but and present(first.pack):  # the common case
            base = self._blobs.get(first.entry.base) if first.entry.base is not None else None
            if first.entry.base is None or (base is not None and base.entry.base is None
                                            and base.entry.kind == KIND_DATA and present(base.pack)):
                return True
        return any(
            loc.pack != but and present(loc.pack) and (
                loc.entry.base is None or any(
                    b.entry.base is None and b.entry.kind == KIND_DATA and present(b.pack)
                    for b in self.locations(loc.entry.base)))
            for loc in self.locations(blob_id)
        )

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self._blobs

    def has_all(self, blob_ids: set[bytes]) -> bool:
        """Whether every one of these blobs is indexed (compared in C: a year's ~55,000)."""
        return blob_ids.issubset(self._blobs.keys())

    def __len__(self) -> int:
        return len(self._blobs)

    def packs(self) -> dict[bytes, list[BlobEntry]]:
        with self._lock:
            return dict(self._packs)

    def pack_ids(self) -> set[bytes]:
        with self._lock:
            return set(self._packs)

    def blob_ids(self) -> set[bytes]:
        with self._lock:
            return set(self._blobs)

    def locations(self, blob_id: bytes) -> list[Location]:
        """Every pack holding this blob (duplicates happen after crashes or concurrent writers)."""
        first = self._blobs.get(blob_id)
        if first is None:
            return []
        if blob_id not in self._extra:  # the common case, read for every blob loaded
            return [first]
        with self._lock:
            return [first, *self._extra.get(blob_id, [])]

    def stored_more_than_once(self) -> set[bytes]:
        """The blobs more than one pack holds."""
        with self._lock:
            return set(self._extra)
