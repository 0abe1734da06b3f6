"""Prune: reclaim the space of data no snapshot uses, without ever taking what a backup
needs.

1. Load every index and snapshot; refuse if anything is unreadable or missing (a listing
   error must never look like unused data).
2. Mark the blobs reachable from snapshots; blobs found only in trashed packs are
   re-published (a backup deduplicated against them while an earlier prune ran).
3. Packs: fully used are kept; fully unused go to the trash; partly used with enough waste
   are repacked (used blobs copied as they are, verified, into new packs).
4. Write the new index, then delete the old index files, then record the trash.
5. Delete trashed packs whose trash record saw no lock that is still live, and that no
   current index lists. Others wait for a later prune.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from coffre.core.errors import CoffreError, FormatError, ObjectNotFound, StorageError
from coffre.format.pack import BlobEntry
from coffre.ops.common import Reporter, load_tree, quiet
from coffre.repository.index import MasterIndex
from coffre.repository.locks import Lock, live_locks
from coffre.repository.packer import Packer
from coffre.repository.repo import Repository
from coffre.repository.trash import load_trash, save_trash
from coffre.storage.base import Handle

REPACK_WASTE = 0.10  # repack a pack when at least this share of its bytes is unused
INDEX_FILE_PACKS = 2000


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
    notes: list[str] = field(default_factory=list)


def worth_repacking(pack_size: int, used_bytes: int, used_blobs: int, all_blobs: int) -> bool:
    """Prune repacks a pack when some of its blobs are unused and waste enough of its bytes."""
    return used_blobs < all_blobs and used_bytes < pack_size * (1 - REPACK_WASTE)


def used_blobs(repo: Repository) -> set[bytes]:
    """Every blob reachable from a snapshot. Raises if a tree cannot be read."""
    used: set[bytes] = set()
    for snap in repo.snapshots():
        stack = [snap.tree]
        while stack:
            tree_id = stack.pop()
            if tree_id in used:
                continue
            used.add(tree_id)
            if tree_id not in repo.index:
                raise CoffreError(
                    f"snapshot {snap.id[:8]} references a tree that is in no index; prune refuses to run",
                    "run 'coffre check' and 'coffre repair index' first",
                )
            for node in load_tree(repo, tree_id):
                used.update(node.content)
                if node.subtree is not None:
                    stack.append(node.subtree)
    return used


class Pruner:
    def __init__(self, repo: Repository, lock: Lock, report: Reporter = quiet) -> None:
        self.repo = repo
        self.lock = lock
        self.report = report
        self.stats = PruneStats()

    def run(self, dry_run: bool = False) -> PruneStats:
        repo, st = self.repo, self.stats
        repo.load_index()
        stored = dict(repo.iter_pack_names())
        indexed = repo.index.packs()
        missing = [p.hex() for p in indexed if p.hex() not in stored]
        if missing:
            raise CoffreError(
                f"{len(missing)} pack(s) listed in the index are missing from storage "
                f"(first: {missing[0][:12]}); prune refuses to run",
                "run 'coffre check' then 'coffre repair index'",
            )
        used = used_blobs(repo)
        resurrect = self._resurrect(used)
        for pid, entries in resurrect.items():
            indexed[pid] = entries
            repo.index.add_pack(pid, entries)
        absent = [b for b in used if b not in repo.index]
        if absent:
            raise CoffreError(
                f"{len(absent)} blob(s) used by snapshots are in no index or pack; prune refuses to run",
                "run 'coffre check' then 'coffre repair index' and a new backup",
            )

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
        trashed = {p.hex() for rec in load_trash(repo) for p in rec.packs}
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
            others = [lk.lock_id for lk in live_locks(repo) if lk.lock_id != self.lock.lock_id]
            save_trash(repo, [*remove, *repack.keys(), *unindexed], others)
        self._empty_trash()
        return st

    def _resurrect(self, used: set[bytes]) -> dict[bytes, list[BlobEntry]]:
        missing = {b for b in used if b not in self.repo.index}
        found: dict[bytes, list[BlobEntry]] = {}
        if not missing:
            return found
        for rec in load_trash(self.repo):
            for pid in rec.packs:
                try:
                    entries = self.repo.read_pack_header(pid)
                except (ObjectNotFound, FormatError):
                    continue
                if any(e.id in missing for e in entries):
                    found[pid] = entries
                    missing -= {e.id for e in entries}
        return found

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
                packer.add_encrypted(e.kind, e.id, envelope, e.raw_length)
        packer.flush()
        return packer.take_written()

    def _write_index(self, packs: dict[bytes, list[BlobEntry]]) -> None:
        old = sorted(self.repo.index.loaded_files)
        items = list(packs.items())
        for i in range(0, len(items), INDEX_FILE_PACKS):
            self.repo.save_index(dict(items[i : i + INDEX_FILE_PACKS]))
        for name in old:
            try:
                self.repo.backend.remove(Handle("index", name))
            except ObjectNotFound:
                pass

    def _empty_trash(self) -> None:
        repo, st = self.repo, self.stats
        records = load_trash(repo)
        if not records:
            return
        live = {lk.lock_id for lk in live_locks(repo)} - {self.lock.lock_id}
        current = MasterIndex()
        repo.load_index(into=current)
        in_index = current.pack_ids()
        for rec in records:
            if live & set(rec.live_locks):
                st.packs_waiting += len(rec.packs)
                continue
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
        if st.packs_waiting:
            st.notes.append(
                f"{st.packs_waiting} pack(s) wait in the trash until operations that were "
                "running have finished; the next prune deletes them"
            )
