"""Restore: recreate a snapshot's files under a target directory.

Safety: every name is validated (no '/', '.', '..' or NUL), and everything is made relative
to an open folder of the target, reached without following symlinks (ops/target.py): nothing
is ever written outside the target, whatever the snapshot holds and whatever another user
swaps in the target while the restore runs. Device nodes are made only when asked
(--devices); setuid and setgid bits are kept only by a restore as root, which gives files
their owners too (as GNU tar does).

Honest counts: a file is counted as restored only once all its bytes are written (and
re-read, with verify). A file that fails is counted as not restored and removed: the restore
created it (O_EXCL), and a half-written file at full size would pass for a restored one. A full or
read-only target stops the restore: nothing more is queued, the rest is counted as not
restored, and one message says so instead of an error per file.

Existing files (ops/overwrite.py decides, docs/restore.md): a file, link or node is first
created with O_EXCL; only if something is there is --overwrite asked. A replacement is written
beside the old one under a temporary name, then renamed over it: the old file stays whole until
the new one is complete, and a symlink or hard link in its place is replaced, never followed. A
folder is never removed to make room for a file (but by --sync --delete); a file or symlink
where the snapshot has a folder is replaced by a folder, except with "never", which leaves it
and skips that folder.

--sync (ops/sync.py) is "if-changed" that also sets the metadata of unchanged entries again;
--delete removes, folder by folder before writing into it, what the snapshot does not hold.

Before writing anything, the selection is walked once (ops/selection.py): it counts the files
and bytes to restore (the progress totals), finds the folders that hold something selected,
and makes an --include that matches nothing an error, with the closest paths of the snapshot as
a hint.
"""

from __future__ import annotations

import errno
import os
import queue
import stat
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from coffre.core import forks, posix
from coffre.core.directwrite import DirectWrites
from coffre.core.errors import CoffreError, UsageError
from coffre.core.i18n import _, ngettext
from coffre.core.progress import NULL_PROGRESS, Progress
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node
from coffre.ops import casefold
from coffre.ops.common import Problems, Reporter, quiet
from coffre.ops.content import content_matches
from coffre.ops.overwrite import OVERWRITE, REPLACE, SKIP, UNCHANGED, beside, decide
from coffre.ops.restoreprocs import BatchProcesses, Counts
from coffre.ops.selection import Selection
from coffre.ops.sync import Extraneous, check_options, check_target
from coffre.ops.target import KEPT_PER_THREAD, TargetDirs, keeps_modes
from coffre.repository.index import Location
from coffre.repository.repo import Repository

ZERO = bytes(16 * 1024 * 1024)
# Work handed to the pool: small files in batches (few tasks, their reads overlap), and
# large files in ranges of blobs written with pwrite, so one large file (the database) is
# restored by every core. The thread that decodes a blob also writes it: no hand-off.
BATCH_FILES = 64
BATCH_BYTES = 8 * 1024 * 1024
RANGE_BLOBS = 8
# Remote storage: each request is a round trip, so tasks are larger (fewer requests, see
# Repository.load_many) and more of them wait on the network at once.
REMOTE_WORKERS = 8
REMOTE_BATCH_FILES = 512
REMOTE_BATCH_BYTES = 32 * 1024 * 1024
REMOTE_RANGE_BLOBS = 64
# Format 2 stores a pack's blobs in a random order: small files are batched by pack (the
# pack of their first blob), one batch open per pack, so a pack's blobs are read together
# however the walk alternates between packs (a folder holds files of several days).
SEALED_BATCH_FILES = 8192
MAX_SEALED_BATCH_BYTES = 32 * 1024 * 1024
# Files waiting in the open batches of all packs: beyond this, the largest batch is queued.
SEALED_PENDING_FILES = 65536
# A batch's files are opened, then written, at most this many at a time per worker, so that
# all of them stay within the process's limit of open files (1,024 by default on Linux unless
# raised: a restore asks for more first), beside the folders each thread keeps and the rest
# (OPEN_RESERVE: packs being read, large files being written by ranges, connections, cache).
OPEN_RESERVE = 128
MIN_OPEN_AT_ONCE = 16
# What restoring a batch of small files counts, and a copy of the process sends back.
COPY_COUNTS = frozenset({"files", "files_failed", "bytes", "verified", "skipped", "unchanged", "replaced"})
# Errors of the target as a whole: every later write would fail the same way.
TARGET_FULL = (errno.ENOSPC, errno.EDQUOT)
TARGET_STOPS = (*TARGET_FULL, errno.EROFS)
# What a file system answers for an owner or a mode it cannot keep: FAT and exFAT (the usual
# USB disks) keep neither, some network shares no owner. Counted for one warning, not an error
# per file: the content and the dates are restored.
NOT_KEPT = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)


@dataclass
class RestoreOptions:
    target: str
    includes: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    verify: bool = False
    sparse: bool = True
    workers: int = 2
    devices: bool = False
    overwrite: str = "never"  # one of OVERWRITE
    sync: bool = False  # make the target match the snapshot (ops/sync.py); with overwrite "if-changed"
    delete: bool = False  # with sync: remove what the snapshot does not hold
    # Small files restored by copies of this process (ops/restoreprocs.py): only where nothing
    # else runs in the process (the command line).
    processes: bool = False


def restore_options(target: str, *, includes: list[str] | None = None, excludes: list[str] | None = None,
                    verify: bool = False, devices: bool = False, overwrite: str | None = None,
                    sync: bool = False, delete: bool = False) -> RestoreOptions:
    """The options of `coffre restore` (and of the agent's files kept current, which restores as
    `restore --sync [--delete]` does): --sync implies --overwrite if-changed, otherwise
    "never"; UsageError for the combinations check_options refuses."""
    overwrite = overwrite or ("if-changed" if sync else "never")
    check_options(overwrite, sync, delete)
    return RestoreOptions(target=target, includes=list(includes or []), excludes=list(excludes or []),
                          verify=verify, devices=devices, overwrite=overwrite, sync=sync, delete=delete)


def path_pattern(path: str) -> str:
    """An --include pattern matching exactly the absolute path `path` (and what is under it):
    the pattern characters in it are taken literally (docs/patterns.md)."""
    out = "".join("\\" + c if c in "*?[]\\!" else c for c in path.rstrip("/"))
    return out or "/"


@dataclass
class RestoreStats:
    files: int = 0
    files_failed: int = 0
    dirs: int = 0
    others: int = 0
    bytes: int = 0
    verified: int = 0
    skipped: int = 0  # already there, left as it was (--overwrite never)
    unchanged: int = 0  # already there with the snapshot's content (--overwrite if-changed)
    replaced: int = 0  # already there, replaced
    deleted: int = 0  # files, links and folders removed by --sync --delete
    files_total: int = 0  # selected by the plan
    bytes_total: int = 0


class Restorer:
    def __init__(self, repo: Repository, opts: RestoreOptions, report: Reporter = quiet,
                 progress: Progress = NULL_PROGRESS) -> None:
        self.repo = repo
        self.opts = opts
        self.report = report
        self.progress = progress
        if not opts.target:  # os.path.abspath("") is the working directory
            raise UsageError(_("the restore target is empty"), _("give the folder to restore into"))
        if opts.overwrite not in OVERWRITE:
            raise UsageError(_("--overwrite {value!r}: give never, if-changed or always").format(
                value=opts.overwrite))
        check_options(opts.overwrite, opts.sync, opts.delete)
        if opts.delete:
            local = not repo.backend.remote and repo.backend.location.startswith("/")
            check_target(opts.target, repo.backend.location if local else None)
        self.problems = Problems()
        self.stats = RestoreStats()
        self.selection = Selection(repo, opts.includes, opts.excludes)
        self.root = os.fsencode(os.path.abspath(opts.target))
        remote = repo.backend.remote
        self.workers = max(opts.workers, REMOTE_WORKERS) if remote else opts.workers
        self.batch_files = REMOTE_BATCH_FILES if remote else BATCH_FILES
        self.batch_bytes = REMOTE_BATCH_BYTES if remote else BATCH_BYTES
        self.range_blobs = REMOTE_RANGE_BLOBS if remote else RANGE_BLOBS
        self.by_pack = repo.version >= 2
        # Where each small file begins: its batch (format 2), and the span announced to a local disk.
        self._locate_first = self.by_pack or not remote
        if self.by_pack:
            self.batch_files = SEALED_BATCH_FILES
            self.batch_bytes = max(self.batch_bytes, min(repo.config.pack_size, MAX_SEALED_BATCH_BYTES))
        # The main thread keeps folders too; each worker, folders and the files it writes.
        others = OPEN_RESERVE + KEPT_PER_THREAD * (self.workers + 1)
        limit = posix.open_files_limit(others + self.workers * self.batch_files)
        self.open_at_once = max(MIN_OPEN_AT_ONCE, min(self.batch_files, (limit - others) // self.workers))
        self._dirs: list[tuple[bytes, Node]] = []
        self._links: list[tuple[bytes, Node]] = []
        self._first_link: dict[tuple[int, int], bytes] = {}
        self._lock = threading.Lock()
        self._is_root = posix.is_root()
        self._slots = threading.BoundedSemaphore(self.workers * 4)
        self.direct = DirectWrites()  # large files' aligned bulk around the page cache
        self._owners: dict[tuple[str, str, int, int], tuple[int, int]] = {}
        # Open batches of small files: one per pack (format 2), else the one of key None.
        self._batches: dict[bytes | None, _Batch] = {}
        self._pending = 0  # files in the open batches
        self._stop: int | None = None  # errno that made the whole target unwritable
        self._lost_links: set[bytes] = set()  # hard-linked files that could not be restored
        self._left_links: set[bytes] = set()  # hard-linked files left as they were
        self._devices_skipped = 0
        self._privileges_dropped = 0
        self._not_kept = 0  # entries whose owner or mode the target refused (NOT_KEPT)
        self._keeps_modes = True  # False: the target gives every file a mode of its own
        # For each file system met: whether it takes Facture.pdf for facture.pdf (ops/casefold.py).
        self._case_by_device: dict[int, bool] = {}
        self._twins: dict[bytes, list[bytes]] = {}  # there: path -> names that may be the same entry
        self.dirs: TargetDirs  # opened by run
        self._extraneous: Extraneous | None = None  # --sync --delete: made by run
        self._copies: BatchProcesses | None = None  # small files' batches, if run forks copies
        self._feeder: _RangeFeeder | None = None  # large files' ranges, beside the copies
        self._flush_to_threads = False  # a folder blind to case met: batches stay in this process

    # -- the run ---------------------------------------------------------------------------------
    def run(self, snap: Snapshot, at: str = "", node: Node | None = None) -> Problems:
        """Restore the snapshot (or, with `at` and its `node`, one folder's contents or one
        file) into the target."""
        self.selection.plan(snap, at, node)
        self.stats.files_total, self.stats.bytes_total = self.selection.files, self.selection.bytes
        self.progress.phase("restore", files_total=self.stats.files_total,
                            bytes_total=self.stats.bytes_total, known=True)
        covered = self.selection.covered(at)
        try:
            os.makedirs(self.root, exist_ok=True)
            self.dirs = TargetDirs(self.root)
            blind = casefold.ignores_case(self.dirs.root_fd)  # the root's; a disk mounted below: _blind_at
            self._case_by_device[os.fstat(self.dirs.root_fd).st_dev] = blind
            self._keeps_modes = keeps_modes(self.dirs.root_fd)
        except OSError as exc:
            raise CoffreError(_("cannot create {target}: {reason}").format(
                target=self.opts.target, reason=exc.strerror)) from None
        if self.opts.delete:
            self._extraneous = Extraneous(self.dirs, self.selection, self.opts.devices, self._problem,
                                          self._count_deleted)
        if self.selection.demand is not None:  # remote: the packs needed most of, read whole
            self.repo.planned = self.selection.demand.planned(self.repo.backend)
        try:
            # Before any thread of the restore (ops/restoreprocs.py says why).
            if self.opts.processes and not blind and forks.available():
                try:  # as many copies as cores asked for (remote storage: more threads, to wait)
                    self._copies = BatchProcesses(self, self.opts.workers)
                except OSError:  # no process to spare (a limit, memory): threads do it all
                    self._copies = None
            with ThreadPoolExecutor(self.workers, thread_name_prefix="restore") as pool:
                futures: list[Future[None]] = []
                if self._copies is not None and self.by_pack:  # format 1 writes in the walk's order
                    self._feeder = _RangeFeeder(self, pool)
                try:
                    self._walk(pool, futures, snap, at, node, covered, blind)
                    if self._feeder is not None:
                        futures += self._feeder.close()
                except BaseException:
                    if self._feeder is not None:  # before the pool stops taking tasks
                        self._feeder.abort()
                    raise
                finally:
                    self._feeder = None
                if self._copies is not None:
                    copies, self._copies = self._copies, None
                    copies.close()
                for fut in futures:
                    fut.result()
            for path, link in self._links:
                self._make_link(path, link)
            # Children before their parent (the order _dirs was filled in): a parent's mode
            # may close it to its owner, and its mtime must come after the last write into it.
            for path, folder in self._dirs:
                self._set_dir_metadata(path, folder)
        finally:
            if self._copies is not None:  # interrupted, or an unexpected error
                self._copies.abort()
                self._copies = None
            self.repo.planned = None
            self.dirs.close()
        if self._devices_skipped:
            self.problems.warnings.append(ngettext(
                "{n} device node not restored: give --devices to make it",
                "{n} device nodes not restored: give --devices to make them",
                self._devices_skipped).format(n=self._devices_skipped))
        if self._privileges_dropped:
            self.problems.warnings.append(ngettext(
                "setuid/setgid bits removed from {n} file: only a restore as root, which restores "
                "owners too, keeps them",
                "setuid/setgid bits removed from {n} files: only a restore as root, which restores "
                "owners too, keeps them", self._privileges_dropped).format(n=self._privileges_dropped))
        if not self._keeps_modes:
            self.problems.warnings.append(_(
                "the target does not keep modes or owners (a FAT or exFAT disk gives every file "
                "the same ones): the contents and dates of files and folders are restored, their "
                "modes and owners are not"))
        elif self._not_kept:
            self.problems.warnings.append(ngettext(
                "the owner or mode of {n} file or folder was refused by the target (a FAT or exFAT "
                "disk keeps neither, some network shares no owner): its content and dates are "
                "restored",
                "the owners or modes of {n} files and folders were refused by the target (a FAT or "
                "exFAT disk keeps neither, some network shares no owner): their contents and dates "
                "are restored", self._not_kept).format(n=self._not_kept))
        if self._stop is not None:
            self.problems.errors.append(self._stop_message(self._stop))
        return self.problems

    def _walk(self, pool: ThreadPoolExecutor, futures: list[Future[None]], snap: Snapshot, at: str,
              node: Node | None, covered: bool, blind: bool) -> None:
        """Create the folders, links and specials, and hand every file to the threads, the
        copies or the feeder of ranges."""
        if node is None:
            self._restore_dir(pool, futures, snap.tree, self.root, "", covered, blind)
        elif node.type == "dir" and node.subtree is not None:
            self._restore_dir(pool, futures, node.subtree, self.root, at, covered, blind)
        else:
            above = at.rsplit("/", 1)[0]
            if self._extraneous is not None:  # only a folder in the file's place
                self._extraneous.folder(self.root, above, covered, [node], whole=False)
            self._restore_nodes(pool, futures, [node], self.root, above, covered, blind)
        self._flush_batches(pool, futures)

    def _stop_message(self, code: int) -> str:
        counts = ngettext("{n} file restored", "{n} files restored", self.stats.files).format(
            n=self.stats.files) + ", " + ngettext(
            "{n} not restored", "{n} not restored", self.stats.files_failed).format(n=self.stats.files_failed)
        if code in TARGET_FULL:
            return _("the restore target is full: {counts}; free space and run the restore again").format(
                counts=counts)
        return _("the restore target is read-only: {counts}; make it writable (or restore "
                 "elsewhere) and run the restore again").format(counts=counts)

    def _restore_dir(
        self, pool: ThreadPoolExecutor, futures: list[Future[None]], tree_id: bytes,
        dest: bytes | None, prefix: str, covered: bool, blind: bool, lost: str = "failed",
    ) -> None:
        """Restore a folder's contents into dest; with dest None (its folder could not be
        made, or the target is full, or it is left as it was) only count its files as `lost`
        ("failed": not restored, "skipped": left as they were). `blind`: dest's file system
        does not tell upper and lower case apart."""
        try:
            nodes = self.selection.tree(tree_id)
        except CoffreError as exc:  # a damaged folder listing: the rest is still restored
            where = dest if dest is not None else os.fsencode(prefix)
            self._problem(where, CoffreError(_("folder contents cannot be read ({reason}); skipped").format(
                reason=exc.message)))
            return
        if self.repo.backend.remote and dest is not None:
            self.selection.read_ahead(nodes)
        if self._extraneous is not None and dest is not None and self._stop is None:
            self._extraneous.folder(dest, prefix, covered, nodes)
        self._restore_nodes(pool, futures, nodes, dest, prefix, covered, blind, lost)

    def _restore_nodes(
        self, pool: ThreadPoolExecutor, futures: list[Future[None]], nodes: list[Node],
        dest: bytes | None, prefix: str, covered: bool, blind: bool, lost: str = "failed",
    ) -> None:
        if blind and dest is not None:
            # The copies know only the twins of the folders met before they were made.
            self._flush_to_threads = True
            for name, others in casefold.twins([node.name for node in nodes]).items():
                self._twins[dest + b"/" + name] = others
        for node in nodes:
            path = prefix + "/" + os.fsdecode(node.name)
            bpath = os.fsencode(path)
            if self.selection.excluded(bpath):
                continue
            out = None if dest is None or self._stop is not None else dest + b"/" + node.name
            selected = self.selection.selected(bpath, covered)
            if node.type == "dir" and node.subtree is not None:
                if not selected and not self.selection.wanted(path):
                    continue
                gone = lost
                if out is not None:
                    try:
                        made = self._make_dir(out)
                    except (OSError, CoffreError) as exc:
                        self._problem(out, exc)
                        made, gone = None, "failed"
                    else:
                        gone = "skipped" if made is None else lost
                    if made is None:
                        out = None
                    elif made:
                        self.stats.dirs += 1
                # A folder made here is on its parent's file system; one that was there may be
                # where a disk or a share is mounted.
                inside = blind if out is None or made else self._blind_at(out, blind)
                self._restore_dir(pool, futures, node.subtree, out, path, selected, inside, gone)
                if out is not None:
                    self._dirs.append((out, node))
                continue
            if not selected:
                continue
            if out is None:
                if node.type == "file":
                    self._count(node, False, None, skipped=lost == "skipped")
                continue
            if node.type == "file":
                key = (node.device, node.inode)
                if node.nlink > 1 and node.inode:
                    with self._lock:
                        if key in self._first_link:
                            self._links.append((out, node))
                            continue
                        self._first_link[key] = out
                self._submit(pool, futures, out, node)
            else:
                self._restore_special(out, node)

    def _submit(
        self, pool: ThreadPoolExecutor, futures: list[Future[None]], path: bytes, node: Node
    ) -> None:
        if self._stop is not None:
            self._count(node, False, path)
            return
        if len(node.content) > self.range_blobs:
            if not self.by_pack:
                self._flush_batches(pool, futures)  # files are written in the order of the walk
            self._submit_large(pool, futures, path, node)
            return
        key = loc = None
        if node.content and self._locate_first:
            loc = self.repo.index.lookup(node.content[0])
            key = loc.pack if loc is not None and self.by_pack else None
        batch = self._batches.setdefault(key, _Batch())
        if loc is not None:
            batch.first_blobs.append(loc)
        batch.files.append((path, node))
        batch.bytes += node.size
        self._pending += 1
        if len(batch.files) >= self.batch_files or batch.bytes >= self.batch_bytes:
            self._flush_batch(pool, futures, key)
        elif self._pending >= SEALED_PENDING_FILES:
            largest = max(self._batches, key=lambda k: len(self._batches[k].files))
            self._flush_batch(pool, futures, largest)

    def _flush_batch(self, pool: ThreadPoolExecutor, futures: list[Future[None]], key: bytes | None) -> None:
        batch = self._batches.pop(key, None)
        if batch is not None and batch.files:
            self._pending -= len(batch.files)
            self.repo.will_read(batch.first_blobs)  # read from the disk while this task waits
            copies = None if self._flush_to_threads else self._copies
            if copies is None or not copies.submit(batch.files):
                self._queue(pool, futures, self._restore_batch, batch.files)

    def _flush_batches(self, pool: ThreadPoolExecutor, futures: list[Future[None]]) -> None:
        for key in list(self._batches):
            self._flush_batch(pool, futures, key)

    def _queue(
        self, pool: ThreadPoolExecutor, futures: list[Future[None]], fn: Callable[..., None], *args: Any
    ) -> None:
        """Run fn in the pool, with a bounded number of tasks in flight so memory stays flat."""
        self._slots.acquire()
        fut = pool.submit(fn, *args)
        fut.add_done_callback(lambda _: self._slots.release())
        futures.append(fut)
        if len(futures) >= 1024:
            pending = []
            for f in futures:
                if f.done():
                    f.result()  # an unexpected error stops the restore here
                else:
                    pending.append(f)
            futures[:] = pending

    def _restore_batch(self, batch: list[tuple[bytes, Node]]) -> None:
        if self._stop is not None:  # queued before the target filled up: not even read
            for path, node in batch:
                self._count(node, False, path)
            return
        for start in range(0, len(batch), self.open_at_once):
            self._restore_files(batch[start : start + self.open_at_once])

    def _restore_files(self, files: list[tuple[bytes, Node]]) -> None:
        # Open (or decide to leave) each file first: what is left as it was is not even read.
        opened = []
        for path, node in files:
            out = self._open(path, node)
            if out is not None:
                opened.append((path, node, out))
        blobs = iter(self.repo.load_many([b for _, node, _o in opened for b in node.content]))
        for path, node, out in opened:
            data = [next(blobs) for _ in node.content]
            self._restore_file(path, node, out, data)

    def _submit_large(
        self, pool: ThreadPoolExecutor, futures: list[Future[None]], path: bytes, node: Node
    ) -> None:
        """Create the file at its full size, then queue its blobs by ranges."""
        lengths, located = [], []
        for blob_id in node.content:
            loc = self.repo.index.lookup(blob_id)
            if loc is None:
                self._problem(path, CoffreError(
                    _("blob {id} is not in the index").format(id=blob_id.hex()[:12])))
                self._count(node, False, path)
                return
            lengths.append(loc.entry.raw_length)
            located.append(loc)
        out = self._open(path, node)
        if out is None:
            return
        fd = out[0]
        try:
            os.ftruncate(fd, sum(lengths))  # blobs of zeros are then left as holes
        except OSError as exc:
            self._problem(path, exc)
            self._finish(out, path, node, failed=True)
            return
        starts = range(0, len(node.content), self.range_blobs)
        job = _LargeFile(path, node, out, len(starts), self.direct.open(fd))
        ranges, offset = [], 0
        for start in starts:
            ranges.append(_Range(offset, node.content[start : start + self.range_blobs],
                                 located[start : start + self.range_blobs]))
            offset += sum(lengths[start : start + self.range_blobs])
        if self._feeder is not None:
            self._feeder.put(job, ranges)  # the walk goes on to the copies' batches
        else:
            self._queue_ranges(pool, futures, job, ranges)

    def _queue_ranges(self, pool: ThreadPoolExecutor, futures: list[Future[None]], job: _LargeFile,
                      ranges: list[_Range], stopped: Callable[[], bool] = lambda: False) -> None:
        """Queue a large file's ranges; once `stopped`, the rest are not written (the file is
        then finished as damaged by its last range)."""
        for i, part in enumerate(ranges):
            if stopped():
                job.fail()
                for rest in ranges[i:]:  # no read nor write: each only counts itself done
                    self._restore_range(job, rest.offset, rest.ids)
                return
            self.repo.will_read(part.located)
            self._queue(pool, futures, self._restore_range, job, part.offset, part.ids)

    def _restore_range(self, job: _LargeFile, offset: int, ids: list[bytes]) -> None:
        try:
            if job.failed or self._stop is not None:
                job.fail()  # the file is lost anyway: neither read nor write the rest
            else:
                end, _data_end = self._write_blobs(job.out[0], self.repo.load_many(ids), offset, job.direct)
                self.progress.advance(nbytes=end - offset, current=job.path)
        except (OSError, CoffreError) as exc:  # unreadable data: report, go on with the rest
            if job.fail():
                self._problem(job.path, exc)
        finally:
            if job.one_done():
                late = job.close_direct()
                if late is not None and job.fail():
                    self._problem(job.path, late)
                self._finish(job.out, job.path, job.node, job.failed, ranged=True)

    def _write_blobs(self, fd: int, blobs: list[bytes | CoffreError], offset: int,
                     direct: int | None = None) -> tuple[int, int]:
        """Write blobs one after the other from `offset`, leaving blobs of zeros as holes;
        raises the error of the first unreadable one. Returns where the blobs end and where
        the last bytes actually written end. `direct`: the file's descriptor for writes around
        the page cache (DirectWrites.open), through which each run's aligned middle goes."""
        data_end = start = offset
        run: list[bytes] = []
        for data in blobs:
            if isinstance(data, CoffreError):
                raise data
            if self._hole(data):
                self.direct.write(fd, direct, run, start)
                run, start = [], offset + len(data)
            else:
                run.append(data)
                data_end = offset + len(data)
            offset += len(data)
        self.direct.write(fd, direct, run, start)
        return offset, data_end

    def _hole(self, data: bytes) -> bool:
        return (
            self.opts.sparse and bool(data) and not data[0] and not data[-1]
            and len(data) <= len(ZERO) and data == ZERO[: len(data)]
        )

    def _decide(self, folder: int, name: bytes, path: bytes, node: Node) -> str:
        return decide(self.opts.overwrite, self.repo, folder, name, path, node,
                      delete_hint=self.opts.sync and not self.opts.delete)

    def _blind_at(self, path: bytes, parent: bool) -> bool:
        """Whether a folder that was there before the restore ignores case: its file system is
        asked once (ops/casefold.py), the target's root at the start, and a disk or a share
        mounted inside the target when the restore goes into it. `parent`: the answer for the
        folder above, kept if this one cannot be asked."""
        try:
            folder, name = self.dirs.parent(path)
            device = os.stat(name, dir_fd=folder, follow_symlinks=False).st_dev
            known = self._case_by_device.get(device)
            if known is None:
                fd = self.dirs.open_dir(path)
                try:
                    known = self._case_by_device[device] = casefold.ignores_case(fd)
                finally:
                    os.close(fd)
            return known
        except OSError:
            return parent

    def _make_dir(self, path: bytes) -> bool | None:
        """A real directory at path: True if made, False if one was there. Something else
        there (a symlink above all, which is never followed) is left as it is with "never"
        (None), else replaced, as a file replaces what stands at its place."""
        folder, name = self.dirs.parent(path)
        try:
            os.mkdir(name, 0o700, dir_fd=folder)
            return True
        except FileExistsError:
            self._check_twin(folder, name, path)
            if stat.S_ISDIR(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
                return False
            if self.opts.overwrite == "never":
                return None
            os.unlink(name, dir_fd=folder)
            os.mkdir(name, 0o700, dir_fd=folder)
            with self._lock:
                self.stats.replaced += 1
            return True

    def _check_twin(self, folder: int, name: bytes, path: bytes) -> None:
        """Where the target ignores case, refuse a name whose place its twin of the same
        folder took (ops/casefold.py): it is not there, whatever the target says."""
        others = self._twins.get(path)
        if not others:
            return
        holder = casefold.holder(folder, name)
        if holder is not None:
            raise CoffreError(_("not restored: {twin} takes its place on the target, which does not "
                                "tell upper and lower case apart (a FAT or exFAT disk): restore it "
                                "elsewhere").format(twin=holder or os.fsdecode(others[0])))

    def _left(self, decision: str, node: Node, path: bytes) -> None:
        """Count an entry left as it was (with --sync, an unchanged one gets the snapshot's
        metadata again if it differs)."""
        if decision == UNCHANGED and self.opts.sync:
            self._refresh_metadata(path, node)
        with self._lock:
            if decision == UNCHANGED:
                self.stats.unchanged += 1
            else:
                self.stats.skipped += 1
                if node.type == "file" and node.nlink > 1:
                    self._left_links.add(path)  # its content is not the snapshot's: no link to it
        if node.type == "file":
            self.progress.advance(files=1, nbytes=node.size, current=path)

    def _refresh_metadata(self, path: bytes, node: Node) -> None:
        """Set the mode, times and (as root) owner of an unchanged entry again where they are
        not the snapshot's; nothing is touched (not even its ctime) where they are."""
        try:
            folder, name = self.dirs.parent(path)
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except OSError as exc:
            self._problem(path, exc)
            return
        mode = stat.S_IMODE(node.mode)
        if not self._is_root and node.type != "dir":
            mode &= ~(stat.S_ISUID | stat.S_ISGID)
        if (st.st_mtime_ns != node.mtime_ns
                or (node.type != "symlink" and stat.S_IMODE(st.st_mode) != mode)
                or (self._is_root and (st.st_uid, st.st_gid) != self._owner(node))):
            self._set_metadata(path, node)

    def _count_deleted(self) -> None:
        with self._lock:
            self.stats.deleted += 1

    def _present(self, path: bytes) -> bool:
        try:
            folder, name = self.dirs.parent(path)
            os.stat(name, dir_fd=folder, follow_symlinks=False)
            return True
        except OSError:
            return False

    def _open(self, path: bytes, node: Node) -> tuple[int, bytes | None] | None:
        """A new file to write node's content into: (fd, None) created at path, or (fd,
        temporary path) beside an existing file it will replace; None if the file is left as it
        is or cannot be made (counted)."""
        mode = os.O_RDWR if self.opts.verify else os.O_WRONLY
        flags = mode | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        if self._stop is not None:
            self._count(node, False, path)
            return None
        try:
            folder, name = self.dirs.parent(path)
            try:
                return os.open(name, flags, 0o600, dir_fd=folder), None
            except FileExistsError:
                self._check_twin(folder, name, path)
            decision = self._decide(folder, name, path, node)
            if decision != REPLACE:
                self._left(decision, node, path)
                return None
            temp = beside(path)
            return os.open(temp.rpartition(b"/")[2], flags, 0o600, dir_fd=folder), temp
        except (OSError, CoffreError) as exc:
            self._problem(path, exc)
            self._count(node, False, path)
            return None

    def _restore_file(self, path: bytes, node: Node, out: tuple[int, bytes | None],
                      blobs: list[bytes | CoffreError]) -> None:
        if self._stop is not None:
            self._finish(out, path, node, failed=True)
            return
        failed = False
        try:
            end, data_end = self._write_blobs(out[0], blobs, 0)
            if data_end < end:  # ends in a hole: only ftruncate extends the file
                os.ftruncate(out[0], end)
        except (OSError, CoffreError) as exc:  # unreadable data: report, go on with the rest
            self._problem(path, exc)
            failed = True
        self._finish(out, path, node, failed)

    def _finish(self, out: tuple[int, bytes | None], path: bytes, node: Node, failed: bool,
                ranged: bool = False) -> None:
        """End a file created by the restore: if its bytes are all written, verify it (if
        asked), set its metadata and (a replacement) rename it over the old one; if anything
        failed, remove it (the old one stays). Then count it."""
        fd, temp = out
        written = temp or path
        try:
            created = os.fstat(fd)
            ok = not failed and self._complete(fd, path, node, created)
        except OSError as exc:
            self._problem(path, exc)
            created, ok = None, False
        try:
            os.close(fd)  # network file systems may report a failed write only here
        except OSError as exc:
            if ok:
                self._problem(path, exc)
            ok = False
        if ok and temp is not None:
            ok = self._rename(temp, path)
        if not ok and created is not None:
            self._discard(written, created)
        self._count(node, ok, path, replaced=ok and temp is not None, ranged=ranged)

    def _rename(self, temp: bytes, path: bytes) -> bool:
        """Put a replacement in its place (rename never follows a symlink there, and fails on
        a folder); False, reported, if it could not."""
        try:
            folder, name = self.dirs.parent(path)
            os.rename(temp.rpartition(b"/")[2], name, src_dir_fd=folder, dst_dir_fd=folder)
            return True
        except OSError as exc:
            self._problem(path, exc)
            return False

    def _complete(self, fd: int, path: bytes, node: Node, st: os.stat_result) -> bool:
        """Verify a written file (if asked) and set its metadata; False if its content is not
        right. Metadata that cannot be set is an error (an owner or a mode the file system cannot
        keep, one warning for all: NOT_KEPT), but the content is there: the file stays and counts
        as restored. `st`: the file's fstat."""
        if self.opts.verify:
            try:
                os.fsync(fd)  # a delayed write that finds the disk full fails here
                reason = content_matches(self.repo, fd, node.content, node.size)
            except (OSError, CoffreError) as exc:
                self._problem(path, exc)
                return False
            if reason:
                with self._lock:
                    self.problems.errors.append(_("verify {path}: {reason}").format(
                        path=os.fsdecode(path), reason=reason))
                return False
            with self._lock:
                self.stats.verified += 1
        try:
            self._set_metadata_fd(fd, path, node, st)
        except (OSError, CoffreError) as exc:
            self._problem(path, exc)
        return True

    def _discard(self, path: bytes, created: os.stat_result) -> None:
        """Remove a file the restore created and could not complete, only if the name still
        leads to that very file."""
        try:
            folder, name = self.dirs.parent(path)
            now = os.stat(name, dir_fd=folder, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (created.st_dev, created.st_ino):
                os.unlink(name, dir_fd=folder)
        except OSError as exc:
            self._problem(path, exc)

    def _count(self, node: Node, ok: bool, path: bytes | None = None, *, skipped: bool = False,
               replaced: bool = False, ranged: bool = False) -> None:
        """Count a file as restored, not restored or skipped; `ranged`: its bytes were
        advanced range by range already."""
        with self._lock:
            if skipped:
                self.stats.skipped += 1
            elif ok:
                self.stats.files += 1
                self.stats.bytes += node.size
                self.stats.replaced += replaced
            else:
                self.stats.files_failed += 1
                if path is not None and node.nlink > 1:
                    self._lost_links.add(path)
        self.progress.advance(files=1, nbytes=0 if ranged else node.size, current=path)

    def _restore_special(self, path: bytes, node: Node) -> None:
        if node.type in ("chardev", "blockdev") and not self.opts.devices:
            self._devices_skipped += 1  # a device node in a backup may open what it wants
            return
        if node.type not in ("symlink", "fifo", "chardev", "blockdev"):
            return  # sockets are not restored: they are recreated by their programs
        try:
            folder, name = self.dirs.parent(path)
            try:
                self._make_special(folder, name, node)
                made = path
            except FileExistsError:
                self._check_twin(folder, name, path)
                decision = self._decide(folder, name, path, node)
                if decision != REPLACE:
                    self._left(decision, node, path)
                    return
                made = beside(path)
                self._make_special(folder, made.rpartition(b"/")[2], node)
            self._set_metadata(made, node)
            if made != path and not self._rename(made, path):
                os.unlink(made.rpartition(b"/")[2], dir_fd=folder)
                return
            with self._lock:
                self.stats.others += 1
                self.stats.replaced += made != path
        except (OSError, CoffreError) as exc:
            self._problem(path, exc)

    @staticmethod
    def _make_special(folder: int, name: bytes, node: Node) -> None:
        if node.type == "symlink":
            os.symlink(node.target, name, dir_fd=folder)
        elif node.type == "fifo":
            os.mkfifo(name, 0o600, dir_fd=folder)
        else:
            kind = stat.S_IFCHR if node.type == "chardev" else stat.S_IFBLK
            os.mknod(name, kind | 0o600, node.rdev, dir_fd=folder)

    def _make_link(self, path: bytes, node: Node) -> None:
        first = self._first_link[(node.device, node.inode)]
        if self._stop is not None:
            self.stats.files_failed += 1
            return
        if first in self._left_links:
            if self._present(path):
                self._left(SKIP, node, path)
            else:
                self._problem(path, CoffreError(_(
                    "not restored: it is a hard link to {first}, which was left as it was "
                    "(--overwrite if-changed or always replaces both)").format(first=os.fsdecode(first))))
                self.stats.files_failed += 1
            return
        if first in self._lost_links:
            self._problem(path, CoffreError(
                _("not restored: it is a hard link to {first}, which was not restored").format(
                    first=os.fsdecode(first))))
            self.stats.files_failed += 1
            return
        try:
            source, source_name = self.dirs.parent(first)
            source = os.dup(source)  # the next lookup may replace the kept folder
            try:
                folder, name = self.dirs.parent(path)
                try:
                    os.link(source_name, name, src_dir_fd=source, dst_dir_fd=folder, follow_symlinks=False)
                    made = path
                except FileExistsError:
                    self._check_twin(folder, name, path)
                    decision = self._decide(folder, name, path, node)
                    if decision == REPLACE:
                        same = os.stat(source_name, dir_fd=source, follow_symlinks=False)
                        there = os.stat(name, dir_fd=folder, follow_symlinks=False)
                        if (same.st_dev, same.st_ino) == (there.st_dev, there.st_ino):
                            decision = UNCHANGED
                    if decision != REPLACE:
                        self._left(decision, node, path)
                        return
                    made = beside(path)
                    os.link(source_name, made.rpartition(b"/")[2], src_dir_fd=source, dst_dir_fd=folder,
                            follow_symlinks=False)
            finally:
                os.close(source)
            if made != path and not self._rename(made, path):
                folder, _name = self.dirs.parent(path)
                os.unlink(made.rpartition(b"/")[2], dir_fd=folder)
                self.stats.files_failed += 1
                return
            self.stats.files += 1
            self.stats.replaced += made != path
            self.progress.advance(files=1, current=path)
        except (OSError, CoffreError) as exc:
            self._problem(path, exc)
            self.stats.files_failed += 1

    # -- metadata ------------------------------------------------------------------------------
    def _owner(self, node: Node) -> tuple[int, int]:
        key = (node.user, node.group, node.uid, node.gid)
        found = self._owners.get(key)
        if found is not None:
            return found
        uid, gid = posix.uid_of(node.user), posix.gid_of(node.group)
        uid, gid = node.uid if uid is None else uid, node.gid if gid is None else gid
        self._owners[key] = (uid, gid)
        return uid, gid

    def _set_xattrs(self, target: int | bytes, node: Node, follow: bool) -> None:
        for name, value in node.xattrs:
            try:
                if isinstance(target, int):
                    os.setxattr(target, name, value)
                else:
                    os.setxattr(target, name, value, follow_symlinks=follow)
            except OSError as exc:
                self.problems.warnings.append(
                    _("{file}: extended attribute {name} not restored ({reason})").format(
                        file=os.fsdecode(node.name), name=name, reason=exc.strerror))

    def _set_metadata_fd(self, fd: int, path: bytes, node: Node, st: os.stat_result | None = None) -> None:
        """`st`: the fstat of fd, if the caller made one (a restored file's owner does not
        change while it is written)."""
        kept = True
        if self._is_root:
            # Most restored files already have the right owner: an fstat is much cheaper than
            # an fchown, which costs a journal transaction on ext4 even when nothing changes.
            st = st or os.fstat(fd)
            if (st.st_uid, st.st_gid) != self._owner(node):
                kept = self._keep(os.fchown, fd, *self._owner(node))
        self._set_xattrs(fd, node, True)
        kept = self._keep(os.fchmod, fd, self._mode(node)) and kept
        os.utime(fd, ns=(node.atime_ns, node.mtime_ns))
        self._count_kept(kept)

    def _count_kept(self, kept: bool) -> None:
        """Count an entry whose owner or mode the target refused, for the one warning."""
        if not kept:
            with self._lock:
                self._not_kept += 1

    @staticmethod
    def _keep(setter: Callable[..., None], *args: Any, **kwargs: Any) -> bool:
        """Set an owner or a mode; False if the target's file system cannot keep it
        (NOT_KEPT), which the caller counts: the restore goes on to the dates."""
        try:
            setter(*args, **kwargs)
        except OSError as exc:
            if exc.errno not in NOT_KEPT:
                raise
            return False
        return True

    def _mode(self, node: Node) -> int:
        """The node's mode, without setuid/setgid on a file unless restoring as root."""
        privileges = node.mode & (stat.S_ISUID | stat.S_ISGID)
        if not privileges or self._is_root or node.type == "dir":
            return node.mode
        with self._lock:
            self._privileges_dropped += 1
        return node.mode & ~privileges

    def _set_dir_metadata(self, path: bytes, node: Node) -> None:
        try:
            fd = self.dirs.open_dir(path)
        except OSError as exc:
            self._problem(path, exc)
            return
        try:
            self._set_metadata_fd(fd, path, node)
        except OSError as exc:
            self._problem(path, exc)
        finally:
            os.close(fd)

    def _set_metadata(self, path: bytes, node: Node) -> None:
        """A symlink's, fifo's or device node's (or, with --sync, an unchanged file's), never
        following a symlink."""
        try:
            folder, name = self.dirs.parent(path)
            kept = True
            if self._is_root:
                kept = self._keep(os.chown, name, *self._owner(node), dir_fd=folder, follow_symlinks=False)
            if node.type == "symlink":
                if node.xattrs:
                    self._set_xattrs(f"/proc/self/fd/{folder}/".encode() + name, node, False)
            else:
                with self.dirs.node(path) as itself:
                    self._set_xattrs(itself.encode(), node, True)
                    kept = self._keep(os.chmod, itself, self._mode(node)) and kept
            os.utime(name, ns=(node.atime_ns, node.mtime_ns), dir_fd=folder, follow_symlinks=False)
            self._count_kept(kept)
        except OSError as exc:
            self._problem(path, exc)

    # -- in a copy of the process (ops/restoreprocs.py) -------------------------------------------
    def forked(self, progress: Progress) -> None:
        """In a copy just made: its own lock and counters (what the copy counts is sent back
        per batch, take_counts); its progress goes to the parent."""
        self._lock = threading.Lock()
        self.progress = progress
        self.take_counts()

    def take_counts(self) -> Counts:
        """What was counted since the last call (in a copy: one batch's), counters reset."""
        with self._lock:
            counts = Counts(
                stats={name: getattr(self.stats, name) for name in COPY_COUNTS},
                errors=self.problems.errors, warnings=self.problems.warnings, stop=self._stop,
                lost_links=sorted(self._lost_links), left_links=sorted(self._left_links),
                not_kept=self._not_kept, privileges_dropped=self._privileges_dropped)
            self.stats, self.problems = RestoreStats(), Problems()
            self._lost_links, self._left_links = set(), set()
            self._not_kept = self._privileges_dropped = 0
        return counts

    def add_counts(self, counts: Counts) -> None:
        """What a copy counted for one batch, added to this restore's."""
        with self._lock:
            for name, value in counts.stats.items():
                if name in COPY_COUNTS:
                    setattr(self.stats, name, getattr(self.stats, name) + value)
            self.problems.errors += counts.errors
            self.problems.warnings += counts.warnings
            if counts.stop is not None and self._stop is None:
                self._stop = counts.stop
            self._lost_links.update(counts.lost_links)
            self._left_links.update(counts.left_links)
            self._not_kept += counts.not_kept
            self._privileges_dropped += counts.privileges_dropped

    def lost_to_copy(self, batches: list[list[tuple[bytes, Node]]], how: str) -> None:
        """The files of batches a copy did not answer for (it died): not restored, some
        perhaps left incomplete."""
        files = [item for batch in batches for item in batch]
        for path, node in files:
            self._count(node, False, path)
        with self._lock:
            self.problems.errors.append(ngettext(
                "a process of the restore ended ({how}) before answering for {n} file, which may be "
                "missing or incomplete: restore again with --overwrite if-changed",
                "a process of the restore ended ({how}) before answering for {n} files, which may be "
                "missing or incomplete: restore again with --overwrite if-changed",
                len(files)).format(how=how, n=len(files)))

    def _problem(self, path: bytes, exc: BaseException) -> None:
        if isinstance(exc, OSError) and exc.errno in TARGET_STOPS:
            with self._lock:  # reported once, at the end, with the counts
                if self._stop is None:
                    self._stop = exc.errno
            return
        msg = exc.message if isinstance(exc, CoffreError) else (getattr(exc, "strerror", None) or str(exc))
        with self._lock:
            self.problems.errors.append(f"{os.fsdecode(path)}: {msg}")


@dataclass
class _Batch:
    """Small files restored by one task, their blobs read together (Repository.load_many)."""

    files: list[tuple[bytes, Node]] = field(default_factory=list)
    bytes: int = 0
    first_blobs: list[Location] = field(default_factory=list)  # where each file begins


@dataclass
class _Range:
    """Consecutive blobs of a large file, read and written by one task."""

    offset: int  # in the file
    ids: list[bytes]
    located: list[Location]


class _RangeFeeder:
    """With copies of the process, the large files' ranges are queued to the threads by a
    thread of their own, and the walk goes on to the small files: queued by the walk, a large
    file kept it waiting for the threads (the bounded queue of tasks) while the copies had
    nothing to do (a 189 MB database first in the walk: the copies started 0.4 s late).
    At most AHEAD files are opened and waiting here."""

    AHEAD = 32

    def __init__(self, restorer: Restorer, pool: ThreadPoolExecutor) -> None:
        self.futures: list[Future[None]] = []
        self._restorer, self._pool = restorer, pool
        self._files: queue.Queue[tuple[_LargeFile, list[_Range]] | None] = queue.Queue(self.AHEAD)
        self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="restore-ranges", daemon=True)
        self._thread.start()

    def put(self, job: _LargeFile, ranges: list[_Range]) -> None:
        self._files.put((job, ranges))

    def close(self) -> list[Future[None]]:
        """Every range queued: the tasks, to wait for (an unexpected error is raised here)."""
        self._files.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.futures

    def abort(self) -> None:
        """Interrupted: the files waiting are finished as damaged, no more range is queued."""
        self._stopped = True
        self._files.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._files.get()) is not None:
            try:
                self._restorer._queue_ranges(self._pool, self.futures, *item, stopped=lambda: self._stopped)
            except BaseException as exc:  # raised again by close, in the walk
                self._error, self._stopped = exc, True


class _LargeFile:
    """A file restored by several range tasks; the last one to end finishes it."""

    def __init__(self, path: bytes, node: Node, out: tuple[int, bytes | None], ranges: int,
                 direct: int | None) -> None:
        self.path, self.node, self.out = path, node, out
        self.direct = direct  # a second descriptor, with O_DIRECT (core/directwrite.py)
        self._left = ranges
        self.failed = False
        self._lock = threading.Lock()

    def close_direct(self) -> OSError | None:
        """Close the O_DIRECT descriptor once all ranges are written, before the file is
        finished; the error of a write the system reports only then."""
        if self.direct is not None:
            fd, self.direct = self.direct, None
            try:
                os.close(fd)
            except OSError as exc:
                return exc
        return None

    def fail(self) -> bool:
        """Mark the file damaged; True the first time (so it is reported once)."""
        with self._lock:
            first, self.failed = not self.failed, True
            return first

    def one_done(self) -> bool:
        with self._lock:
            self._left -= 1
            return self._left == 0
