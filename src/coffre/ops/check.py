"""Check: the repository's structure, and optionally every byte of its data.

Structure: every index and snapshot decrypts, and every forget record (tombstone) this
machine has not read intact before (below); every tree reachable from a snapshot decrypts and
every blob it references is indexed in a pack that exists with the expected size, and every
pack's SHA-256 matches its name.
--read-data (or a subset): every pack is read, its SHA-256 compared with its name, its
header and every blob authenticated, decompressed and re-hashed.

Forget records are never removed (docs/design.md §8.1): one a day for years. Those this
machine has already read intact (its mark, read at every opening) are read again as a pack's
bytes are: all by a check of every pack, those of the slice with --read-data-subset n/m, and
with a percentage those whose names fall in the share of the name space whose packs the check
reads (so a turn of shares reads each once). Any other is read at every check. A record the
mark holds is listed at every opening, and one gone is an alarm there; one found damaged
leaves the mark (the command does it), so that every check and every opening says so again.

A pack whose bytes do not match its name is read a second time (a fault of memory or of the
link is not damage), then its blobs are authenticated one by one, so the damage is located:
the damaged blobs, or only the header. Damaged packs are named with the snapshots and files
that depend on them.

The folder listings a check decodes are remembered in this machine's cache, each for the copy
it came from (repository/walked.py): on a local repository, a check without --read-data decodes
only the listings it has not met, and takes the others as remembered once the index still gives
that copy first and its pack's bytes, hashed that night, match its name. What every listing
names is then needed and looked up as before; only the decoding, which would give the same
listing again, is saved.

Only what a snapshot needs is an error. What no snapshot uses (a pack the index lists that
is gone, a delta whose base a prune rightly removed) is a note: a check that cries wolf
trains people to ignore it.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from coffre.core.errors import FormatError, IntegrityError, ObjectNotFound, StorageError
from coffre.core.human import human_number
from coffre.core.i18n import N_, _, ngettext
from coffre.core.progress import NULL_PROGRESS, Progress
from coffre.format import pack as packfmt
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node
from coffre.ops.common import Reporter, load_tree, quiet
from coffre.ops.repair_config import check_keys_and_config
from coffre.repository import segments
from coffre.repository.damage import PACK_ITSELF
from coffre.repository.packbases import PackBases
from coffre.repository.packer import pack_size
from coffre.repository.repo import Repository
from coffre.repository.tombstones import load_tombstone, tombstone_names
from coffre.repository.walked import Walked, WalkedListings, place_of
from coffre.storage.base import Handle

READERS = 2
# On a local disk a larger pack is read in spans of about this size, each hashed and its blobs
# decoded as it comes: a reader holds a span, not a whole pack (up to ~17 MB), which set
# check's peak memory on a year-old repository (142 MiB with two readers, 108 with one).
SPAN = 4 * 1024 * 1024


@dataclass
class _Decoded:
    """What decoding one pack's blobs found: taken into the result only once the bytes it
    decoded are known to be the pack's (read in spans, they are not until the last)."""
    bad: list[bytes] = field(default_factory=list)
    unverifiable: int = 0  # needed deltas whose base cannot be read
    orphans: int = 0  # deltas no snapshot needs whose base is gone


@dataclass
class _FirstRead:
    """What reading a pack in spans left unsettled, for the whole read that follows."""

    misread: bool = False  # its bytes did not match its name (or its header's stored bytes)
    header_failed: bool = False  # its header did not decode


@dataclass
class CheckResult:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    damaged_packs: dict[str, str] = field(default_factory=dict)  # pack hex -> reason
    affected: dict[str, list[str]] = field(default_factory=dict)  # snapshot id -> file paths
    packs_read: int = 0
    packs_total: int = 0
    bytes_read: int = 0  # the stored size of the packs read and hashed (a damaged size not counted)
    share_end: str = ""  # a rotating share: the last pack in its turn (where the next starts)
    snapshots: int = 0
    listings_decoded: int = 0  # the snapshots' folder listings read and decoded
    listings_remembered: int = 0  # ... known from an earlier check, their packs hashed
    forget_records_read: int = 0  # forget records read (and authenticated, or reported)
    forget_records_known: int = 0  # ... read intact here before and not due tonight
    forget_records_damaged: list[str] = field(default_factory=list)  # names of those that failed
    # For the damage register: packs whose blobs were all authenticated (a hash that matches
    # the name says nothing of a blob damaged before it was written), and the damaged blobs
    # found in them (PACK_ITSELF for a pack whose bytes do not match its name).
    examined: set[bytes] = field(default_factory=set)
    hashed: set[bytes] = field(default_factory=set)  # packs whose bytes match their name
    damaged_blobs: dict[bytes, list[bytes]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.damaged_packs


def subset_packs(names: list[str], fraction: tuple[int, int]) -> list[str]:
    """Packs of slice n (1-based) out of m: a stable partition by name."""
    return [p for p in sorted(names) if in_slice(p, fraction)]


def in_slice(name: str, fraction: tuple[int, int]) -> bool:
    n, m = fraction
    return int(name[:8], 16) % m == n - 1


@dataclass(frozen=True)
class Share:
    """A rotating share of the data: `percent` of the stored bytes, read in name order from
    the first pack named after `after` (the last pack the previous run read), round past the
    last name to the first."""

    percent: float
    after: str = ""


def share_packs(stored: dict[str, int], share: Share) -> list[str]:
    """The packs a rotating check reads: whole packs in name order until they hold at least
    `share.percent` of the stored bytes (at least one pack). Each run reads the same amount
    of data, where slices by name (subset_packs) hold as many packs as chance puts in them:
    from 3 to 13 for one twentieth of the year bench's repository. A pack added since the
    previous run, wherever its name falls, is read within one turn of ceil(100 / percent) runs."""
    names = sorted(stored)
    # A size no pack can have (listed by a damaged or hostile storage) counts as that of the
    # largest pack, so that it cannot make every run read everything.
    sizes = {name: min(size, packfmt.MAX_PACK) for name, size in stored.items()}
    budget = sum(sizes.values()) * share.percent / 100
    start = bisect.bisect_right(names, share.after)
    out: list[str] = []
    total = 0
    for i in range(len(names)):
        name = names[(start + i) % len(names)]
        out.append(name)
        total += sizes[name]
        if total >= budget:
            break
    return out


def in_share(name: str, after: str, end: str) -> bool:
    """Whether `name` lies in the arc of the name space a rotating share covered: from just
    after `after` round to `end` (the share's first and last packs); after == end: a whole turn."""
    if after < end:
        return after < name <= end
    return name > after or name <= end


@dataclass(frozen=True)
class DataPass:
    """The names a check's data pass covers: every one, a slice, or a share's arc."""

    everything: bool = False
    slice: tuple[int, int] | None = None
    arc: tuple[str, str] | None = None  # (after, end): see in_share

    def covers(self, name: str) -> bool:
        if self.everything:
            return True
        if self.slice is not None:
            return in_slice(name, self.slice)
        return self.arc is not None and in_share(name, *self.arc)


class Checker:
    def __init__(self, repo: Repository, report: Reporter = quiet,
                 progress: Progress = NULL_PROGRESS, walked: WalkedListings | None = None,
                 read_before: frozenset[str] = frozenset()) -> None:
        self.repo = repo
        self.walked = walked  # listings earlier checks decoded (None: every listing decoded)
        # Forget records this machine read intact before (its mark): read again with the data.
        self.read_before = read_before
        self.report = report
        self.progress = progress
        self.result = CheckResult()
        self._lock = threading.Lock()
        self.used: set[bytes] = set()  # every blob a snapshot references (trees, data, bases)
        self._gone: set[bytes] = set()  # indexed packs missing from storage
        self._sizes: dict[bytes, int] = {}  # the packs the listing gives, and their sizes
        self._unverifiable = 0  # needed deltas whose base cannot be read
        self._orphans = 0  # unneeded deltas whose base is gone
        self._whole_deltas = True  # every delta rebuilt from its base and checked against its id

    def run(self, read_data: bool = False, subset: tuple[int, int] | None = None,
            share: Share | None = None) -> CheckResult:
        r = self.result
        check_keys_and_config(self.repo, r.errors, r.notes)
        if self.repo.version < 2:
            r.notes.append(_("the repository uses format 1: its copies made with --copy-chunking-from "
                             "share its whole key, and the storage can tell blob sizes; moving it to "
                             "format 2 is a new repository and a 'coffre copy' (docs/migration.md)"))
        self.progress.phase(N_("loading the index"))
        self.repo.load_index(errors=r.errors)
        stored = dict(self.repo.iter_pack_names())
        self._sizes = {bytes.fromhex(name): size for name, size in stored.items()}
        indexed = self.repo.index.packs()
        r.packs_total = len(stored)
        self.report(_("{packs}, {blobs} in the index").format(
            packs=ngettext("{n} pack", "{n} packs", len(stored)).format(n=human_number(len(stored))),
            blobs=ngettext("{n} blob", "{n} blobs", len(self.repo.index)).format(
                n=human_number(len(self.repo.index)))))
        snaps = self.repo.snapshots(errors=r.errors)
        r.snapshots = len(snaps)
        names = sorted(stored)
        tonight = DataPass(everything=True)  # every pack is hashed, but for a slice or a share
        if subset:
            names = subset_packs(names, subset)
            tonight = DataPass(slice=subset)
        elif share is not None:
            names = share_packs(stored, share)
            r.share_end = names[-1] if names else share.after
            tonight = DataPass(everything=len(names) == len(stored), arc=(share.after, r.share_end))
        self._check_tombstones(tonight)
        if r.forget_records_known:
            self.report(_("forget records: {n} read, {known} read intact here before (read "
                          "again with the data)").format(
                n=human_number(r.forget_records_read), known=human_number(r.forget_records_known)))
        missing_data = self._check_trees(snaps)
        if r.listings_remembered:
            self.report(_("folder listings: {n} decoded, {known} known from an earlier check "
                          "(the packs holding them hashed)").format(
                n=human_number(r.listings_decoded), known=human_number(r.listings_remembered)))
        self._check_listed(indexed, stored)
        unindexed = sorted(set(stored) - {p.hex() for p in indexed})
        if unindexed and missing_data:
            r.notes.append(ngettext(
                "{n} pack is not in any index while snapshots lack data: "
                "'coffre repair index' puts what it holds back into the index",
                "{n} packs are not in any index while snapshots lack data: "
                "'coffre repair index' puts what they hold back into the index",
                len(unindexed)).format(n=len(unindexed)))
        elif unindexed:
            r.notes.append(ngettext(
                "{n} pack is not in any index (left by an interrupted operation or waiting in "
                "the trash); 'coffre prune' removes it if it is unused",
                "{n} packs are not in any index (left by an interrupted operation or waiting in "
                "the trash); 'coffre prune' removes unused ones",
                len(unindexed)).format(n=len(unindexed)))
        full = bool(read_data or subset or share)
        # A share of the data decodes each delta's stored bytes without its base (see
        # _decode_all); the whole data rebuilds every delta's content too.
        self._whole_deltas = not (subset or share)
        todo = []
        for name in names:
            if name in r.damaged_packs:
                continue
            if stored[name] > packfmt.MAX_PACK:
                r.damaged_packs[name] = _("pack is larger than any Coffre writes ({size} bytes)").format(
                    size=stored[name])
                continue
            todo.append(name)
        r.bytes_read = sum(stored[n] for n in todo)
        self.progress.phase(N_("reading data") if full else N_("checking pack hashes"),
                            files_total=len(todo), bytes_total=r.bytes_read, known=True,
                            unit=N_("packs"))

        def one(name: str) -> None:
            self.progress.advance(current=name[:12])
            try:
                self._examine(name, indexed.get(bytes.fromhex(name)), full=full)
            finally:
                self.progress.advance(1, stored[name])

        # Hashing, decryption and decompression release the GIL: packs are read in parallel.
        with ThreadPoolExecutor(READERS, thread_name_prefix="check") as pool:
            for _done in pool.map(one, todo):
                pass
        if self._unverifiable:
            r.errors.append(ngettext(
                "{n} delta blob that snapshots need cannot be read because its base is damaged "
                "or missing",
                "{n} delta blobs that snapshots need cannot be read because their base is damaged "
                "or missing",
                self._unverifiable).format(n=self._unverifiable))
        if self._orphans:
            r.notes.append(ngettext(
                "{n} delta blob that no snapshot needs has lost its base (left by an earlier "
                "prune); 'coffre prune' removes it",
                "{n} delta blobs that no snapshot needs have lost their base (left by an earlier "
                "prune); 'coffre prune' removes them",
                self._orphans).format(n=self._orphans))
        self._attribute(snaps)
        self._check_segments(full=bool(read_data))
        return r

    def _check_segments(self, full: bool) -> None:
        """Captured log pieces (continuity): every header authenticated; with --read-data, every
        piece read and checked whole. A damaged piece is an error (a point-in-time restore
        would stop there); a gap in a stream is reported by 'coffre wal list', not here."""
        r = self.result
        stored = segments.listing(self.repo, errors=r.errors)
        if not stored:
            return
        if full:
            self.progress.phase(N_("reading log pieces"), files_total=len(stored), known=True)
            for seg in stored:
                try:
                    segments.load(self.repo, seg)
                except ObjectNotFound:
                    continue  # removed by a prune since the listing
                except (IntegrityError, FormatError) as exc:
                    r.errors.append(_("log piece {name} of {stream}: {problem}").format(
                        name=seg.header.name, stream=seg.header.stream, problem=exc.message))
                self.progress.advance(1, seg.header.size)

    # -- structure -----------------------------------------------------------------------------
    def _check_tombstones(self, tonight: DataPass) -> None:
        """Every forget record (tombstone) is intact and authentic: a damaged one leaves the
        snapshots it names looking deleted by the storage to machines that have not read it.
        One this machine read intact before is read when tonight's data pass covers its name."""
        for name in tombstone_names(self.repo):
            if name in self.read_before and not tonight.covers(name):
                self.result.forget_records_known += 1
                continue
            try:
                load_tombstone(self.repo, name)
            except ObjectNotFound:
                continue
            except FormatError as exc:
                self.result.errors.append(_("forget record forgotten/{name}: {reason}").format(
                    name=name[:12], reason=exc.message))
                self.result.forget_records_damaged.append(name)
            self.result.forget_records_read += 1

    def _check_trees(self, snaps: list[Snapshot]) -> bool:
        """Every tree reachable from a snapshot decrypts; every blob it names is indexed.
        Collects the blobs snapshots use; True if some are missing from the index. A listing
        an earlier check decoded from a pack whose bytes still match its name is taken as
        remembered (repository/walked.py), not decoded again."""
        r = self.result
        seen_trees: set[bytes] = set()
        fine: set[bytes] = set()  # content blobs found indexed, with their base readable
        missing = False
        known = self._known_listings()
        walked: dict[bytes, Walked] = {}  # tonight's listings, remembered for the next check
        lookup = self.repo.index.lookup_function()
        self.progress.phase(N_("checking snapshots"), files_total=len(snaps), known=True,
                            unit=N_("snapshots"))
        for snap in snaps:
            self.progress.advance(current=_snapshot_name(snap))
            # A folder's path, or None below a remembered listing (which names no file: the
            # path is looked for only to word an error).
            stack: list[tuple[bytes, str | None]] = [(snap.tree, "")]
            while stack:
                tree_id, prefix = stack.pop()
                if tree_id in seen_trees:
                    continue
                seen_trees.add(tree_id)
                self.used.add(tree_id)
                loc = lookup(tree_id)
                if loc is None:
                    r.errors.append(_("snapshot {id}: tree of {path} is missing").format(
                        id=snap.id[:8], path=self._path(snap, tree_id, prefix)))
                    missing = True
                    continue
                nodes = None
                remembered = known.get(tree_id)
                names = (remembered.names() if remembered is not None and remembered.pack == loc.pack
                         and remembered.place == place_of(loc.entry) else None)
                if remembered is not None and names is not None:
                    r.listings_remembered += 1
                    walked[tree_id] = remembered
                    subtrees, content = names
                    stack.extend((sub, None) for sub in subtrees)
                else:
                    try:
                        nodes = load_tree(self.repo, tree_id)
                    except (FormatError, StorageError) as exc:
                        r.errors.append(_("snapshot {id}: tree of {path}: {reason}").format(
                            id=snap.id[:8], path=self._path(snap, tree_id, prefix), reason=exc.message))
                        continue
                    r.listings_decoded += 1
                    subtrees = [n.subtree for n in nodes if n.subtree is not None]
                    content = [b for n in nodes for b in n.content]
                    if len(self.repo.index.locations(tree_id)) == 1:  # so decoded from loc
                        walked[tree_id] = Walked.of(loc.pack, place_of(loc.entry), subtrees, content)
                    stack.extend((n.subtree, None if prefix is None else prefix + "/" + os.fsdecode(n.name))
                                 for n in nodes if n.subtree is not None)
                # A file unchanged between snapshots lies in another listing each time a
                # neighbour changes: a listing's blobs are looked up only if no listing
                # before named them (in C, as sets: a year's history names ~100,000). A
                # missing one is reported for every file and snapshot that needs it.
                new = set(content)
                new -= fine
                if not new:
                    continue
                self.used |= new
                lacking = self._look_up(new, fine)
                if lacking:
                    missing = True
                    self._report_lacking(snap, tree_id, prefix, nodes, lacking)
            self.progress.advance(1)
        self._remember(walked)
        return missing

    def _report_lacking(self, snap: Snapshot, tree_id: bytes, prefix: str | None,
                        nodes: list[Node] | None, lacking: dict[bytes, str]) -> None:
        """Name each file of a listing that lacks a blob, once per reason."""
        r, path = self.result, self._path(snap, tree_id, prefix)
        if nodes is None:  # remembered: decoded again to name its files
            try:
                nodes = load_tree(self.repo, tree_id)
            except (FormatError, StorageError) as exc:
                r.errors.append(_("snapshot {id}: tree of {path}: {reason}").format(
                    id=snap.id[:8], path=path, reason=exc.message))
                return
        folder = "" if path == "/" else path
        for node in nodes:
            for reason in dict.fromkeys(lacking[b] for b in node.content if b in lacking):
                r.errors.append(reason.format(id=snap.id[:8], path=folder + "/" + os.fsdecode(node.name)))

    def _path(self, snap: Snapshot, tree_id: bytes, prefix: str | None) -> str:
        """The path of a folder in a snapshot, for an error: known from the walk, or looked for
        from the snapshot's root when the walk came through remembered listings."""
        if prefix is not None:
            return prefix or "/"
        stack, seen = [(snap.tree, "")], set()
        while stack:
            tree, path = stack.pop()
            if tree == tree_id:
                return path or "/"
            if tree in seen:
                continue
            seen.add(tree)
            try:
                nodes = load_tree(self.repo, tree)
            except (FormatError, StorageError):
                continue
            stack.extend((n.subtree, path + "/" + os.fsdecode(n.name))
                         for n in nodes if n.subtree is not None)
        return "?"

    def _known_listings(self) -> dict[bytes, Walked]:
        """The remembered listings that can be trusted tonight: those in folder-listing packs
        whose bytes match their names, hashed now (a damaged one is reported as any pack the
        check reads, and its listings are decoded)."""
        if self.walked is None:
            return {}
        known = self.walked.load()
        index = self.repo.index
        packs = sorted({w.pack for w in known.values()} & self._sizes.keys())
        packs = [p for p in packs if index.tree_pack(p)]  # mixed packs hold data: not hashed for this
        indexed = index.packs()
        with ThreadPoolExecutor(READERS, thread_name_prefix="check") as pool:
            for _done in pool.map(lambda p: self._examine(p.hex(), indexed.get(p), full=False), packs):
                pass
        intact = {p for p in packs if p in self.result.hashed and p.hex() not in self.result.damaged_packs}
        return {tree: w for tree, w in known.items() if w.pack in intact}

    def _remember(self, walked: dict[bytes, Walked]) -> None:
        if self.walked is not None:
            try:
                self.walked.keep(walked)
            except sqlite3.Error:
                pass  # a cache: the next check decodes what it cannot find

    def _look_up(self, blobs: set[bytes], fine: set[bytes]) -> dict[bytes, str]:
        """Adds to `fine` the blobs the index has, readable (a delta with its base stored whole),
        and to `used` the bases of deltas; the others, each with its error to word."""
        lookup, readable = self.repo.index.lookup_function(), self.repo.index.readable
        present = self._sizes.__contains__  # _present without a Python call per delta
        used = self.used
        lacking: dict[bytes, str] = {}
        for blob in blobs:
            loc = lookup(blob)
            if loc is None:
                lacking[blob] = _("snapshot {id}: {path}: data is missing")
                continue
            base = loc.entry.base
            if base is None:
                fine.add(blob)
                continue
            used.add(base)
            if readable(blob, present):
                fine.add(blob)
            elif any(present(copy.pack) for copy in self.repo.index.locations(blob)):
                lacking[blob] = _("snapshot {id}: {path}: the base of a delta is missing")
            else:  # the delta itself: its pack is gone
                lacking[blob] = _("snapshot {id}: {path}: data is missing")
        return lacking

    def _check_listed(self, indexed: dict[bytes, list[packfmt.BlobEntry]], stored: dict[str, int]) -> None:
        """Indexed packs exist with the size their index entries give. A pack that is gone
        matters only if it held something a snapshot needs and has no other copy."""
        r = self.result
        unneeded = 0
        self._gone = {pid for pid in indexed if pid.hex() not in stored}
        for pid in sorted(self._gone):
            if any(e.id in self.used and not self._other_copy(e.id, pid) for e in indexed[pid]):
                r.damaged_packs[pid.hex()] = _("pack is missing")
            else:
                unneeded += 1
        if unneeded:
            r.notes.append(ngettext(
                "{n} pack listed in the index is gone but held nothing a snapshot needs; "
                "'coffre prune' tidies the index",
                "{n} packs listed in the index are gone but held nothing a snapshot needs; "
                "'coffre prune' tidies the index",
                unneeded).format(n=unneeded))
        for pid, entries in indexed.items():
            name = pid.hex()
            if pid in self._gone:
                continue
            expected = pack_size(entries, self.repo.version)
            if stored[name] < expected:
                r.damaged_packs[name] = _("pack is truncated ({size} of {expected} bytes)").format(
                    size=stored[name], expected=expected)
            elif stored[name] > expected:
                r.damaged_packs[name] = _("pack is too long ({size} of {expected} bytes)").format(
                    size=stored[name], expected=expected)

    def _present(self, pack: bytes) -> bool:
        return pack in self._sizes

    def _other_copy(self, blob_id: bytes, pack: bytes) -> bool:
        """Whether the blob can be read from another pack that exists (for a delta: with its
        base stored whole in a pack that exists)."""
        return self.repo.index.readable(blob_id, self._present, but=pack)

    # -- data ----------------------------------------------------------------------------------
    def _examine(self, name: str, entries: list[packfmt.BlobEntry] | None, full: bool) -> None:
        """Read one pack: its hash (and with `full`, every blob). A mismatch is read again,
        then located blob by blob."""
        r = self.result
        pid = bytes.fromhex(name)
        with self._lock:
            if full:
                r.packs_read += 1
        # Each delta's base is loaded from another pack. Local: asked for now, the disk reads
        # them while this pack is read (a year's repository, cold: 6.7 % faster). Remote: read
        # in groups of exact spans, not an 8 MiB window each (repository/packbases.py).
        bases = PackBases(self.repo, entries) if full and entries and self._whole_deltas else None
        # A pack larger than a span, on a local disk, is read in spans (its header first);
        # remote, each span would cost a request.
        first = _FirstRead()
        if not self.repo.backend.remote and self._sizes[pid] > SPAN:
            settled = self._examine_in_spans(pid, entries, full, bases, first)
            if settled:
                return
        misread = first.misread  # read once already, in spans, and its bytes did not match
        try:
            data = self.repo.backend.load(Handle("data", name))
            matches = hashlib.sha256(data).hexdigest() == name
            if not matches and not misread:
                misread = True
                data = self.repo.backend.load(Handle("data", name))
                matches = hashlib.sha256(data).hexdigest() == name
        except StorageError as exc:
            r.damaged_packs[name] = _("cannot be read: {reason}").format(reason=exc.message)
            return
        if not matches:
            self._locate(pid, data, entries)
            return
        header = None
        if full:
            try:
                header = self.repo.read_pack_header(pid, data=data)
            except FormatError as exc:
                r.damaged_packs[name] = _("header: {reason}").format(reason=exc.message)
            # Its header did not decode from the first read, and does from the same bytes now.
            misread = misread or (header is not None and first.header_failed)
        with self._lock:
            if misread:
                r.notes.append(_(
                    "pack {name} gave wrong bytes once and the right ones when read again: "
                    "check this machine's memory and the connection to the storage").format(
                        name=name[:12]))
            r.hashed.add(pid)
            if full:
                r.examined.add(pid)
        if header is not None:
            decoded = _Decoded()
            self._decode_all(pid, data, header, decoded, bases)
            self._examined(pid, entries, header, decoded)

    def _examine_in_spans(self, pid: bytes, entries: list[packfmt.BlobEntry] | None, full: bool,
                          bases: PackBases | None, first: _FirstRead) -> bool:
        """A local pack read in spans of at most SPAN bytes (a larger blob alone), hashed and
        (full) its blobs decoded span by span, after its header. True when that settled it: its
        bytes match its name, its outcome then taken into the result, or it could not be read
        (as a whole read that fails). Else nothing is taken, what the caller must know of this
        first read is in `first`, and the caller reads the pack whole and says what is wrong."""
        name, size = pid.hex(), self._sizes[pid]
        handle = Handle("data", name)
        end_at, end = size, b""  # the header's stored bytes, checked again where a span covers them
        try:
            header: list[packfmt.BlobEntry] = []
            if full:
                try:
                    header, end_at, end = self.repo.read_pack_end(pid, size=size)
                except FormatError:
                    first.header_failed = True
                    return False
            self.repo.backend.will_read(handle, 0, size)  # the disk reads ahead while blobs decode
            digest, decoded = hashlib.sha256(), _Decoded()
            for start, stop, blobs in packfmt.spans(header, size, SPAN):
                # The last span asks for a byte more: a pack grown since it was listed is seen.
                data = self.repo.backend.load(handle, start, stop - start + (stop == size))
                if len(data) != stop - start:
                    return False  # its size changed since it was listed: read whole, as before
                digest.update(data)
                if stop > end_at and (data[max(0, end_at - start):]
                                      != end[max(0, start - end_at) : stop - end_at]):
                    first.misread = True  # the header was decoded from other bytes than these
                    return False
                if full:
                    self._decode_all(pid, data, blobs, decoded, bases, start)
                del data  # held: one span at a time
        except StorageError as exc:
            self.result.damaged_packs[name] = _("cannot be read: {reason}").format(reason=exc.message)
            return True
        if digest.hexdigest() != name:
            first.misread = True
            return False
        with self._lock:
            self.result.hashed.add(pid)
            if full:
                self.result.examined.add(pid)
        if full:
            self._examined(pid, entries, header, decoded)
        return True

    def _examined(self, pid: bytes, entries: list[packfmt.BlobEntry] | None,
                  header: list[packfmt.BlobEntry], decoded: _Decoded) -> None:
        """The outcome of decoding every blob of a pack whose bytes match its name."""
        if entries is not None and sorted(map(_key, header)) != sorted(map(_key, entries)):
            with self._lock:
                self.result.errors.append(_("pack {name}: the index and the pack header disagree")
                                          .format(name=pid.hex()[:12]))
        self._count(decoded)
        bad = decoded.bad
        if bad:
            self._record(pid, bad, ngettext(
                "blob {blob} does not authenticate ({n} of {total} blob damaged)",
                "blob {blob} does not authenticate ({n} of {total} blobs damaged)",
                len(header)).format(blob=bad[0].hex()[:12], n=len(bad), total=len(header)))

    def _count(self, decoded: _Decoded) -> None:
        with self._lock:
            self._unverifiable += decoded.unverifiable
            self._orphans += decoded.orphans

    def _locate(self, pid: bytes, data: bytes, entries: list[packfmt.BlobEntry] | None) -> None:
        """A pack whose bytes do not match its name: which of its blobs are damaged."""
        what = _("content does not match its name (bit rot or tampering)")
        try:
            header = self.repo.read_pack_header(pid, data=data)
        except (FormatError, StorageError):
            header = None
        listed = header if header is not None else entries
        if listed is None:
            self._record(pid, [], _("{what}; its header is unreadable and no index lists it").format(
                what=what))
            return
        decoded = _Decoded()
        self._decode_all(pid, data, listed, decoded)
        self._count(decoded)
        bad = decoded.bad
        if bad:
            detail = ngettext("{n} of {total} blob damaged", "{n} of {total} blobs damaged",
                              len(listed)).format(n=len(bad), total=len(listed))
        elif header is None:
            detail = _("its header is damaged, its blobs are intact")
        else:
            detail = _("its blobs are intact")
        self._record(pid, bad, _("{what}: {detail}").format(what=what, detail=detail))

    def _record(self, pid: bytes, bad: list[bytes], reason: str) -> None:
        with self._lock:
            self.result.damaged_packs[pid.hex()] = reason
            self.result.examined.add(pid)
            self.result.damaged_blobs[pid] = [*bad, PACK_ITSELF]

    def _decode_all(self, pid: bytes, data: bytes, entries: list[packfmt.BlobEntry],
                    decoded: _Decoded, bases: PackBases | None = None, start: int = 0) -> None:
        """Authenticate and decode every blob listed, `data` being the pack's bytes from offset
        `start`; the ids of those that fail go to `decoded.bad`. `bases`: made for the index's
        entries of this pack (a base they do not name is loaded alone)."""
        view = memoryview(data)
        bad = decoded.bad
        if bases is None and self._whole_deltas:
            bases = PackBases(self.repo, entries)
        for e in entries:
            at = e.offset - start
            if at < 0 or at + e.length > len(data):
                bad.append(e.id)
                continue
            stored = view[at : at + e.length]
            base = None
            try:
                if e.base is not None:
                    if bases is None:
                        # Authenticated, but not rebuilt: the chunk it stands for was compared
                        # with its decoding when it was written (Packer.add), and its base is
                        # decoded and checked against its id where its own pack is read.
                        # Rebuilt, the deltas of a year-old repository's share meant decoding
                        # bases and hashing blocks of 3 to 11 times its bytes (docs/design.md §3).
                        self.repo.check_delta_form(e, self.repo.open_blob(e, stored))
                        continue
                    try:
                        base = bases.get(e.base)  # checked in its own pack
                    except (FormatError, StorageError):
                        # Its base's pack is reported where it is read; this pack is not at fault.
                        if e.id in self.used and not self._other_copy(e.id, pid):
                            decoded.unverifiable += 1
                        else:
                            decoded.orphans += 1
                        continue
                self.repo.decode_blob(e, stored, base)
            except FormatError:
                bad.append(e.id)

    def _attribute(self, snaps: list[Snapshot]) -> None:
        """Name the files of each snapshot that depend on damaged or missing data."""
        r = self.result
        if not r.damaged_packs:
            return
        bad_packs = {bytes.fromhex(p) for p in r.damaged_packs} - set(r.damaged_blobs)
        bad_blobs = {(p, b) for p, blobs in r.damaged_blobs.items() for b in blobs}

        def damaged(blob_id: bytes) -> bool:
            locs = self.repo.index.locations(blob_id)
            return bool(locs) and all(loc.pack in bad_packs or (loc.pack, blob_id) in bad_blobs
                                      for loc in locs)

        def lost(blob_id: bytes) -> bool:
            """Every copy is damaged, or is a delta whose base (a plain blob: depth one) is."""
            locs = self.repo.index.locations(blob_id)
            return bool(locs) and all(
                loc.pack in bad_packs or (loc.pack, blob_id) in bad_blobs
                or (loc.entry.base is not None and damaged(loc.entry.base))
                for loc in locs
            )

        self.progress.phase(N_("finding the files that depend on damaged data"), files_total=len(snaps),
                            known=True, unit=N_("snapshots"))
        for snap in snaps:
            self.progress.advance(1, current=_snapshot_name(snap))
            hits: list[str] = []
            stack: list[tuple[bytes, str]] = [(snap.tree, "")]
            while stack:
                tree_id, prefix = stack.pop()
                if lost(tree_id):
                    hits.append(_("{path} (whole directory)").format(path=prefix or "/"))
                    continue
                try:
                    nodes = load_tree(self.repo, tree_id)
                except (FormatError, StorageError, ObjectNotFound):
                    continue
                for node in nodes:
                    path = prefix + "/" + os.fsdecode(node.name)
                    if node.type == "dir" and node.subtree is not None:
                        stack.append((node.subtree, path))
                    elif any(lost(b) for b in node.content):
                        hits.append(path)
            if hits:
                r.affected[snap.id] = sorted(hits)


def _snapshot_name(snap: Snapshot) -> str:
    return f"{snap.id[:8]} {', '.join(snap.paths)}".rstrip()


def _key(e: packfmt.BlobEntry) -> tuple[int, bytes, int, int, int, bytes]:
    return (e.kind, e.id, e.offset, e.length, e.raw_length, e.base or b"")
