"""Check: the repository's structure, and optionally every byte of its data.

Structure: every index and snapshot decrypts, every tree reachable from a snapshot decrypts
and every blob it references is indexed in a pack that exists with the expected size, and
every pack's SHA-256 matches its name.
--read-data (or a subset): every pack is read, its SHA-256 compared with its name, its
header and every blob authenticated, decompressed and re-hashed. Damaged packs are named
with the snapshots and files that depend on them.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from coffre.core.errors import FormatError, ObjectNotFound, StorageError
from coffre.format import pack as packfmt
from coffre.format.snapshot import Snapshot
from coffre.ops.common import Reporter, load_tree, quiet
from coffre.repository.packer import pack_size
from coffre.repository.repo import Repository
from coffre.storage.base import Handle

READERS = 2


@dataclass
class CheckResult:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    damaged_packs: dict[str, str] = field(default_factory=dict)  # pack hex -> reason
    affected: dict[str, list[str]] = field(default_factory=dict)  # snapshot id -> file paths
    packs_read: int = 0
    packs_total: int = 0
    snapshots: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors and not self.damaged_packs


def subset_packs(names: list[str], fraction: tuple[int, int]) -> list[str]:
    """Packs of slice n (1-based) out of m: a stable partition by name."""
    n, m = fraction
    return [p for p in sorted(names) if int(p[:8], 16) % m == n - 1]


class Checker:
    def __init__(self, repo: Repository, report: Reporter = quiet) -> None:
        self.repo = repo
        self.report = report
        self.result = CheckResult()
        self._lock = threading.Lock()
        self._unverifiable = 0  # deltas whose base cannot be read

    def run(self, read_data: bool = False, subset: tuple[int, int] | None = None) -> CheckResult:
        r = self.result
        self.repo.load_index(errors=r.errors)
        stored = dict(self.repo.iter_pack_names())
        indexed = self.repo.index.packs()
        r.packs_total = len(stored)
        self.report(f"{len(stored)} packs, {len(self.repo.index)} blobs in the index")
        for pid, entries in indexed.items():
            name = pid.hex()
            if name not in stored:
                r.damaged_packs[name] = "pack is missing"
                continue
            expected = pack_size(entries)
            if stored[name] < expected:
                r.damaged_packs[name] = f"pack is truncated ({stored[name]} of {expected} bytes)"
            elif stored[name] > expected:
                r.damaged_packs[name] = f"pack is too long ({stored[name]} of {expected} bytes)"
        unindexed = sorted(set(stored) - {p.hex() for p in indexed})
        if unindexed:
            r.notes.append(
                f"{len(unindexed)} pack(s) are not in any index (left by an interrupted "
                "operation or waiting in the trash); 'coffre prune' removes unused ones"
            )
        snaps = self.repo.snapshots(errors=r.errors)
        r.snapshots = len(snaps)
        self._check_trees(snaps)
        names = sorted(stored)
        if subset:
            names = subset_packs(names, subset)
        todo = []
        for name in names:
            if name in r.damaged_packs:
                continue
            if stored[name] > packfmt.MAX_PACK:
                r.damaged_packs[name] = f"pack is larger than any Coffre writes ({stored[name]} bytes)"
                continue
            todo.append(name)

        def one(name: str) -> None:
            if read_data or subset:
                self._read_pack(name, indexed.get(bytes.fromhex(name)))
            else:
                self._hash_pack(name)

        # Hashing, decryption and decompression release the GIL: packs are read in parallel.
        with ThreadPoolExecutor(READERS, thread_name_prefix="check") as pool:
            for _ in pool.map(one, todo):
                pass
        if self._unverifiable:
            r.errors.append(
                f"{self._unverifiable} delta blob(s) cannot be read because their base is damaged "
                "or missing"
            )
        self._attribute(snaps)
        return r

    def _check_trees(self, snaps: list[Snapshot]) -> None:
        """Every tree reachable from a snapshot decrypts; every blob it names is indexed."""
        r = self.result
        seen_trees: set[bytes] = set()
        for snap in snaps:
            stack: list[tuple[bytes, str]] = [(snap.tree, "")]
            while stack:
                tree_id, prefix = stack.pop()
                if tree_id in seen_trees:
                    continue
                seen_trees.add(tree_id)
                if tree_id not in self.repo.index:
                    r.errors.append(f"snapshot {snap.id[:8]}: tree of {prefix or '/'} is missing")
                    continue
                try:
                    nodes = load_tree(self.repo, tree_id)
                except (FormatError, StorageError) as exc:
                    r.errors.append(f"snapshot {snap.id[:8]}: tree of {prefix or '/'}: {exc.message}")
                    continue
                for node in nodes:
                    path = prefix + "/" + os.fsdecode(node.name)
                    if node.type == "dir" and node.subtree is not None:
                        stack.append((node.subtree, path))
                    for blob in node.content:
                        loc = self.repo.index.lookup(blob)
                        if loc is None:
                            r.errors.append(f"snapshot {snap.id[:8]}: {path}: data is missing")
                        elif loc.entry.base is not None and loc.entry.base not in self.repo.index:
                            r.errors.append(
                                f"snapshot {snap.id[:8]}: {path}: the base of a delta is missing"
                            )

    def _hash_pack(self, name: str) -> None:
        """Structure check: the pack's bytes match its name (no key needed for this)."""
        try:
            data = self.repo.backend.load(Handle("data", name))
        except StorageError as exc:
            self.result.damaged_packs[name] = f"cannot be read: {exc.message}"
            return
        if hashlib.sha256(data).hexdigest() != name:
            self.result.damaged_packs[name] = "content does not match its name (bit rot or tampering)"

    def _read_pack(self, name: str, entries: list[packfmt.BlobEntry] | None) -> None:
        r = self.result
        with self._lock:
            r.packs_read += 1
        pid = bytes.fromhex(name)
        try:
            data = self.repo.backend.load(Handle("data", name))
        except (ObjectNotFound, StorageError) as exc:
            r.damaged_packs[name] = f"cannot be read: {exc.message}"
            return
        if hashlib.sha256(data).hexdigest() != name:
            r.damaged_packs[name] = "content does not match its name (bit rot or tampering)"
            return
        try:
            header = self.repo.read_pack_header(pid, len(data))
        except FormatError as exc:
            r.damaged_packs[name] = f"header: {exc.message}"
            return
        if entries is not None and sorted(map(_key, header)) != sorted(map(_key, entries)):
            r.errors.append(f"pack {name[:12]}: the index and the pack header disagree")
        view = memoryview(data)
        for e in header:
            base = None
            if e.base is not None:
                try:
                    base = self.repo.load_base(e.base, verify=False)  # checked in its own pack
                except (FormatError, StorageError):
                    # The base's own pack is reported where it is read; this pack is not at fault.
                    with self._lock:
                        self._unverifiable += 1
                    continue
            try:
                self.repo.decode_blob(e, view[e.offset : e.offset + e.length], base)
            except FormatError as exc:
                r.damaged_packs[name] = f"blob {e.id.hex()[:12]}: {exc.message}"
                return

    def _attribute(self, snaps: list[Snapshot]) -> None:
        """Name the files of each snapshot that depend on a damaged pack."""
        r = self.result
        if not r.damaged_packs:
            return
        damaged = {bytes.fromhex(p) for p in r.damaged_packs}

        def lost(blob_id: bytes) -> bool:
            locs = self.repo.index.locations(blob_id)
            if not locs:
                return False
            if all(loc.pack in damaged for loc in locs):
                return True
            base = locs[0].entry.base
            return base is not None and lost(base)

        for snap in snaps:
            hits: list[str] = []
            stack: list[tuple[bytes, str]] = [(snap.tree, "")]
            while stack:
                tree_id, prefix = stack.pop()
                if lost(tree_id):
                    hits.append((prefix or "/") + " (whole directory)")
                    continue
                try:
                    nodes = load_tree(self.repo, tree_id)
                except (FormatError, StorageError):
                    continue
                for node in nodes:
                    path = prefix + "/" + os.fsdecode(node.name)
                    if node.type == "dir" and node.subtree is not None:
                        stack.append((node.subtree, path))
                    elif any(lost(b) for b in node.content):
                        hits.append(path)
            if hits:
                r.affected[snap.id] = sorted(hits)


def _key(e: packfmt.BlobEntry) -> tuple[int, bytes, int, int, int, bytes]:
    return (e.kind, e.id, e.offset, e.length, e.raw_length, e.base or b"")
