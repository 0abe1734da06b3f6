"""Prune: reclaim the space of data no snapshot uses, without ever taking what a backup
needs.

1. Note the locks live now; load every index and snapshot; refuse if anything is unreadable
   (a listing error must never look like unused data). Packs the index lists but storage
   lacks are confirmed gone one by one; they are tolerated only if no snapshot needs them.
   Damaged blobs known from `check` (the damage register, read again here) leave the index.
2. Mark the blobs reachable from snapshots; packs in the trash that hold a used blob (data or
   tree) are re-published ("resurrected"): a backup deduplicated against them while an
   earlier prune ran.
3. Packs: fully used are kept; fully unused go to the trash; partly used with enough waste,
   and damaged packs still holding used blobs, are repacked (used blobs copied as they are,
   each authenticated, into new packs) as far as the free space and --max-repack-size
   allow.
4. Write the new index, then delete the old index files, then record the trash with every
   lock live at the start or now.
5. Empty the trash: note the locks live now, skip records naming one of them, then reload the
   index (step 4's files taken as written, every other one read) and the snapshots, mark
   again (resurrecting what a snapshot written meanwhile uses; only the folder listings the
   first marking did not read) and delete the remaining packs that no index lists.

On a full medium, where not even the lock can be written, `free_unused_packs` first deletes
packs that no snapshot uses, while no other Coffre command holds a lock (docs/design.md §6).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from coffre.core.errors import CoffreError, FormatError, ObjectNotFound, StorageError
from coffre.core.human import human_size
from coffre.core.i18n import N_, _, ngettext
from coffre.core.progress import NULL_PROGRESS, Progress
from coffre.crypto.aead import KIND_TREE
from coffre.format.pack import BlobEntry
from coffre.format.snapshot import Snapshot
from coffre.ops.common import Reporter, load_tree, quiet
from coffre.policy import log_retention
from coffre.repository import segments
from coffre.repository.damage import PACK_ITSELF
from coffre.repository.index import MasterIndex
from coffre.repository.locks import Lock, live_locks
from coffre.repository.packer import Packer
from coffre.repository.repo import Repository
from coffre.repository.trash import TrashRecord, load_trash, save_trash
from coffre.repository.walked import Walked, WalkedListings
from coffre.storage.base import Handle

REPACK_WASTE = 0.10  # repack a pack when at least this share of its bytes is unused
# Each backup ends with a partly filled pack or two (its folder listings have packs of their
# own): small packs are merged once this many have gathered, so that a year of daily backups
# does not leave a thousand of them for a restore to fetch one by one.
SMALL_PACK_SHARE = 0.5  # of the configured pack size
SMALL_PACKS_MERGED_AT = 10
TEMP_AGE_NS = 24 * 3600 * 10**9
SPACE_MARGIN = 1024 * 1024  # kept free beyond the new index when repacking on a full medium
# A repacked pack is read in spans of at most this much (or one blob, if larger), not whole:
# the pack being read sits in memory beside the one being filled and the one being written.
REPACK_SPAN = 4 * 1024 * 1024


# Which log pieces the engines' rules above this layer let go: (stored pieces, kept snapshots,
# the oldest kept snapshot's time) -> object names (continuity/retention.py).
MoreRemovable = Callable[[list[segments.StoredSegment], list[Snapshot], int], list[str]]
# Engines whose base backups start a log stream: a kept one that does not say where (taken by
# an older Coffre) keeps every piece of that engine's streams.
LOG_ENGINES = {"postgres-cluster": "postgres"}


@dataclass
class PruneStats:
    packs_kept: int = 0
    packs_removed: int = 0
    packs_repacked: int = 0
    packs_unindexed: int = 0
    packs_gone: int = 0
    packs_not_repacked: int = 0
    packs_merged: int = 0  # small packs among those repacked (SMALL_PACKS_MERGED_AT)
    bytes_freed: int = 0
    bytes_repacked: int = 0
    packs_deleted: int = 0
    packs_waiting: int = 0
    blobs_resurrected: int = 0
    blobs_damaged: int = 0
    temporaries_removed: int = 0
    segments_removed: int = 0  # log pieces (continuity) no kept backup can replay
    segments_bytes: int = 0
    listings_decoded: int = 0  # folder listings the markings decoded
    listings_remembered: int = 0  # ... and took as earlier checks remembered them
    notes: list[str] = field(default_factory=list)


def worth_repacking(pack_size: int, used_bytes: int, used_blobs: int, all_blobs: int) -> bool:
    """Prune repacks a pack when some of its blobs are unused and waste enough of its bytes."""
    return used_blobs < all_blobs and used_bytes < pack_size * (1 - REPACK_WASTE)


def forget_hint(snapshot_id: str) -> str:
    return _("run 'coffre check'; if the data is lost for good, 'coffre forget {id}' removes the "
             "snapshot (a new backup stores again what the live files still hold), then prune "
             "again").format(id=snapshot_id[:8])


class Marker:
    """Marks the blobs reachable from snapshots. A blob missing from the index is looked for in
    the packs waiting in the trash; such a pack is put back into the in-memory index and
    reported as resurrected."""

    def __init__(
        self, repo: Repository, records: list[TrashRecord], lost_in: dict[bytes, str] | None = None,
        damaged: set[tuple[bytes, bytes]] | None = None, progress: Progress = NULL_PROGRESS,
    ) -> None:
        self.repo = repo
        self.progress = progress
        self.records = records
        self.lost_in = lost_in or {}  # blob id -> where it was lost ("was in pack X, which ...")
        self.damaged = damaged or set()  # (pack, blob) copies never to be brought back
        self._trashed: dict[bytes, bytes] | None = None  # blob id -> trashed pack
        self._headers: dict[bytes, list[BlobEntry]] = {}
        self.resurrected: dict[bytes, list[BlobEntry]] = {}
        self.listings_decoded = 0
        self.listings_remembered = 0

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
                        if (pid, e.id) not in self.damaged:
                            self._trashed.setdefault(e.id, pid)
        holder = self._trashed.get(blob_id)
        if holder is None:
            return False
        self.resurrected[holder] = self._headers[holder]
        self.repo.index.add_pack(holder, self._headers[holder])
        return True

    def _require(self, blob_id: bytes, what: str, snap: Snapshot) -> None:
        """The blob is in the index, or put back from the trash; else prune stops. `what`:
        "tree", "data" or "base" (the message is made only when it is needed)."""
        if blob_id not in self.repo.index and not self._find_in_trash(blob_id):
            where = self.lost_in.get(blob_id) or _("is in no index and no pack")
            raise CoffreError(_("{what} {where}; prune refuses to run").format(
                what=_what(what, snap), where=where), forget_hint(snap.id))

    def mark(self, snaps: list[Snapshot], known: set[bytes] | None = None,
             remembered: dict[bytes, Walked] | None = None) -> set[bytes]:
        """The blobs `snaps` use. `known`: blobs already marked and present in the index, with
        every blob a known tree reaches; a known tree is not read again. A delta blob is only
        readable with its base: the base is used too.

        `remembered`: folder listings earlier checks decoded (repository/walked.py), each under
        a MAC of the repository's key. What a listing names depends on its id alone (ids are
        content hashes), so a remembered one names what decoding it would: it is taken as it
        is, wherever its copy lies now. The listing must still be indexed (or in the trash), as
        any other; whether its stored bytes are intact is check's question, and a damaged
        copy stops a repack that would move it."""
        remembered = remembered or {}
        used: set[bytes] = set(known) if known else set()
        lookup = self.repo.index.lookup_function()
        self.progress.phase(N_("finding the data snapshots use"), files_total=len(snaps), known=True,
                            unit=N_("snapshots"))
        for snap in snaps:
            self.progress.advance(current=f"{snap.id[:8]} {', '.join(snap.paths)}".rstrip())
            stack = [snap.tree]
            while stack:
                tree_id = stack.pop()
                if tree_id in used:
                    continue
                used.add(tree_id)
                self._require(tree_id, "tree", snap)
                listing = remembered.get(tree_id)
                names = listing.names() if listing is not None else None
                if names is not None:
                    self.listings_remembered += 1
                    stack.extend(names[0])
                    new = set(names[1])
                else:
                    self.listings_decoded += 1
                    try:
                        nodes = load_tree(self.repo, tree_id)
                    except CoffreError as exc:
                        raise CoffreError(_("a tree of snapshot {id} cannot be read ({reason}); prune "
                                            "refuses to run").format(id=snap.id[:8], reason=exc.message),
                                          forget_hint(snap.id)) from exc
                    stack.extend(n.subtree for n in nodes if n.subtree is not None)
                    new = {b for n in nodes for b in n.content}
                # Only the blobs no listing before named are looked up (in C, as sets: a
                # year's history names ~100,000, most in several listings).
                new -= used
                for blob in new:
                    loc = lookup(blob)
                    if loc is None:
                        self._require(blob, "data", snap)
                        loc = lookup(blob)
                    base = loc.entry.base if loc is not None else None
                    if base is not None and base not in used:
                        self._require(base, "base", snap)
                        used.add(base)
                used |= new
            self.progress.advance(1)
        return used


def _what(kind: str, snap: Snapshot) -> str:
    if kind == "tree":
        return _("a tree of snapshot {id}").format(id=snap.id[:8])
    if kind == "base":
        return _("the base of a delta blob of snapshot {id}").format(id=snap.id[:8])
    return _("data of snapshot {id}").format(id=snap.id[:8])


def readable_snapshots(repo: Repository) -> list[Snapshot]:
    """Every snapshot; one that cannot be read stops prune, naming how to remove it."""
    errors: list[str] = []
    snaps = repo.snapshots(errors=errors)
    if errors:
        found = re.search(r"\b([0-9a-f]{8,})\b", errors[0])  # the snapshot's id, in any language
        hint = _("if it is damaged for good, 'coffre forget {id}' removes it (its data stays until a "
                 "prune finds it unused), then prune again").format(id=found.group(1)[:8]) if found else None
        raise CoffreError(_("{error}; prune refuses to run while a snapshot cannot be read").format(
            error=errors[0]), hint)
    return snaps


def confirm_gone(repo: Repository, candidates: set[bytes]) -> set[bytes]:
    """Indexed packs the listing lacks, each confirmed absent: a listing that forgot a pack
    must never make prune drop it."""
    for pid in sorted(candidates):
        try:
            repo.backend.stat(Handle("data", pid.hex()))
        except ObjectNotFound:
            continue
        raise CoffreError(
            _("the storage listing lacks pack {pack}, which exists; prune refuses to run").format(
                pack=pid.hex()[:12]),
            _("the storage answered an incomplete listing: try again later"),
        )
    return candidates


def damaged_in(repo: Repository, data: bytes, entries: list[BlobEntry]) -> set[bytes]:
    """The blobs of a pack's bytes that do not authenticate (a delta whose base cannot be
    read is not counted: its own bytes may be fine)."""
    view = memoryview(data)
    bad = set()
    for e in entries:
        if e.offset + e.length > len(data):
            bad.add(e.id)
            continue
        try:
            base = repo.load_base(e.base, verify=False) if e.base is not None else None
        except (FormatError, StorageError):
            continue
        try:
            repo.decode_blob(e, view[e.offset : e.offset + e.length], base)
        except FormatError:
            bad.add(e.id)
    return bad


def _all_but(pack: bytes, blob_id: bytes) -> Callable[[bytes, BlobEntry], bool]:
    return lambda pid, e: (pid, e.id) != (pack, blob_id)


def _other_live_locks(repo: Repository, mine: Lock | None) -> set[str]:
    return {lk.lock_id for lk in live_locks(repo)} - ({mine.lock_id} if mine else set())


class Pruner:
    def __init__(
        self, repo: Repository, lock: Lock, report: Reporter = quiet,
        damaged: set[tuple[bytes, bytes]] | None = None, max_repack: int | None = None,
        progress: Progress = NULL_PROGRESS,
        more_removable: MoreRemovable | None = None,
        walked: WalkedListings | None = None,
    ) -> None:
        self.repo = repo
        self.lock = lock
        self.walked = walked  # the listings earlier checks decoded, for the first marking
        # Engine rules above this layer (continuity/retention.py: SQLite's generations).
        self.more_removable = more_removable
        self.progress = progress
        self.report = report
        self.damaged = damaged or set()  # (pack, blob) pairs from this machine's damage register
        self.max_repack = max_repack
        self.stats = PruneStats()
        # For the damage register: packs it need no longer name (deleted, gone, read intact).
        self.damage_resolved: list[bytes] = []
        self._marked: set[bytes] = set()  # what the first marking found used
        self._written: tuple[set[str], dict[bytes, list[BlobEntry]]] | None = None  # index files, packs

    def run(self, dry_run: bool = False) -> PruneStats:
        repo, st = self.repo, self.stats
        live_at_start = _other_live_locks(repo, self.lock)
        self.progress.phase(N_("loading the index"))
        repo.load_index()
        stored = dict(repo.iter_pack_names())
        gone = confirm_gone(repo, {p for p in repo.index.pack_ids() if p.hex() not in stored})
        bad = self._recheck_damage(stored)
        indexed_before = repo.index.packs()
        lost_in = {e.id: _("was in pack {pack}, which is missing from storage").format(pack=pid.hex()[:12])
                   for pid in gone for e in indexed_before[pid]}
        lost_in.update({b: _("is damaged in pack {pack}").format(pack=pid.hex()[:12])
                        for pid, blobs in bad.items() for b in blobs})
        repo.index.drop_packs(gone)
        st.blobs_damaged = repo.index.retain(lambda pid, e: e.id not in bad.get(pid, ()))
        st.packs_gone = len(gone)
        records = load_trash(repo)
        snaps = readable_snapshots(repo)
        # Held for the first marking only: freed, its memory serves the repack. The second
        # marking (_empty_trash) reads only listings written since, which no check has met.
        remembered = self.walked.load() if self.walked is not None else None
        marker = Marker(repo, records, lost_in, self._known_bad(bad), self.progress)
        used = marker.mark(snaps, remembered=remembered)
        if self._drop_bad_duplicates(used, bad):
            marker = Marker(repo, records, lost_in, self._known_bad(bad), self.progress)
            used = marker.mark(snaps, remembered=remembered)
        del remembered
        resurrect = marker.resurrected
        self._marked = used
        self._count_listings(marker)
        indexed = repo.index.packs()

        keep: dict[bytes, list[BlobEntry]] = {}
        repack: dict[bytes, list[BlobEntry]] = {}
        remove: list[bytes] = []
        small: dict[bytes, list[BlobEntry]] = {}  # kept whole, unless enough to merge
        placed: set[bytes] = set()
        lookup = repo.index.lookup_function()
        for pid, entries in sorted(indexed.items(), key=lambda kv: -len(kv[1])):
            # A used blob stays where readers (and the marking, for a delta's base) find it
            # first: its plain copy if it has one, an intact one (see _drop_bad_duplicates).
            live = [e for e in entries if e.id in used and e.id not in placed
                    and (loc := lookup(e.id)) is not None and loc.pack == pid]
            size = stored.get(pid.hex(), 0)
            live_bytes = sum(e.length for e in live)
            if not live:
                remove.append(pid)
                st.bytes_freed += size
            elif pid in bad or worth_repacking(size, live_bytes, len(live), len(entries)):
                repack[pid] = live  # a damaged pack always goes: its intact blobs move out
            else:
                keep[pid] = entries
                if size < repo.config.pack_size * SMALL_PACK_SHARE:
                    small[pid] = live
            placed.update(e.id for e in live)
        if len(small) >= SMALL_PACKS_MERGED_AT:
            for pid, live in small.items():
                del keep[pid]
                repack[pid] = live
        self._fit_repack(repack, keep, indexed, bad, stored)
        st.packs_merged = sum(1 for pid in small if pid in repack)
        for pid, live in repack.items():
            live_bytes = sum(e.length for e in live)
            st.bytes_freed += stored.get(pid.hex(), 0) - live_bytes
            st.bytes_repacked += live_bytes
        indexed_names = {p.hex() for p in indexed}
        trashed = {p.hex() for rec in records for p in rec.packs}
        unindexed = [bytes.fromhex(n) for n in stored if n not in indexed_names and n not in trashed]
        st.packs_kept, st.packs_removed = len(keep), len(remove)
        st.packs_repacked, st.packs_unindexed = len(repack), len(unindexed)
        st.blobs_resurrected = sum(len(v) for v in resurrect.values())
        if st.packs_merged:
            st.notes.append(ngettext(
                "{n} small pack merged into full ones", "{n} small packs merged into full ones",
                st.packs_merged).format(n=st.packs_merged))
        if gone:
            st.notes.append(ngettext(
                "{n} pack listed in the index was gone and held nothing a snapshot needs: left out "
                "of the new index",
                "{n} packs listed in the index were gone and held nothing a snapshot needs: left out "
                "of the new index", len(gone)).format(n=len(gone)))
        self.report(_("packs: {kept} kept, {repack} to repack, {unused} unused, {unindexed} not "
                      "indexed; {size} to free").format(
            kept=len(keep), repack=len(repack), unused=len(remove), unindexed=len(unindexed),
            size=human_size(st.bytes_freed)))
        if dry_run:
            return st
        if repack or remove or unindexed or resurrect or gone or st.blobs_damaged:
            new_packs = self._repack(repack)
            keep.update(new_packs)
            self.lock.check_lease()  # before the old index files go
            self.progress.phase(N_("writing the index"))
            self._write_index(keep)
            self._note_moved_listings(repack, new_packs)
            holders = live_at_start | _other_live_locks(repo, self.lock)
            save_trash(repo, [*remove, *repack.keys(), *unindexed], sorted(holders))
        self._empty_trash(bad)
        self._expire_segments(snaps, dry_run)
        # Partial uploads of crashed writers; a day is far longer than any write takes.
        st.temporaries_removed = repo.backend.clean_temporaries(repo.clock.now_ns() - TEMP_AGE_NS)
        self.damage_resolved += [p for p in {p for p, _blob in self.damaged} if p.hex() not in stored]
        return st

    def _expire_segments(self, snaps: list[Snapshot], dry_run: bool) -> None:
        """Log pieces no kept backup can replay any more (policy/log_retention.py). Only when no
        other command holds a lock: a restore or a standby may be replaying them."""
        repo, st = self.repo, self.stats
        stored = segments.listing(repo, errors=[])
        if not stored:
            return
        floors: dict[str, int] = {}
        unknown: set[str] = set()
        for snap in snaps:
            for record in snap.databases:
                stream, start = record.extra.get("stream"), record.extra.get("stream_from", "")
                if stream and start.isdigit():
                    floors[stream] = min(floors.get(stream, int(start)), int(start))
                elif record.engine in LOG_ENGINES:
                    unknown.add(LOG_ENGINES[record.engine])
        cutoff = min((s.time_ns for s in snaps), default=None)
        by_object = {s.object: s for s in stored}
        # PostgreSQL's streams here; the other engines' rules come from above (more_removable).
        going = {p.object for p in log_retention.removable(
            [log_retention.Piece(s.object, s.header.stream, s.header.kind, s.header.start, s.header.end,
                                 s.header.time_ns) for s in stored if s.header.engine == "postgres"],
            floors, cutoff, unknown)}
        if self.more_removable is not None and cutoff is not None:
            going |= set(self.more_removable(stored, snaps, cutoff)) & by_object.keys()
        if not going:
            return
        size = sum(by_object[name].header.size for name in going)
        if dry_run or _other_live_locks(repo, self.lock):
            if not dry_run:
                st.notes.append(ngettext(
                    "{n} log piece no kept backup needs is kept for now: another command holds a lock",
                    "{n} log pieces no kept backup needs are kept for now: another command holds a lock",
                    len(going)).format(n=len(going)))
            return
        self.lock.check_lease()
        for name in sorted(going):
            segments.remove(repo, by_object[name])
        st.segments_removed, st.segments_bytes = len(going), size

    def _still_indexed(self, marked: set[bytes]) -> set[bytes] | None:
        """What the first marking found, if the index just reloaded lists all of it. Trees are
        named by their content, so a tree marked then reaches the same blobs now: the second
        marking need only walk the trees written since (concurrent backups). If anything is
        missing, None: everything is marked again, resurrecting from the trash as needed."""
        return marked if self.repo.index.has_all(marked) else None

    def _count_listings(self, marker: Marker) -> None:
        self.stats.listings_decoded += marker.listings_decoded
        self.stats.listings_remembered += marker.listings_remembered

    def _known_bad(self, bad: dict[bytes, set[bytes]]) -> set[tuple[bytes, bytes]]:
        return {(p, b) for p, blobs in bad.items() for b in blobs}

    def _drop_bad_duplicates(self, used: set[bytes], bad: dict[bytes, set[bytes]]) -> bool:
        """A used blob stored several times keeps one copy, the one readers try first: make
        sure it reads (authenticated), whatever this machine's damage register knows, so a
        damaged copy never wins over a good one (a heal from another machine). True if
        some copy was found damaged and left the index."""
        index = self.repo.index
        dropped = False
        for blob_id in sorted(used & index.stored_more_than_once()):
            while len(index.locations(blob_id)) > 1:
                loc = index.lookup(blob_id)
                assert loc is not None
                try:
                    envelope = self.repo.backend.load(Handle("data", loc.pack.hex()), loc.entry.offset,
                                                      loc.entry.length)
                    self.repo.decode_blob(loc.entry, envelope)
                    break
                except FormatError:
                    bad.setdefault(loc.pack, set()).update({blob_id, PACK_ITSELF})
                    index.retain(_all_but(loc.pack, blob_id))
                    self.stats.blobs_damaged += 1
                    dropped = True
                except StorageError:
                    break  # cannot tell: the copy readers use stays
        return dropped

    def _recheck_damage(self, stored: dict[str, int]) -> dict[bytes, set[bytes]]:
        """The packs the damage register names, read again: pack -> its damaged blobs (and
        PACK_ITSELF). A pack that now reads correctly is cleared (it was a fault of the
        reading, not of the data); one that is gone no longer matters."""
        bad: dict[bytes, set[bytes]] = {}
        for pid in sorted({p for p, _blob in self.damaged}):
            if pid.hex() not in stored:
                continue
            try:
                data = self.repo.backend.load(Handle("data", pid.hex()))
            except ObjectNotFound:
                continue
            if hashlib.sha256(data).hexdigest() == pid.hex():
                self.damage_resolved.append(pid)
                continue
            entries = self.repo.index.packs().get(pid)
            if entries is None:
                try:
                    entries = self.repo.read_pack_header(pid, data=data)
                except (FormatError, StorageError):
                    entries = []
            bad[pid] = damaged_in(self.repo, data, entries) | {PACK_ITSELF}
        return bad

    def _fit_repack(
        self, repack: dict[bytes, list[BlobEntry]], keep: dict[bytes, list[BlobEntry]],
        indexed: dict[bytes, list[BlobEntry]], bad: dict[bytes, set[bytes]], stored: dict[str, int],
    ) -> None:
        """Repack only what fits: in the free space of the medium (minus the new index and a
        margin) and within --max-repack-size. Damaged packs first, then the most wasteful;
        the others are kept whole for a later prune."""
        limit = self.max_repack
        free = self.repo.backend.free_space()
        if free is not None:
            index_bytes = sum(i.size for i in self.repo.backend.list("index"))
            room = max(0, free - index_bytes - SPACE_MARGIN)
            limit = room if limit is None else min(limit, room)
        if limit is None:
            return

        def order(pid: bytes) -> tuple[bool, float]:
            live = sum(e.length for e in repack[pid])
            return (pid not in bad, live / max(1, stored.get(pid.hex(), 1)))

        total = 0
        for pid in sorted(repack, key=order):
            live_bytes = sum(e.length for e in repack[pid])
            if total + live_bytes <= limit:
                total += live_bytes
                continue
            del repack[pid]
            keep[pid] = indexed[pid]
            self.stats.packs_not_repacked += 1
        if self.stats.packs_not_repacked:
            why = ("--max-repack-size" if self.max_repack is not None and limit == self.max_repack
                   else _("the free space of the medium"))
            n = self.stats.packs_not_repacked
            self.stats.notes.append(ngettext(
                "{n} pack worth repacking was kept whole to stay within {limit}; a later prune "
                "repacks it",
                "{n} packs worth repacking were kept whole to stay within {limit}; a later prune "
                "repacks them", n).format(n=n, limit=why))

    def _repack(self, repack: dict[bytes, list[BlobEntry]]) -> dict[bytes, list[BlobEntry]]:
        """Copy the used blobs of these packs into new packs, each authenticated first (so a
        damaged pack gives up its intact blobs, and a damaged blob is never copied)."""
        packer = Packer(self.repo)
        self.progress.phase(N_("repacking"), files_total=len(repack),
                            bytes_total=sum(e.length for live in repack.values() for e in live), known=True,
                            unit=N_("packs"))
        for pid, live in repack.items():
            self.progress.advance(current=pid.hex()[:12])
            for e, stored in self._read_spans(pid, live):
                try:
                    body = self.repo.open_blob(e, stored)
                    if e.base is None:
                        self.repo.decode_plain(e, body)
                    else:
                        # Copied as it is, authenticated: its base is not this copy's concern
                        # (it stays where it is, or is checked where its own pack is copied).
                        # Rebuilding each delta took a third of a year-old repository's prune.
                        self.repo.check_delta_form(e, body)
                except FormatError as exc:
                    raise CoffreError(
                        _("pack {pack} holds a damaged blob that a snapshot needs ({reason}); prune "
                          "stops before changing anything").format(pack=pid.hex()[:12], reason=exc.message),
                        _("run 'coffre check' (it records the damage), then a backup (it stores "
                          "again what the live files still hold), then prune"),
                    ) from exc
                packer.add_body(e.kind, e.id, body, e.raw_length, e.base)
                self.progress.advance(0, e.length)
            self.progress.advance(1)
        packer.flush()
        return packer.take_written()

    def _note_moved_listings(self, repacked: dict[bytes, list[BlobEntry]],
                             written: dict[bytes, list[BlobEntry]]) -> None:
        """The listings the repack moved, remembered by earlier checks for their old copy, are
        remembered for the new one (WalkedListings.moved): the next check need not decode them
        again. A cache that cannot be written only costs that decoding."""
        if self.walked is None:
            return
        old = {e.id: (pid, e) for pid, live in repacked.items() for e in live if e.kind == KIND_TREE}
        copies = {e.id: (*old[e.id], pid, e) for pid, entries in written.items() for e in entries
                  if e.id in old}
        try:
            self.walked.moved(copies)
        except sqlite3.Error:
            pass

    def _read_spans(self, pid: bytes, live: list[BlobEntry]) -> Iterator[tuple[BlobEntry, memoryview]]:
        """The stored bytes of each of these blobs of a pack, in the pack's order, read in spans
        of at most REPACK_SPAN bytes (the unused bytes between two blobs of a span included)."""
        handle = Handle("data", pid.hex())
        ordered = sorted(live, key=lambda e: e.offset)
        i = 0
        while i < len(ordered):
            start, j = ordered[i].offset, i + 1
            while j < len(ordered) and ordered[j].offset + ordered[j].length - start <= REPACK_SPAN:
                j += 1
            end = max(e.offset + e.length for e in ordered[i:j])
            view = memoryview(self.repo.backend.load(handle, start, end - start))
            for e in ordered[i:j]:  # short if the pack is: the blob then does not authenticate
                yield e, view[e.offset - start : e.offset - start + e.length]
            i = j

    def _write_index(self, packs: dict[bytes, list[BlobEntry]]) -> None:
        old = sorted(self.repo.index.loaded_files)
        self._written = (self.repo.save_full_index(packs), packs)
        for name in old:
            try:
                self.repo.backend.remove(Handle("index", name))
            except ObjectNotFound:
                pass

    def _empty_trash(self, bad: dict[bytes, set[bytes]] | None = None) -> None:
        """Delete the trashed packs no running operation and no snapshot can need."""
        repo, st = self.repo, self.stats
        self.lock.check_lease()  # before anything is deleted
        live = _other_live_locks(repo, self.lock)  # before reading the snapshots
        records = load_trash(repo)
        eligible = [rec for rec in records if not live & set(rec.live_locks)]
        st.packs_waiting = sum(len(rec.packs) for rec in records if rec not in eligible)
        if st.packs_waiting:
            st.notes.append(ngettext(
                "{n} pack must wait in the trash until operations that were running have "
                "finished; the next prune deletes it",
                "{n} packs must wait in the trash until operations that were running have "
                "finished; the next prune deletes them", st.packs_waiting).format(n=st.packs_waiting))
        if not eligible:
            return
        # Snapshots written since this prune started may use trashed blobs: mark again, with
        # the index as stored now. The index files this prune wrote hold what it wrote them
        # from, and it holds the only exclusive lock (no one else removes index files): they
        # are not read back. Every other index file is (what other writers added since, or,
        # when this prune wrote none, all of them: the index in memory may hold what was
        # never written, such as packs a marking took back from the trash).
        repo.index = MasterIndex()
        if self._written is not None:
            names, packs = self._written
            for pid, entries in packs.items():
                repo.index.add_pack(pid, entries)
            repo.index.loaded_files.update(names)
        repo.load_index()
        marker = Marker(repo, records, damaged=self._known_bad(bad or {}), progress=self.progress)
        marker.mark(readable_snapshots(repo), self._still_indexed(self._marked))
        self._count_listings(marker)
        if marker.resurrected:
            repo.save_index(marker.resurrected)
            st.blobs_resurrected += sum(len(v) for v in marker.resurrected.values())
        in_index = repo.index.pack_ids()
        self.progress.phase(N_("deleting unused packs"), known=True, unit=N_("packs"),
                            files_total=sum(pid not in in_index for rec in eligible for pid in rec.packs))
        for rec in eligible:
            for pid in rec.packs:
                if pid in in_index:
                    continue
                self.progress.advance(1, current=pid.hex()[:12])
                try:
                    repo.backend.remove(Handle("data", pid.hex()))
                    st.packs_deleted += 1
                    self.damage_resolved.append(pid)
                except ObjectNotFound:
                    pass
                except StorageError as exc:
                    raise CoffreError(_("cannot delete pack {pack}: {reason}").format(
                        pack=pid.hex()[:12], reason=exc.message)) from exc
            repo.backend.remove(Handle("trash", rec.name))


def free_unused_packs(repo: Repository, mine: Lock | None, report: Reporter = quiet) -> tuple[int, int]:
    """On a full medium, before anything can be written: delete the packs no snapshot uses
    (indexed packs without a used blob, trashed packs no snapshot needs, packs no index
    lists), largest first,
    checking before each deletion that no other Coffre command holds a lock. Their index
    entries stay until the prune that follows writes a new index (an index naming a pack
    that is gone and held nothing needed is harmless: backups, check and prune pass over
    it). Returns (packs deleted, bytes freed)."""
    if _other_live_locks(repo, mine):
        holder = next(lk for lk in live_locks(repo) if mine is None or lk.lock_id != mine.lock_id)
        raise CoffreError(
            _("the backup medium is full and {holder} is using the repository").format(
                holder=holder.describe()),
            _("wait for it to end (a backup on a full medium fails by itself), then prune again"),
        )
    repo.index = MasterIndex()
    repo.load_index()
    stored = dict(repo.iter_pack_names())
    gone = confirm_gone(repo, {p for p in repo.index.pack_ids() if p.hex() not in stored})
    repo.index.drop_packs(gone)
    records = load_trash(repo)
    marker = Marker(repo, records)
    used = marker.mark(readable_snapshots(repo))
    indexed = repo.index.packs()
    unused = [pid for pid, entries in indexed.items() if not any(e.id in used for e in entries)]
    # Trashed packs no snapshot needs, and packs no index lists: a backup's last packs when
    # the medium filled up (no other command holds a lock, so no backup is writing them).
    unused += [bytes.fromhex(n) for n in stored
               if bytes.fromhex(n) not in indexed and bytes.fromhex(n) not in marker.resurrected]
    deleted = freed = 0
    for pid in sorted(set(unused), key=lambda p: -stored.get(p.hex(), 0)):
        if _other_live_locks(repo, mine):
            break  # someone started meanwhile: stop deleting without the trash's wait
        try:
            repo.backend.remove(Handle("data", pid.hex()))
        except ObjectNotFound:
            continue
        deleted += 1
        freed += stored.get(pid.hex(), 0)
    report(ngettext("the medium was full: deleted {n} pack no snapshot uses ({size})",
                    "the medium was full: deleted {n} packs no snapshot uses ({size})",
                    deleted).format(n=deleted, size=human_size(freed)))
    return deleted, freed
