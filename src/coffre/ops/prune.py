"""Prune: reclaim the space of data no snapshot uses, without ever taking what a backup
needs.

1. Note the locks live now; load every index and snapshot; refuse if anything is unreadable
   or missing (a listing error must never look like unused data).
2. Mark the blobs reachable from snapshots; packs in the trash that hold a used blob (data or
   tree) are re-published ("resurrected"): a backup deduplicated against them while an
   earlier prune ran.
3. Packs: fully used are kept; fully unused go to the trash; partly used with enough waste
   are repacked (used blobs copied as they are, verified, into new packs).
4. Write the new index, then delete the old index files, then record the trash with every
   lock live at the start or now.
5. Empty the trash: note the locks live now, skip records naming one of them, then reload the
   index and the snapshots, mark again (resurrecting what a snapshot written meanwhile uses)
   and delete the remaining packs that no index lists.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from coffre.core.errors import CoffreError, FormatError, ObjectNotFound, StorageError
from coffre.format.pack import BlobEntry
from coffre.format.snapshot import Snapshot
from coffre.ops.common import Reporter, load_tree, quiet
from coffre.repository.index import MasterIndex
from coffre.repository.locks import Lock, live_locks
from coffre.repository.packer import Packer
from coffre.repository.repo import Repository
from coffre.repository.trash import TrashRecord, load_trash, save_trash
from coffre.storage.base import Handle

REPACK_WASTE = 0.10  # repack a pack when at least this share of its bytes is unused
TEMP_AGE_NS = 24 * 3600 * 10**9


@dataclass
class PruneStats:
    packs_kept: int = 0
    packs_removed: int = 0
    packs_repacked: int = 0
    packs_unindexed: int = 0
    bytes_freed: int = 0
    bytes_repacked: int = 0
    packs_deleted: int = 0
    packs_waiting: int = 0
    blobs_resurrected: int = 0
    temporaries_removed: int = 0
    notes: list[str] = field(default_factory=list)


def worth_repacking(pack_size: int, used_bytes: int, used_blobs: int, all_blobs: int) -> bool:
    """Prune repacks a pack when some of its blobs are unused and waste enough of its bytes."""
    return used_blobs < all_blobs and used_bytes < pack_size * (1 - REPACK_WASTE)


class Marker:
    """Marks the blobs reachable from snapshots. A blob missing from the index is looked for in
    the packs waiting in the trash; such a pack is put back into the in-memory index and
    reported as resurrected."""

    def __init__(self, repo: Repository, records: list[TrashRecord]) -> None:
        self.repo = repo
        self.records = records
        self._trashed: dict[bytes, bytes] | None = None  # blob id -> trashed pack
        self._headers: dict[bytes, list[BlobEntry]] = {}
        self.resurrected: dict[bytes, list[BlobEntry]] = {}

    def _find_in_trash(self, blob_id: bytes) -> bool:
        if self._trashed is None:
            self._trashed = {}
            for rec in self.records:
                for pid in rec.packs:
                    try:
                        entries = self.repo.read_pack_header(pid)
                    except (ObjectNotFound, FormatError):
                        continue
                    self._headers[pid] = entries
                    for e in entries:
                        self._trashed.setdefault(e.id, pid)
        holder = self._trashed.get(blob_id)
        if holder is None:
            return False
        self.resurrected[holder] = self._headers[holder]
        self.repo.index.add_pack(holder, self._headers[holder])
        return True

    def _require(self, blob_id: bytes, what: str) -> None:
        if blob_id not in self.repo.index and not self._find_in_trash(blob_id):
            raise CoffreError(
                f"{what} is in no index and no pack; prune refuses to run",
                "run 'coffre check', then 'coffre repair index' and a new backup",
            )

    def _mark_base(self, blob: bytes, used: set[bytes], snap: Snapshot) -> None:
        """A delta blob is only readable with its base: the base is used too."""
        base = self.repo.index.base_of(blob)
        if base is not None and base not in used:
            self._require(base, f"the base of a delta blob of snapshot {snap.id[:8]}")
            used.add(base)

    def mark(self, snaps: list[Snapshot]) -> set[bytes]:
        used: set[bytes] = set()
        for snap in snaps:
            stack = [snap.tree]
            while stack:
                tree_id = stack.pop()
                if tree_id in used:
                    continue
                used.add(tree_id)
                self._require(tree_id, f"a tree of snapshot {snap.id[:8]}")
                for node in load_tree(self.repo, tree_id):
                    for blob in node.content:
                        if blob not in used:
                            self._require(blob, f"data of snapshot {snap.id[:8]}")
                            used.add(blob)
                            self._mark_base(blob, used, snap)
                    if node.subtree is not None:
                        stack.append(node.subtree)
        return used


def _other_live_locks(repo: Repository, mine: Lock) -> set[str]:
    return {lk.lock_id for lk in live_locks(repo)} - {mine.lock_id}


class Pruner:
    def __init__(self, repo: Repository, lock: Lock, report: Reporter = quiet) -> None:
        self.repo = repo
        self.lock = lock
        self.report = report
        self.stats = PruneStats()

    def run(self, dry_run: bool = False) -> PruneStats:
        repo, st = self.repo, self.stats
        live_at_start = _other_live_locks(repo, self.lock)
        repo.load_index()
        stored = dict(repo.iter_pack_names())
        missing = [p.hex() for p in repo.index.pack_ids() if p.hex() not in stored]
        if missing:
            raise CoffreError(
                f"{len(missing)} pack(s) listed in the index are missing from storage "
                f"(first: {missing[0][:12]}); prune refuses to run",
                "run 'coffre check' then 'coffre repair index'",
            )
        records = load_trash(repo)
        marker = Marker(repo, records)
        used = marker.mark(repo.snapshots())
        resurrect = marker.resurrected
        indexed = repo.index.packs()

        keep: dict[bytes, list[BlobEntry]] = {}
        repack: dict[bytes, list[BlobEntry]] = {}
        remove: list[bytes] = []
        placed: set[bytes] = set()
        for pid, entries in sorted(indexed.items(), key=lambda kv: -len(kv[1])):
            live = [e for e in entries if e.id in used and e.id not in placed]
            size = stored.get(pid.hex(), 0)
            live_bytes = sum(e.length for e in live)
            if not live:
                remove.append(pid)
                st.bytes_freed += size
            elif worth_repacking(size, live_bytes, len(live), len(entries)):
                repack[pid] = live
                st.bytes_freed += size - live_bytes
                st.bytes_repacked += live_bytes
            else:
                keep[pid] = entries
            placed.update(e.id for e in live)
        indexed_names = {p.hex() for p in indexed}
        trashed = {p.hex() for rec in records for p in rec.packs}
        unindexed = [bytes.fromhex(n) for n in stored if n not in indexed_names and n not in trashed]
        st.packs_kept, st.packs_removed = len(keep), len(remove)
        st.packs_repacked, st.packs_unindexed = len(repack), len(unindexed)
        st.blobs_resurrected = sum(len(v) for v in resurrect.values())
        self.report(
            f"packs: {len(keep)} kept, {len(repack)} to repack, {len(remove)} unused, "
            f"{len(unindexed)} not indexed; {st.bytes_freed} bytes to free"
        )
        if dry_run:
            return st
        if repack or remove or unindexed or resurrect:
            new_packs = self._repack(repack)
            keep.update(new_packs)
            self._write_index(keep)
            self.lock.check_lease()
            holders = live_at_start | _other_live_locks(repo, self.lock)
            save_trash(repo, [*remove, *repack.keys(), *unindexed], sorted(holders))
        self._empty_trash()
        # Partial uploads of crashed writers; a day is far longer than any write takes.
        st.temporaries_removed = repo.backend.clean_temporaries(repo.clock.now_ns() - TEMP_AGE_NS)
        return st

    def _repack(self, repack: dict[bytes, list[BlobEntry]]) -> dict[bytes, list[BlobEntry]]:
        packer = Packer(self.repo)
        for pid, live in repack.items():
            data = self.repo.backend.load(Handle("data", pid.hex()))
            if hashlib.sha256(data).hexdigest() != pid.hex():
                raise CoffreError(
                    f"pack {pid.hex()[:12]} is damaged; prune stops before changing anything",
                    "run 'coffre check --read-data'",
                )
            view = memoryview(data)
            for e in live:
                envelope = bytes(view[e.offset : e.offset + e.length])
                self.repo.decode_blob(e, envelope)
                packer.add_encrypted(e.kind, e.id, envelope, e.raw_length, e.base)
        packer.flush()
        return packer.take_written()

    def _write_index(self, packs: dict[bytes, list[BlobEntry]]) -> None:
        old = sorted(self.repo.index.loaded_files)
        self.repo.save_full_index(packs)
        for name in old:
            try:
                self.repo.backend.remove(Handle("index", name))
            except ObjectNotFound:
                pass

    def _empty_trash(self) -> None:
        """Delete the trashed packs no running operation and no snapshot can need."""
        repo, st = self.repo, self.stats
        live = _other_live_locks(repo, self.lock)  # before reading the snapshots
        records = load_trash(repo)
        eligible = [rec for rec in records if not live & set(rec.live_locks)]
        st.packs_waiting = sum(len(rec.packs) for rec in records if rec not in eligible)
        if st.packs_waiting:
            st.notes.append(
                f"{st.packs_waiting} pack(s) wait in the trash until operations that were "
                "running have finished; the next prune deletes them"
            )
        if not eligible:
            return
        # Snapshots written since this prune started may use trashed blobs: mark again.
        repo.index = MasterIndex()
        repo.load_index()
        marker = Marker(repo, records)
        marker.mark(repo.snapshots())
        if marker.resurrected:
            repo.save_index(marker.resurrected)
            st.blobs_resurrected += sum(len(v) for v in marker.resurrected.values())
        in_index = repo.index.pack_ids()
        for rec in eligible:
            for pid in rec.packs:
                if pid in in_index:
                    continue
                try:
                    repo.backend.remove(Handle("data", pid.hex()))
                    st.packs_deleted += 1
                except ObjectNotFound:
                    pass
                except StorageError as exc:
                    raise CoffreError(f"cannot delete pack {pid.hex()[:12]}: {exc.message}") from exc
            repo.backend.remove(Handle("trash", rec.name))
