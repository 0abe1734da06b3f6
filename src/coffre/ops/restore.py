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
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from coffre.core import posix
from coffre.core.errors import CoffreError, UsageError
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node
from coffre.ops.common import Problems, Reporter, load_tree, quiet
from coffre.ops.content import content_matches
from coffre.ops.target import TargetDirs
from coffre.repository.repo import Repository
from coffre.sources.files import Excluder

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
# Format 2 stores a pack's blobs in a random order: small files are batched by pack (a batch
# ends where the next file's blobs are in another pack), so a pack's blobs are read together.
SEALED_BATCH_FILES = 8192
MAX_SEALED_BATCH_BYTES = 32 * 1024 * 1024
TREE_GAP = 64 * 1024
# Errors of the target as a whole: every later write would fail the same way.
TARGET_FULL = (errno.ENOSPC, errno.EDQUOT)
TARGET_STOPS = (*TARGET_FULL, errno.EROFS)


@dataclass
class RestoreOptions:
    target: str
    includes: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    verify: bool = False
    sparse: bool = True
    workers: int = 2
    devices: bool = False


@dataclass
class RestoreStats:
    files: int = 0
    files_failed: int = 0
    dirs: int = 0
    others: int = 0
    bytes: int = 0
    verified: int = 0


def _matches_any(path: str, patterns: list[str]) -> bool:
    base = os.path.basename(path)
    for p in patterns:
        p = p.rstrip("/") or "/"
        if "/" in p:
            if fnmatch.fnmatchcase(path, p) or ("*" not in p and path.startswith(p + "/")):
                return True
        elif fnmatch.fnmatchcase(base, p):
            return True
    return False


class Restorer:
    def __init__(self, repo: Repository, opts: RestoreOptions, report: Reporter = quiet) -> None:
        self.repo = repo
        self.opts = opts
        self.report = report
        if not opts.target:  # os.path.abspath("") is the working directory
            raise UsageError("the restore target is empty", "give the folder to restore into")
        self.problems = Problems()
        self.stats = RestoreStats()
        self.excluder = Excluder(opts.excludes)
        self.root = os.fsencode(os.path.abspath(opts.target))
        remote = repo.backend.remote
        self.workers = max(opts.workers, REMOTE_WORKERS) if remote else opts.workers
        self.batch_files = REMOTE_BATCH_FILES if remote else BATCH_FILES
        self.batch_bytes = REMOTE_BATCH_BYTES if remote else BATCH_BYTES
        self.range_blobs = REMOTE_RANGE_BLOBS if remote else RANGE_BLOBS
        self.by_pack = repo.version >= 2
        if self.by_pack:
            self.batch_files = SEALED_BATCH_FILES
            self.batch_bytes = max(self.batch_bytes, min(repo.config.pack_size, MAX_SEALED_BATCH_BYTES))
        self._batch_pack: bytes | None = None
        self._dirs: list[tuple[bytes, Node]] = []
        self._links: list[tuple[bytes, Node]] = []
        self._first_link: dict[tuple[int, int], bytes] = {}
        self._lock = threading.Lock()
        self._is_root = posix.is_root()
        self._slots = threading.BoundedSemaphore(self.workers * 4)
        self._owners: dict[tuple[str, str, int, int], tuple[int, int]] = {}
        self._batch: list[tuple[bytes, Node]] = []
        self._fresh: set[bytes] = set()
        self._read_trees: dict[bytes, bytes] = {}  # subfolder listings read ahead (remote)
        self._batch_bytes = 0
        self._stop: int | None = None  # errno that made the whole target unwritable
        self._lost_links: set[bytes] = set()  # hard-linked files that could not be restored
        self._devices_skipped = 0
        self._privileges_dropped = 0
        self.dirs: TargetDirs  # opened by run

    # -- selection ------------------------------------------------------------------------------
    def _selected(self, path: str) -> bool:
        """path: '/'-prefixed path inside the snapshot."""
        if self.excluder.excluded(os.fsencode(path)):
            return False
        if not self.opts.includes:
            return True
        return _matches_any(path, self.opts.includes) or any(
            _matches_any(parent, self.opts.includes) for parent in _parents(path)
        )

    def _has_selected_below(self, tree_id: bytes, prefix: str) -> bool:
        try:
            nodes = load_tree(self.repo, tree_id)
        except CoffreError:
            return True  # unknown: go in, and the damage is reported there
        for node in nodes:
            path = prefix + "/" + os.fsdecode(node.name)
            if self.excluder.excluded(os.fsencode(path)):
                continue
            if self._selected(path):
                return True
            if node.type == "dir" and node.subtree and self._has_selected_below(node.subtree, path):
                return True
        return False

    # -- the run ---------------------------------------------------------------------------------
    def run(self, snap: Snapshot) -> Problems:
        try:
            os.makedirs(self.root, exist_ok=True)
            self.dirs = TargetDirs(self.root)
        except OSError as exc:
            raise CoffreError(f"cannot create {self.opts.target}: {exc.strerror}") from None
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="restore") as pool:
                futures: list[Future[None]] = []
                self._restore_dir(pool, futures, snap.tree, self.root, "")
                self._flush_batch(pool, futures)
                for fut in futures:
                    fut.result()
            for path, node in self._links:
                self._make_link(path, node)
            # Children before their parent (the order _dirs was filled in): a parent's mode
            # may close it to its owner, and its mtime must come after the last write into it.
            for path, node in self._dirs:
                self._set_dir_metadata(path, node)
        finally:
            self.dirs.close()
        if self._devices_skipped:
            self.problems.warnings.append(
                f"{self._devices_skipped} device nodes not restored: give --devices to make them")
        if self._privileges_dropped:
            self.problems.warnings.append(
                f"setuid/setgid bits removed from {self._privileges_dropped} files: only a restore "
                "as root, which restores owners too, keeps them")
        if self._stop is not None:
            self.problems.errors.append(self._stop_message(self._stop))
        return self.problems

    def _stop_message(self, code: int) -> str:
        counts = f"{self.stats.files} files restored, {self.stats.files_failed} not restored"
        if code in TARGET_FULL:
            return f"the restore target is full: {counts}; free space and run the restore again"
        return (f"the restore target is read-only: {counts}; make it writable (or restore "
                "elsewhere) and run the restore again")

    def _restore_dir(
        self, pool: ThreadPoolExecutor, futures: list[Future[None]], tree_id: bytes,
        dest: bytes | None, prefix: str,
    ) -> None:
        """Restore a folder's contents into dest; with dest None (its folder could not be
        made, or the target is full) only count its files as not restored."""
        try:
            nodes = load_tree(self.repo, tree_id, self._read_trees.pop(tree_id, None))
        except CoffreError as exc:  # a damaged folder listing: the rest is still restored
            where = dest if dest is not None else os.fsencode(prefix)
            self._problem(where, CoffreError(f"folder contents cannot be read ({exc.message}); skipped"))
            return
        if self.repo.backend.remote:
            self._prefetch_subtrees(nodes)
        for node in nodes:
            path = prefix + "/" + os.fsdecode(node.name)
            out = None if dest is None or self._stop is not None else dest + b"/" + node.name
            if node.type == "dir" and node.subtree is not None:
                selected = self._selected(path)
                if not selected and not self._has_selected_below(node.subtree, path):
                    continue
                if self.excluder.excluded(os.fsencode(path)):
                    continue
                if out is not None:
                    try:
                        self._make_dir(out)
                        self.stats.dirs += 1
                    except OSError as exc:
                        self._problem(out, exc)
                        out = None
                self._restore_dir(pool, futures, node.subtree, out, path)
                if out is not None:
                    self._dirs.append((out, node))
                continue
            if not self._selected(path):
                continue
            if out is None:
                if node.type == "file":
                    self._count(node, False)
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

    def _prefetch_subtrees(self, nodes: list[Node]) -> None:
        """Remote storage: read a folder's subfolder listings together (grouped by pack)
        rather than one round trip each; what cannot be read is read again, and reported,
        when its folder comes."""
        ids = [n.subtree for n in nodes if n.type == "dir" and n.subtree is not None]
        if len(ids) > 1:
            # Folder listings lie among the data: merging only close ones reads little else.
            for tree_id, data in zip(ids, self.repo.load_many(ids, gap=TREE_GAP), strict=True):
                if isinstance(data, bytes):
                    self._read_trees[tree_id] = data

    def _submit(
        self, pool: ThreadPoolExecutor, futures: list[Future[None]], path: bytes, node: Node
    ) -> None:
        if self._stop is not None:
            self._count(node, False, path)
            return
        if len(node.content) > self.range_blobs:
            self._flush_batch(pool, futures)  # files are written in the order of the walk
            self._submit_large(pool, futures, path, node)
            return
        if self.by_pack and node.content:
            loc = self.repo.index.lookup(node.content[0])
            pack = loc.pack if loc is not None else None
            if pack != self._batch_pack:
                self._flush_batch(pool, futures)
                self._batch_pack = pack
        self._batch.append((path, node))
        self._batch_bytes += node.size
        if len(self._batch) >= self.batch_files or self._batch_bytes >= self.batch_bytes:
            self._flush_batch(pool, futures)

    def _flush_batch(self, pool: ThreadPoolExecutor, futures: list[Future[None]]) -> None:
        if self._batch:
            self._queue(pool, futures, self._restore_batch, self._batch)
            self._batch, self._batch_bytes = [], 0

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
        blobs = iter(self.repo.load_many([b for _, node in batch for b in node.content]))
        for path, node in batch:
            data = [next(blobs) for _ in node.content]
            if self._stop is not None:
                self._count(node, False, path)
            else:
                self._restore_file(path, node, data)

    def _submit_large(
        self, pool: ThreadPoolExecutor, futures: list[Future[None]], path: bytes, node: Node
    ) -> None:
        """Create the file at its full size, then queue its blobs by ranges."""
        lengths = []
        for blob_id in node.content:
            loc = self.repo.index.lookup(blob_id)
            if loc is None:
                self._problem(path, CoffreError(f"blob {blob_id.hex()[:12]} is not in the index"))
                self._count(node, False, path)
                return
            lengths.append(loc.entry.raw_length)
        fd = self._create(path)
        if fd is None:
            self._count(node, False, path)
            return
        try:
            os.ftruncate(fd, sum(lengths))  # blobs of zeros are then left as holes
        except OSError as exc:
            self._problem(path, exc)
            self._finish(fd, path, node, failed=True)
            return
        starts = range(0, len(node.content), self.range_blobs)
        job = _LargeFile(path, node, fd, len(starts))
        offset = 0
        for start in starts:
            self._queue(pool, futures, self._restore_range, job, offset,
                        node.content[start : start + self.range_blobs])
            offset += sum(lengths[start : start + self.range_blobs])

    def _restore_range(self, job: _LargeFile, offset: int, ids: list[bytes]) -> None:
        try:
            if job.failed or self._stop is not None:
                job.fail()  # the file is lost anyway: neither read nor write the rest
            else:
                self._write_blobs(job.fd, self.repo.load_many(ids), offset)
        except (OSError, CoffreError) as exc:  # unreadable data: report, go on with the rest
            if job.fail():
                self._problem(job.path, exc)
        finally:
            if job.one_done():
                self._finish(job.fd, job.path, job.node, job.failed)

    def _write_blobs(self, fd: int, blobs: list[bytes | CoffreError], offset: int) -> tuple[int, int]:
        """Write blobs one after the other from `offset`, leaving blobs of zeros as holes;
        raises the error of the first unreadable one. Returns where the blobs end and where
        the last bytes actually written end."""
        data_end = offset
        for data in blobs:
            if isinstance(data, CoffreError):
                raise data
            if not self._hole(data):
                view, at = memoryview(data), offset
                while view:
                    n = os.pwrite(fd, view, at)
                    view, at = view[n:], at + n
                data_end = offset + len(data)
            offset += len(data)
        return offset, data_end

    def _hole(self, data: bytes) -> bool:
        return (
            self.opts.sparse and bool(data) and not data[0] and not data[-1]
            and len(data) <= len(ZERO) and data == ZERO[: len(data)]
        )

    def _make_dir(self, path: bytes) -> None:
        """A real directory at path. Something else there (a symlink above all, which is
        never followed) is replaced, as a file replaces what stands at its place."""
        folder, name = self.dirs.parent(path)
        try:
            os.mkdir(name, 0o700, dir_fd=folder)
            self._fresh.add(path)  # created empty by us: nothing to clear in it
        except FileExistsError:
            if stat.S_ISDIR(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
                return
            os.unlink(name, dir_fd=folder)
            os.mkdir(name, 0o700, dir_fd=folder)

    def _clear(self, path: bytes) -> None:
        """Remove an existing non-directory at path (never follows a symlink)."""
        folder, name = self.dirs.parent(path)
        try:
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise CoffreError(f"{os.fsdecode(path)} exists as a directory; not replaced by a file")
        os.unlink(name, dir_fd=folder)

    def _create(self, path: bytes) -> int | None:
        try:
            if os.path.dirname(path) not in self._fresh:
                self._clear(path)
            mode = os.O_RDWR if self.opts.verify else os.O_WRONLY
            folder, name = self.dirs.parent(path)
            return os.open(name, mode | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                           dir_fd=folder)
        except (OSError, CoffreError) as exc:
            self._problem(path, exc)
            return None

    def _restore_file(self, path: bytes, node: Node, blobs: list[bytes | CoffreError]) -> None:
        fd = self._create(path)
        if fd is None:
            self._count(node, False, path)
            return
        failed = False
        try:
            end, data_end = self._write_blobs(fd, blobs, 0)
            if data_end < end:  # ends in a hole: only ftruncate extends the file
                os.ftruncate(fd, end)
        except (OSError, CoffreError) as exc:  # unreadable data: report, go on with the rest
            self._problem(path, exc)
            failed = True
        self._finish(fd, path, node, failed)

    def _finish(self, fd: int, path: bytes, node: Node, failed: bool) -> None:
        """End a file created by the restore: if its bytes are all written, verify it (if
        asked) and set its metadata; if anything failed, remove it. Then count it."""
        try:
            created = os.fstat(fd)
            ok = not failed and self._complete(fd, path, node)
        except OSError as exc:
            self._problem(path, exc)
            created, ok = None, False
        try:
            os.close(fd)  # network file systems may report a failed write only here
        except OSError as exc:
            if ok:
                self._problem(path, exc)
            ok = False
        if not ok and created is not None:
            self._discard(path, created)
        self._count(node, ok, path)

    def _complete(self, fd: int, path: bytes, node: Node) -> bool:
        """Verify a written file (if asked) and set its metadata; False if its content is not
        right. Metadata that cannot be set (a FAT disk refuses owners) is an error, but the
        content is there: the file stays and counts as restored."""
        if self.opts.verify:
            try:
                os.fsync(fd)  # a delayed write that finds the disk full fails here
                reason = content_matches(self.repo, fd, node.content, node.size)
            except (OSError, CoffreError) as exc:
                self._problem(path, exc)
                return False
            if reason:
                with self._lock:
                    self.problems.errors.append(f"verify {os.fsdecode(path)}: {reason}")
                return False
            with self._lock:
                self.stats.verified += 1
        try:
            self._set_metadata_fd(fd, path, node)
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

    def _count(self, node: Node, ok: bool, path: bytes | None = None) -> None:
        with self._lock:
            if ok:
                self.stats.files += 1
                self.stats.bytes += node.size
            else:
                self.stats.files_failed += 1
                if path is not None and node.nlink > 1:
                    self._lost_links.add(path)

    def _restore_special(self, path: bytes, node: Node) -> None:
        if node.type in ("chardev", "blockdev") and not self.opts.devices:
            self._devices_skipped += 1  # a device node in a backup may open what it wants
            return
        try:
            self._clear(path)
            folder, name = self.dirs.parent(path)
            if node.type == "symlink":
                os.symlink(node.target, name, dir_fd=folder)
            elif node.type == "fifo":
                os.mkfifo(name, 0o600, dir_fd=folder)
            elif node.type in ("chardev", "blockdev"):
                kind = stat.S_IFCHR if node.type == "chardev" else stat.S_IFBLK
                os.mknod(name, kind | 0o600, node.rdev, dir_fd=folder)
            else:
                return  # sockets are not restored: they are recreated by their programs
            self.stats.others += 1
            self._set_metadata(path, node)
        except (OSError, CoffreError) as exc:
            self._problem(path, exc)

    def _make_link(self, path: bytes, node: Node) -> None:
        first = self._first_link[(node.device, node.inode)]
        if self._stop is not None:
            self.stats.files_failed += 1
            return
        if first in self._lost_links:
            self._problem(path, CoffreError(
                f"not restored: it is a hard link to {os.fsdecode(first)}, which was not restored"))
            self.stats.files_failed += 1
            return
        try:
            self._clear(path)
            source, source_name = self.dirs.parent(first)
            source = os.dup(source)  # the next lookup may replace the kept folder
            try:
                folder, name = self.dirs.parent(path)
                os.link(source_name, name, src_dir_fd=source, dst_dir_fd=folder, follow_symlinks=False)
            finally:
                os.close(source)
            self.stats.files += 1
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
                    f"{node.name!r}: extended attribute {name!r} not restored ({exc.strerror})"
                )

    def _set_metadata_fd(self, fd: int, path: bytes, node: Node) -> None:
        if self._is_root:
            # Most restored files already have the right owner: an fstat is much cheaper than
            # an fchown, which costs a journal transaction on ext4 even when nothing changes.
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != self._owner(node):
                os.fchown(fd, *self._owner(node))
        self._set_xattrs(fd, node, True)
        os.fchmod(fd, self._mode(node))
        os.utime(fd, ns=(node.atime_ns, node.mtime_ns))

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
        """A symlink's, fifo's or device node's, never following a symlink."""
        try:
            folder, name = self.dirs.parent(path)
            if self._is_root:
                os.chown(name, *self._owner(node), dir_fd=folder, follow_symlinks=False)
            if node.type == "symlink":
                if node.xattrs:
                    self._set_xattrs(f"/proc/self/fd/{folder}/".encode() + name, node, False)
            else:
                with self.dirs.node(path) as itself:
                    self._set_xattrs(itself.encode(), node, True)
                    os.chmod(itself, self._mode(node))
            os.utime(name, ns=(node.atime_ns, node.mtime_ns), dir_fd=folder, follow_symlinks=False)
        except OSError as exc:
            self._problem(path, exc)

    def _problem(self, path: bytes, exc: BaseException) -> None:
        if isinstance(exc, OSError) and exc.errno in TARGET_STOPS:
            with self._lock:  # reported once, at the end, with the counts
                if self._stop is None:
                    self._stop = exc.errno
            return
        msg = exc.message if isinstance(exc, CoffreError) else (getattr(exc, "strerror", None) or str(exc))
        with self._lock:
            self.problems.errors.append(f"{os.fsdecode(path)}: {msg}")


class _LargeFile:
    """A file restored by several range tasks; the last one to end finishes it."""

    def __init__(self, path: bytes, node: Node, fd: int, ranges: int) -> None:
        self.path, self.node, self.fd = path, node, fd
        self._left = ranges
        self.failed = False
        self._lock = threading.Lock()

    def fail(self) -> bool:
        """Mark the file damaged; True the first time (so it is reported once)."""
        with self._lock:
            first, self.failed = not self.failed, True
            return first

    def one_done(self) -> bool:
        with self._lock:
            self._left -= 1
            return self._left == 0


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]
