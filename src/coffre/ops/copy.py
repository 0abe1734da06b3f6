"""Copy snapshots between repositories: the NAS copy sent on to one or two off-site copies
(3-2-1). Only what the destination lacks is stored there.

Two cases:
- **Shared content keys** (the destination was made with `init --copy-chunking-from`): blob
  ids are the same in both repositories. A blob the destination has is skipped without
  reading it from the source. A missing blob is decrypted with the source's key, checked
  against its id, and encrypted again for the destination as it is, so deltas stay deltas
  (their bases are copied with them). Trees are copied unchanged.
- **Independent keys**: ids differ, so every data blob of the copied snapshots is read from
  the source and hashed with the destination's key, and trees are rewritten with the new
  ids. Only blobs the destination lacks are stored, whole (not as deltas).

A copy names its source in `original`, so copying again skips snapshots already copied (also
copies of copies). Commit order as for a backup: packs, index, rescue (§6.5), snapshots.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from coffre.core.errors import CoffreError, IntegrityError
from coffre.core.i18n import N_, _
from coffre.core.progress import NULL_PROGRESS, Progress
from coffre.crypto import aead
from coffre.format.segment import SegmentHeader
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node, encode_tree
from coffre.ops.common import Reporter, load_tree, quiet, rescue_if_pruned
from coffre.ops.listings import read_levels
from coffre.repository import segments
from coffre.repository.index import Location
from coffre.repository.locks import Lock
from coffre.repository.packbases import PackBases
from coffre.repository.packer import Packer
from coffre.repository.repo import Repository

# Runs of blobs read at once from the source: on remote storage, each waits mostly for the
# network, so more are in flight (each holds one run: part of one pack, at most MAX_RUN).
COPY_READERS, COPY_READERS_REMOTE = 2, 8
# Folder listings read ahead from a remote source, level by level (ops/listings.py), at most.
LISTINGS_KEPT_BYTES = 64 * 1024 * 1024
# The bases of deltas this copy also copies, kept as they are read (checked) for the deltas'
# checks after them, at most: beyond, a base is read again from the source (packbases.py).
BASES_KEPT_BYTES = 64 * 1024 * 1024


@dataclass
class CopyResult:
    copied: list[tuple[Snapshot, Snapshot]] = field(default_factory=list)  # (source, copy)
    skipped: list[Snapshot] = field(default_factory=list)  # already in the destination
    blobs_added: int = 0
    bytes_added: int = 0  # stored bytes: what was sent to the destination
    shared_keys: bool = False


def shares_content_keys(a: Repository, b: Repository) -> bool:
    return a.keys.same_content_keys(b.keys)


class Copier:
    def __init__(self, src: Repository, dst: Repository, dst_lock: Lock, report: Reporter = quiet,
                 progress: Progress = NULL_PROGRESS) -> None:
        self.src, self.dst, self.dst_lock, self.report = src, dst, dst_lock, report
        self.progress = progress
        self.shared = shares_content_keys(src, dst)
        self.packer = Packer(dst)
        self.used: set[bytes] = set()  # destination blobs the copies rely on
        self._trees: dict[bytes, bytes] = {}  # source tree id -> destination tree id (this run)
        self._blobs: dict[bytes, bytes] = {}  # source data id -> destination id (this run)
        self._sizes: dict[bytes, int] = {}  # independent keys: source data id -> its stored size
        self._planned: list[bytes] = []  # shared keys: blobs to copy, each after its base
        self._listings: dict[bytes, bytes] = {}  # folder listings read ahead (remote source)
        self._bases = KeptBases(set(), 0)  # shared keys: the bases read to be copied

    def run(self, snaps: list[Snapshot]) -> CopyResult:
        result = CopyResult(shared_keys=self.shared)
        present = {s.original or s.id for s in self.dst.snapshots(errors=[])}
        chosen: list[Snapshot] = []
        for snap in snaps:
            origin = snap.original or snap.id
            if origin in present:
                result.skipped.append(snap)
                continue
            present.add(origin)
            chosen.append(snap)
        self.progress.phase(N_("reading the snapshots' folders"), files_total=len(chosen), known=True,
                            unit=N_("snapshots"))
        if self.src.backend.remote:
            read_levels(self.src, [s.tree for s in chosen], self._listings, LISTINGS_KEPT_BYTES)
        if not self.shared:
            # Every data blob is read from the source: count them first, for the progress.
            self._count(chosen)
            self.progress.phase(N_("copying"), files_total=len(self._sizes),
                                bytes_total=sum(self._sizes.values()), known=True, unit=N_("pieces"))
        todo: list[tuple[Snapshot, Snapshot]] = []
        for snap in chosen:
            if self.shared:
                self.progress.advance(current=_name(snap))
            copy = Snapshot(
                time_ns=snap.time_ns, hostname=snap.hostname, username=snap.username,
                paths=list(snap.paths), tree=self._tree(snap.tree), tags=list(snap.tags),
                excludes=list(snap.excludes), summary=dict(snap.summary), program=snap.program,
                original=snap.original or snap.id, databases=list(snap.databases),
            )
            todo.append((snap, copy))
            if self.shared:
                self.progress.advance(1)
        if self.shared:
            self._copy_planned()
        self.packer.flush()
        written = self.packer.take_written()
        if written:
            self.dst.save_index(written)
            for pid, entries in written.items():
                self.dst.index.add_pack(pid, entries)
        rescue_if_pruned(self.dst, self.used, self.report)
        self.dst_lock.check_lease()
        for snap, copy in todo:
            self.dst.save_snapshot(copy)
            result.copied.append((snap, copy))
        rescue_if_pruned(self.dst, self.used, self.report)
        result.blobs_added = self.packer.blobs_written
        result.bytes_added = self.packer.bytes_written
        return result

    def _count(self, snaps: list[Snapshot]) -> None:
        """Independent keys: the data blobs of these snapshots, with their stored sizes."""
        seen: set[bytes] = set()
        for snap in snaps:
            self.progress.advance(current=_name(snap))
            stack = [snap.tree]
            while stack:
                tree_id = stack.pop()
                if tree_id in seen:
                    continue
                seen.add(tree_id)
                for node in load_tree(self.src, tree_id, self._listings.get(tree_id)):
                    if node.type == "dir" and node.subtree is not None:
                        stack.append(node.subtree)
                    elif node.type == "file":
                        for blob_id in node.content:
                            if blob_id not in self._sizes:
                                loc = self.src.index.lookup(blob_id)
                                self._sizes[blob_id] = loc.entry.length if loc is not None else 0
            self.progress.advance(1)

    # -- trees ------------------------------------------------------------------------------
    def _tree(self, tree_id: bytes) -> bytes:
        done = self._trees.get(tree_id)
        if done is not None:
            return done
        nodes = load_tree(self.src, tree_id, self._listings.pop(tree_id, None))
        for node in nodes:
            if node.type == "dir" and node.subtree is not None:
                node.subtree = self._tree(node.subtree)
            elif node.type == "file":
                node.content = [self._data(b) for b in node.content]
        if self.shared:
            self._plan(tree_id)  # children first: a tree never lands without them
            new_id = tree_id
        else:
            new_id = self._store_tree(nodes)
        self._trees[tree_id] = new_id
        return new_id

    def _store_tree(self, nodes: list[Node]) -> bytes:
        data = encode_tree(nodes)
        new_id = self.dst.crypter.blob_id(data)
        if self.packer.claim(new_id):
            self.packer.add(aead.KIND_TREE, new_id, data)
        self.used.add(new_id)
        return new_id

    # -- data -------------------------------------------------------------------------------
    def _data(self, blob_id: bytes) -> bytes:
        if self.shared:
            self._plan(blob_id)
            return blob_id
        done = self._blobs.get(blob_id)
        if done is not None:
            return done
        data = self.src.load_blob(blob_id)
        new_id = self.dst.crypter.blob_id(data)
        if self.packer.claim(new_id):
            self.packer.add(aead.KIND_DATA, new_id, data)
        self.used.add(new_id)
        self._blobs[blob_id] = new_id
        self.progress.advance(1, self._sizes.get(blob_id, 0))
        return new_id

    def _plan(self, blob_id: bytes) -> None:
        """Same ids: the blob the destination lacks is to be copied in its stored form (a
        delta stays a delta), after its base."""
        if blob_id in self.used:
            return
        self.used.add(blob_id)
        if not self.packer.claim(blob_id):
            base = self.dst.index.base_of(blob_id)
            if base is not None:
                self.used.add(base)
            return
        loc = self.src.index.lookup(blob_id)
        if loc is None:
            raise CoffreError(_("blob {blob} is missing from the source repository").format(
                blob=blob_id.hex()[:12]), _("run 'coffre check' on the source"))
        if loc.entry.base is not None:
            self._plan(loc.entry.base)
        self._planned.append(blob_id)

    def _copy_planned(self) -> None:
        """Copy the planned blobs as they are stored, each checked against its id first. The
        blobs are read pack by pack, neighbours with one request, several requests in flight
        (COPY_READERS, more on remote storage), while the packer seals and sends the packs."""
        locations = []
        for blob_id in self._planned:
            loc = self.src.index.lookup(blob_id)
            if loc is None:  # planned only when found
                raise CoffreError(_("blob {blob} is missing from the source repository").format(
                    blob=blob_id.hex()[:12]), _("run 'coffre check' on the source"))
            locations.append(loc)
        self.progress.phase(N_("copying"), files_total=len(locations),
                            bytes_total=sum(loc.entry.length for loc in locations), known=True,
                            unit=N_("pieces"))
        # The runs without deltas go first: the bases they hold are kept for the runs of
        # deltas after them, whose checks would otherwise read those bases a second time.
        runs = self.src.stored_runs(locations)
        with_deltas = [any(loc.entry.base is not None for loc in run) for run in runs]
        # A base not copied is never offered: the deltas' checks read it from the source.
        self._bases = KeptBases({loc.entry.base for loc in locations if loc.entry.base is not None},
                                BASES_KEPT_BYTES)
        remote = self.src.backend.remote or self.dst.backend.remote
        with ThreadPoolExecutor(COPY_READERS_REMOTE if remote else COPY_READERS,
                                thread_name_prefix="copy") as pool:
            for deltas in (False, True):
                phase = [run for run, has in zip(runs, with_deltas, strict=True) if has == deltas]
                for _done in pool.map(self._copy_run, phase):
                    pass  # map's results raise the first failure here
        self._planned = []
        self._bases = KeptBases(set(), 0)

    def _copy_run(self, run: list[Location]) -> None:
        # A day's deltas name bases all over a year-old source: read as check reads them, not
        # an 8 MiB window each on remote storage (repository/packbases.py).
        bases = PackBases(self.src, [loc.entry for loc in run], kept=self._bases.get)
        for loc, envelope in zip(run, self.src.read_run(run), strict=True):
            entry = loc.entry
            if len(envelope) != entry.length:
                raise IntegrityError(_("blob {blob} is truncated in the source").format(
                    blob=entry.id.hex()[:12]))
            body = self.src.open_blob(entry, envelope)
            base = bases.get(entry.base) if entry.base is not None else None
            content = self.src.decode_plain(entry, body, base)  # checks it against its id first
            self._bases.offer(entry.id, content)
            self.packer.add_body(entry.kind, entry.id, body, entry.raw_length, entry.base)
            self.progress.advance(1, entry.length)


class KeptBases:
    """The content of blobs a copy has read and checked, among those the deltas it copies name
    as their base, up to `limit` bytes (what does not fit is read again when a delta needs it)."""

    def __init__(self, wanted: set[bytes], limit: int) -> None:
        self._wanted, self._room = wanted, limit
        self._held: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def offer(self, blob_id: bytes, content: bytes) -> None:
        if blob_id not in self._wanted:
            return
        with self._lock:
            if blob_id not in self._held and len(content) <= self._room:
                self._held[blob_id] = content
                self._room -= len(content)

    def get(self, blob_id: bytes) -> bytes | None:
        with self._lock:
            return self._held.get(blob_id)


def _name(snap: Snapshot) -> str:
    return f"{snap.id[:8]} {', '.join(snap.paths)}".rstrip()


@dataclass
class SegmentsCopied:
    pieces: int = 0
    bytes: int = 0  # the log pieces' own bytes
    problems: list[str] = field(default_factory=list)


def copy_segments(src: Repository, dst: Repository, report: Reporter = quiet) -> SegmentsCopied:
    """The captured log pieces (continuity) the destination lacks, each read and checked from
    the source and stored anew for the destination, so a standby or a point-in-time restore
    also works from the copy. A piece is the same when its stream, name, place and content
    hash are."""
    done = SegmentsCopied()
    have = {_identity(s.header) for s in segments.listing(dst, errors=done.problems)}
    for seg in segments.listing(src, errors=done.problems):
        if _identity(seg.header) in have:
            continue
        try:
            payload = segments.load(src, seg)
        except (IntegrityError, CoffreError) as exc:
            done.problems.append(_("log piece {name} of {stream}: {problem}").format(
                name=seg.header.name, stream=seg.header.stream, problem=exc.message))
            continue
        segments.save(dst, replace(seg.header), payload)
        have.add(_identity(seg.header))
        done.pieces += 1
        done.bytes += len(payload)
    for p in done.problems:
        report(_("warning: {problem}").format(problem=p))
    return done


def _identity(h: SegmentHeader) -> tuple[str, str, str, int, int, str]:
    return (h.stream, h.kind, h.name, h.start, h.end, h.sha256)
