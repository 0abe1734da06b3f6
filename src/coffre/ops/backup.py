"""Backup: walk the sources, chunk, deduplicate, compress, encrypt, pack; commit a snapshot.

Pipeline: the calling thread walks the tree, reads and chunks large files (pyfastcdc releases
the GIL); a pool of workers hashes, compresses, encrypts and packs each chunk, and reads the
files under BATCHED_FILE_MAX itself, in batches; once a backup has met many small new files,
helper processes read, name and compress those (ops/smallreads.py) and the workers only seal
and pack them. A bounded semaphore caps the chunks in flight, so memory stays flat whatever the
data size. A folder's
listing is stored once its files are, but the walk does not wait for that: it goes on to the
next folders (WALK_AHEAD at most), so the workers are not left idle while it lists and plans
one, nor the walk while they read the last files of the previous one.

A changed file is paired with its version in the parent snapshot: each new chunk is stored
as a zstd delta against the old chunk it descends from when that is much smaller.

Progress: the files and bytes done are counted as the walk goes (bytes as they are read, an
unchanged file at once), the totals by a scanner beside it (sources/scan.py: a child process
at a lower priority). The scanner runs whenever a source is a folder, watched or not: walking
the same folders in the same order just ahead of the backup, it has their inodes read from
the disk while the backup works on the previous ones.

Databases captured by their engine are not also copied raw: the files and folders that hold
them (an SQLite file and its -wal, -shm, -journal; a server's data folder when its engine
names it) are left out of the files, and recorded among the snapshot's exclusions, unless
`also_raw`.

Commit order: packs -> index -> (rescue of blobs a concurrent prune took away) -> snapshot.
"""

from __future__ import annotations

import collections
import errno
import getpass
import os
import socket
import stat
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, TypeVar

from coffre import __version__
from coffre.chunker import Chunker, is_page_structured
from coffre.chunker.align import Aligner
from coffre.core import posix
from coffre.core.errors import CoffreError, ObjectNotFound, StorageError
from coffre.core.i18n import _, ngettext
from coffre.core.progress import NULL_PROGRESS, Progress
from coffre.crypto import aead
from coffre.format.pack import MAX_TREE_RAW, BlobEntry
from coffre.format.snapshot import DATABASES_DIR, DatabaseRecord, Snapshot
from coffre.format.tree import Node, encode_tree
from coffre.ops import smallreads
from coffre.ops.common import Problems, Reporter, quiet, rescue_if_pruned
from coffre.ops.previous import PreviousVersions, find_dump_sources, find_parent
from coffre.ops.smallreads import Helpers
from coffre.repository.ahead import Announcer, BasesAhead
from coffre.repository.basecache import BaseCache
from coffre.repository.cache import RepoCache
from coffre.repository.index import MasterIndex
from coffre.repository.locks import LeaseExpired, Lock, live_locks
from coffre.repository.packer import Packer
from coffre.repository.repo import Repository
from coffre.sources.changes import changed_while_read
from coffre.sources.databases.base import Database
from coffre.sources.databases.command import stream_command
from coffre.sources.files import Excluder, node_from_stat
from coffre.sources.patterns import escape
from coffre.sources.prefetch import OpenAhead, Prefetcher, ReadAhead, open_to_read
from coffre.sources.scan import Scanner, start_scanner
from coffre.storage.base import Handle

INDEX_EVERY_PACKS = 16
# Remote storage: an interrupted first backup over a slow link is resumed from its last
# index, so the index follows the packs more closely (at most ~64 MiB of work is redone).
REMOTE_INDEX_EVERY_PACKS = 4
# Files this large are likely rewritten in place (archives of a day, dumps, mailboxes): on a
# remote repository their chunks are kept locally as future delta bases (BaseCache), as are
# those of database files, of files that changed since the last backup, and of dumps.
VOLATILE_SIZE = 32 * 1024 * 1024
# So are dumps and database backups, rewritten each night, whatever their size: without their
# chunks kept, the first backup after they change downloads their previous version.
VOLATILE_SUFFIXES = (b".sql", b".dump", b".backup", b".bak", b".dmp", b".fbk", b".gbk")
# Files modified this close to the start of the backup are not trusted to the files cache:
# a write in the same timestamp tick (2 s on FAT) could go unnoticed next time. Writes
# always set mtime to "now", so checking mtime is enough; ctime is still compared on lookup.
RACY_NS = 2_000_000_000
# A tree pack copy no index lists is deleted once this old: younger, it may be a pack a backup
# running beside this one wrote and has not indexed yet.
UNINDEXED_COPY_AGE_NS = 24 * 3600 * 10**9


@dataclass
class BackupOptions:
    paths: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    host: str = ""
    excludes: list[str] = field(default_factory=list)
    one_file_system: bool = False
    force_read: bool = False
    stdin_name: str = ""
    stdin: BinaryIO | None = None
    stdin_command: list[str] = field(default_factory=list)
    databases: list[Database] = field(default_factory=list)
    skip_paths: list[str] = field(default_factory=list)
    workers: int = 0
    also_raw: bool = False  # keep the raw files of databases captured by their engine


def skipped_paths(paths: list[str]) -> set[bytes]:
    """BackupOptions.skip_paths as the walk (and its scanner) compares them."""
    return {os.fsencode(os.path.abspath(p)) for p in paths}


def raw_files_left_out(databases: list[Database], sources: list[str], also_raw: bool,
                       ) -> list[tuple[Database, list[str]]]:
    """Each captured database with its own files that lie under the sources (absolute paths):
    what the files backup leaves out, nothing with `also_raw`. Known before the capture for
    SQLite; for a server, once its dump has said where its data folder is. The scanner started
    before the repository opens and the walk both skip these, so the walk can take it over."""
    if also_raw:
        return []
    found = []
    for db in databases:
        inside = [p for p in map(os.path.abspath, db.stored_at())
                  if any(p == s or p.startswith(s.rstrip("/") + "/") for s in sources)]
        if inside:
            found.append((db, inside))
    return found


@dataclass
class LeftOut:
    """A database's own files or folder, left out of the files (its dump is the copy)."""

    database: str  # as Database.describe() names it
    paths: list[str]  # those that existed when the backup started


@dataclass
class BackupResult:
    snapshot: Snapshot
    problems: Problems
    left_out: list[LeftOut] = field(default_factory=list)


@dataclass
class _Stats:
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs: int = 0
    others: int = 0
    bytes_total: int = 0
    bytes_read: int = 0  # read from files, dumps and streams (unchanged files are not read)
    errors: int = 0
    databases: int = 0


Content = list["Future[bytes] | bytes"]
T = TypeVar("T")
# Small files go to the workers in batches of up to this many files or bytes.
BATCH_FILES = 64
BATCH_BYTES = 2 * 1024 * 1024
# Files below this size are read (and cut into chunks) by a worker as part of a batch; larger
# ones by the walk, which hands their chunks to the workers. Documents and scans of a few
# hundred KiB then spread over the workers instead of waiting for the one thread that walks:
# initial backup of a /usr/share copy (1,622 of its files are 64 KiB to a few MiB) 3-11 %
# faster than with only the files under the smallest chunk size batched.
BATCHED_FILE_MAX = 4 * 1024 * 1024
# Open files the backup needs besides the batches' (packs, caches, the lock, databases, the
# walk's folders, the connections of a remote repository).
OPEN_RESERVE = 128


@dataclass
class _Planned:
    """A directory entry after lstat and the files-cache lookup."""

    path: bytes
    st: os.stat_result
    node: Node
    known: bool = False  # in the files cache (so a changed file, not a new one)
    cached: list[bytes] | None = None  # content ids, if the file is unchanged since
    previous: list[tuple[bytes, int]] | None = None  # a file read: its parent's (blob, length)

    @property
    def read(self) -> bool:
        return self.node.type == "file" and self.cached is None


@dataclass
class _Read:
    """What reading one file gave."""

    content: Content = field(default_factory=list)
    size: int = 0
    changed: bool = False  # modified while it was read
    error: OSError | None = None
    streamed: bool = False  # its bytes went to the progress as they were read


@dataclass
class _Batched:
    """A small file read by a worker as part of a batch: where its _Read will be."""

    item: _Planned
    future: Future[list[_Read]]
    index: int


# A file whose content is still being stored: its node, content, path, stat, and whether
# the files cache must learn it (not for files it already knows unchanged, nor for stdin).
Pending = tuple[Node, "Content | _Batched", bytes, os.stat_result, bool]


@dataclass(frozen=True)
class _DeltaBase:
    """The base a changed chunk's delta is made against: its id, its content, its index entry."""

    id: bytes
    content: bytes
    entry: BlobEntry | None

    def plain_estimate(self, raw_length: int) -> int | None:
        """A chunk's plain compression, guessed from its base's stored size (a plain blob of the
        same file, scaled to the chunk's length; a little over, as it counts the encryption's
        overhead and padding). On day 366 of a steady year of the small pharmacy set, ~300
        plain compressions spared, ~0.2 CPU-second (bench/README.md, "A year of use")."""
        if self.entry is None or self.entry.raw_length <= 0:
            return None
        return self.entry.length * raw_length // self.entry.raw_length


@dataclass
class _Walked:
    """A folder the walk has gone through, whose listing waits for the content of its files:
    stored once they are, into `node.subtree` (its node in the parent's listing)."""

    nodes: list[Node]
    pending: list[Pending]
    node: Node | None = None


# Folders walked whose files may still be read by the workers: the walk goes on to the next
# folders meanwhile (the workers never wait for it to list and plan one), and a folder's
# listing is stored once WALK_AHEAD more have been walked (its subfolders always before it).
WALK_AHEAD = 64


class Backup:
    def __init__(
        self,
        repo: Repository,
        lock: Lock,
        options: BackupOptions,
        cache: RepoCache | None = None,
        report: Reporter = quiet,
        bases: BaseCache | None = None,
        damaged: set[tuple[bytes, bytes]] | None = None,
        progress: Progress = NULL_PROGRESS,
        scanner: Scanner | None = None,
    ) -> None:
        """`scanner`: one the caller started before the repository was opened, which warms the
        disk's metadata meanwhile; the walk uses it if it scans what the walk goes through,
        and stops it either way."""
        self.repo = repo
        self.progress = progress
        self.early_scanner = scanner
        self.damaged = damaged or set()  # (pack, blob) pairs check found damaged
        self.bases = bases  # remote repositories: tomorrow's delta bases, kept locally
        self.lock = lock
        self.opts = options
        self.cache = cache
        self.report = report
        self.packer = Packer(repo)
        self.announcer = Announcer(repo)
        self.chunker = repo.chunker()
        self.excluder = Excluder(options.excludes)
        self.skip = skipped_paths(options.skip_paths)
        self.problems = Problems()
        self.stats = _Stats()
        self.used: set[bytes] = set()
        self._used_lock = threading.Lock()
        workers = options.workers or max(2, os.cpu_count() or 2)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="pack")
        self.slots = threading.BoundedSemaphore(workers * 3)
        self.workers = workers
        # Small new files go to helper processes once there are enough of them (ops/smallreads.py).
        self.helpers: Helpers | None = None
        self._small_new = 0
        self._files_walked = 0  # files the walk has met, against the scanner's count
        self._scanner: Scanner | None = None
        # Small files opened ahead by each worker reading a batch, within the open files limit
        # (batches in flight: up to 3 a worker, one being read).
        limit = posix.open_files_limit(OPEN_RESERVE + workers * BATCH_FILES)
        self.open_ahead = max(1, min(BATCH_FILES, (limit - OPEN_RESERVE) // workers))
        self.start_ns = repo.clock.now_ns()
        self._root_dev: int | None = None
        self.previous = PreviousVersions(repo, None)
        self.left_out: list[LeftOut] = []
        self._unchanged = [0, 0]  # files and bytes of unchanged files, not yet in the progress
        self._compare: dict[int, list[bytes]] = {}  # id(node) -> the parent's content of a file read
        self._walked: collections.deque[_Walked] = collections.deque()  # oldest first
        self.auto_excludes: list[str] = []  # patterns recorded for what was left out

    # -- storing -------------------------------------------------------------------------------
    def _store_chunk(self, data: bytes, ancestor: bytes | None, keep: bool = False,
                     fetch: bool = False, ahead: BasesAhead | None = None) -> bytes:
        """Store a chunk (as a delta against its ancestor's base when that pays). `keep`: the
        chunk may change in place by the next backup, so it is kept as a future base. `fetch`:
        a base not kept locally is worth downloading (a database, a dump, a large file).
        `ahead`: told whether the base was needed."""
        blob_id = self.repo.crypter.blob_id(data)
        new = self.packer.claim(blob_id)
        if ahead is not None and ancestor is not None:
            ahead.outcome(new)
        if new:
            base = self._base(ancestor, fetch) if ancestor is not None else None
            if base is None:
                stored_base = self.packer.add(aead.KIND_DATA, blob_id, data)
            else:
                # drifted: the ancestor was a delta itself, the chunk has been drifting from its base.
                stored_base = self.packer.add(aead.KIND_DATA, blob_id, data, base=(base.id, base.content),
                                              drifted=base.id != ancestor,
                                              plain_estimate=base.plain_estimate(len(data)))
            if stored_base is not None:
                self._use([stored_base])
            elif keep and self.bases is not None:
                self.bases.put(blob_id, data)
        return blob_id

    def _base(self, ancestor: bytes, fetch: bool) -> _DeltaBase | None:
        """The base for a delta against `ancestor`: the ancestor itself, or its own base if it
        is a delta (depth one). Remote repositories: a base not kept locally is downloaded only
        if `fetch`; otherwise None (the chunk is stored whole, as for a log appended to or a
        settings file changed for the first time: the download, a window of its pack, would
        cost more than the delta saves)."""
        loc = self.repo.index.lookup(ancestor)
        if loc is None:
            return None
        base_id = loc.entry.base or ancestor
        base_loc = loc if base_id == ancestor else self.repo.index.lookup(base_id)
        entry = base_loc.entry if base_loc is not None else None
        if self.bases is not None:
            kept = self.bases.get(base_id, entry.raw_length) if entry is not None else None
            if kept is not None:
                return _DeltaBase(base_id, kept, entry)
            if not fetch:
                return None
        try:
            content = self.repo.load_base(base_id)  # a base missing from the index raises here
            if self.bases is not None:
                self.bases.put(base_id, content)
            return _DeltaBase(base_id, content, entry)
        except CoffreError as exc:  # the delta is an optimisation: store the chunk whole
            self.report(_("note: previous version not usable as a delta base ({reason})").format(
                reason=exc.message))
            return None

    def _submit(self, data: bytes, ancestor: bytes | None = None, keep: bool = False,
                fetch: bool = False, ahead: BasesAhead | None = None) -> Future[bytes]:
        return self._submit_task(self._store_chunk, data, ancestor, keep, fetch, ahead)

    def _submit_task(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run fn in a worker; blocks while too many tasks are in flight (flat memory)."""
        self.slots.acquire()
        try:
            fut = self.pool.submit(fn, *args)
        except BaseException:
            self.slots.release()
            raise
        fut.add_done_callback(lambda _: self.slots.release())
        return fut

    def _store_tree(self, nodes: list[Node]) -> bytes:
        data = encode_tree(nodes)
        if len(data) > MAX_TREE_RAW:
            raise CoffreError(
                _("a folder has too many entries ({count}) to be stored in one snapshot tree").format(
                    count=len(nodes)),
                _("split the folder, or exclude it"),
            )
        tree_id = self.repo.crypter.blob_id(data)
        if self.packer.claim(tree_id):
            self.packer.add(aead.KIND_TREE, tree_id, data)
        self._use([tree_id])
        self._publish_index_if_due()
        return tree_id

    def _use(self, ids: list[bytes]) -> None:
        with self._used_lock:
            self.used.update(ids)

    def _publish_index_if_due(self, force: bool = False) -> None:
        every = REMOTE_INDEX_EVERY_PACKS if self.repo.backend.remote else INDEX_EVERY_PACKS
        if force or len(self.packer.written) >= every:
            written = self.packer.take_written()
            if written:
                self.repo.save_index(written)
                for pid, entries in written.items():
                    self.repo.index.add_pack(pid, entries)
                    self.packer.release_claims([e.id for e in entries])

    def _read_stream(
        self, stream: BinaryIO, previous: list[tuple[bytes, int]] | None = None, fixed: bool = False,
        inline: bool = False, volatile: bool = True,
    ) -> Content:
        """Chunk and store a stream. `volatile`: it may be rewritten by the next backup (a
        database, a dump, a large file), so its chunks are kept as future delta bases."""
        aligner = Aligner([n for _, n in previous]) if previous else None
        chunks = Chunker.blocks(stream) if fixed else self.chunker.chunks(stream)
        # The bases of the next deltas announced to a local disk (remote: kept locally, BaseCache).
        ahead = (BasesAhead(self.announcer, [blob for blob, _ in previous])
                 if previous and (fixed or volatile) and not inline and not self.repo.backend.remote
                 else None)
        content: Content = []
        offset = 0
        for chunk in chunks:
            ancestor = None
            if aligner is not None and previous is not None:
                j = aligner.match(offset, len(chunk))
                ancestor = previous[j][0] if j is not None else None
                if ahead is not None and j is not None:
                    ahead.announce(j)
            fetch = volatile or fixed
            keep = fetch or previous is not None
            content.append(self._store_chunk(chunk, ancestor, keep, fetch) if inline
                           else self._submit(chunk, ancestor, keep, fetch, ahead))
            offset += len(chunk)
            if not inline and len(content) % 64 == 0:
                self._publish_index_if_due()  # a large file's packs are resumable too
        return content

    # -- files ----------------------------------------------------------------------------------
    def _file(self, item: _Planned) -> Content | None:
        """Content of a file read by this thread (its chunks go to the workers)."""
        if item.cached is not None:
            self.stats.files_unmodified += 1
            self._unchanged[0] += 1
            self._unchanged[1] += item.st.st_size
            return list(item.cached)
        item.previous = self.previous.content(item.path)
        return self._outcome(item, self._read_file(item, inline=False))

    def _outcome(self, item: _Planned, read: _Read) -> Content | None:
        """Account for a file read (here or by a worker): its content, or None if skipped."""
        if self.progress is not NULL_PROGRESS:
            self.progress.advance(1, 0 if read.streamed else read.size, current=os.fsdecode(item.path))
        if read.error is not None:
            self._error(item.path, read.error)
            return None
        if read.changed:
            self.problems.warnings.append(
                _("{path}: changed while it was read; the copy may be inconsistent").format(
                    path=os.fsdecode(item.path))
            )
        item.node.size = read.size  # what was stored, even if the file grew meanwhile
        self.stats.bytes_read += read.size
        if item.previous is not None:  # changed or not: told once its content is known (_resolve)
            self._compare[id(item.node)] = [blob for blob, _length in item.previous]
        elif item.known:
            self.stats.files_changed += 1
        else:
            self.stats.files_new += 1
        return read.content

    def _read_file(self, item: _Planned, inline: bool, opened: int | OSError | None = None) -> _Read:
        """Read and store one file. `inline`: store the chunks in this thread (a worker reading
        a batch of small files) instead of handing them to the workers. `opened`: the file
        already opened (sources/prefetch.OpenAhead), or why it could not be."""
        path, previous = item.path, item.previous
        try:
            fd = open_to_read(path) if opened is None else opened
        except OSError as exc:
            return _Read(error=exc)
        if isinstance(fd, OSError):
            return _Read(error=fd)
        try:
            # Checked before anything else: a folder opens read-only too.
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                return _Read(error=OSError(errno.EINVAL, _("replaced by something that is not a file "
                                                           "during the backup")))
            os.set_blocking(fd, True)
            min_size = self.chunker.params.min_size
            if before.st_size < min_size:
                # Small: read here, two system calls, the second to see the end of the file.
                head = os.read(fd, min_size)
                if len(head) < min_size and not os.read(fd, 1):
                    ancestor = previous[0][0] if previous and len(previous) == 1 else None
                    if not head:
                        content: Content = []
                    elif inline:
                        content = [self._store_chunk(head, ancestor)]
                    else:
                        content = [self._submit(head, ancestor)]
                    after = os.fstat(fd)
                    return _Read(content=content, size=len(head), changed=changed_while_read(before, after))
                os.lseek(fd, 0, os.SEEK_SET)  # grew past the small-file size while being read
            if self.progress is not NULL_PROGRESS:
                self.progress.advance(current=os.fsdecode(path))
            with os.fdopen(fd, "rb", buffering=0, closefd=False) as f:
                reader = _CountingReader(ReadAhead(f), self.progress)  # type: ignore[arg-type]
                fixed = is_page_structured(path, os.pread(fd, 16, 0))
                volatile = before.st_size >= VOLATILE_SIZE or path.lower().endswith(VOLATILE_SUFFIXES)
                content = self._read_stream(reader, previous, fixed, inline, volatile)  # type: ignore[arg-type]
            after = os.fstat(fd)
            return _Read(content=content, size=reader.count, changed=changed_while_read(before, after),
                         streamed=True)
        except OSError as exc:
            return _Read(error=exc)
        finally:
            os.close(fd)

    def _read_batch(self, batch: list[_Planned]) -> list[_Read]:
        """Worker: read and store a batch of small files (their disk reads then overlap with
        the walk, and one task replaces dozens of tiny ones)."""
        files = OpenAhead([(item.path, item.st.st_size) for item in batch], self.open_ahead)
        try:
            return [self._read_file(item, True, files.take(i)) for i, item in enumerate(batch)]
        finally:
            files.close()

    def _helped(self, batch: list[_Planned]) -> bool:
        """Whether the helper processes read this batch: only new files under the chunker's
        minimum (one chunk, no delta), once enough of them were met or are ahead
        (smallreads.worth_starting)."""
        min_size = self.chunker.params.min_size
        if not all(item.previous is None and item.st.st_size < min_size for item in batch):
            return False
        self._small_new += len(batch)
        if self.helpers is None and smallreads.worth_starting(
                self._small_new, self._files_walked,
                self._scanner.files_counted if self._scanner is not None else 0):
            self.helpers = Helpers(self.workers, self.repo.crypter.keys.id_key,
                                   self.repo.config.compression_level, min_size, self.open_ahead)
        return self.helpers is not None and self.helpers.alive

    def _read_batch_helped(self, batch: list[_Planned]) -> list[_Read]:
        """Worker: a batch of small new files read, named and compressed by a helper process;
        here each new one is sealed and packed. What the helper hands back, or a batch no
        helper could serve, is read here as any other."""
        assert self.helpers is not None
        answers = self.helpers.read([(item.path, item.st.st_size) for item in batch])
        if answers is None:
            return self._read_batch(batch)
        out = []
        for item, answer in zip(batch, answers, strict=True):
            if answer is None:
                out.append(self._read_file(item, True))
                continue
            blob, codec, payload, size, changed = answer
            if size and self.packer.claim(blob):
                self.packer.add_body(aead.KIND_DATA, blob, bytes([codec]) + payload, size)
            out.append(_Read(content=[blob] if size else [], size=size, changed=changed))
        return out

    def _error(self, path: bytes, exc: OSError) -> None:
        self.stats.errors += 1
        self.progress.error()
        reason = exc.strerror or str(exc)
        self.problems.errors.append(
            _("{path}: {reason} (skipped)").format(path=os.fsdecode(path), reason=reason))
        self.report(_("error: {path}: {reason}").format(path=os.fsdecode(path), reason=reason))

    def _plan(self, name: bytes, path: bytes) -> _Planned | None:
        """Metadata of one directory entry, and for a file whether it must be read."""
        if path in self.skip or self.excluder.excluded(path):
            return None
        try:
            st = os.lstat(path)
            node = node_from_stat(name, path, st)
        except OSError as exc:
            self._error(path, exc)
            return None
        return _Planned(path, st, node)

    def _consult_cache(self, items: list[_Planned]) -> None:
        """Mark the files the files cache knows unchanged (their content is not read)."""
        files = [item for item in items if item.node.type == "file"]
        if self.cache is None or not files:
            return
        for item, (known, cached) in zip(
            files, self.cache.lookup_many([(i.path, i.st) for i in files]), strict=True
        ):
            item.known = known
            if cached is not None and not self.opts.force_read and all(i in self.repo.index for i in cached):
                item.cached = cached

    def _entry(self, item: _Planned, pending: list[Pending]) -> Node | None:
        """The node for one directory entry; file content is left pending in `pending`."""
        node, path, st = item.node, item.path, item.st
        if node.type == "file":
            self.stats.bytes_total += st.st_size
            content = self._file(item)
            if content is None:
                return None
            pending.append((node, content, path, st, item.cached is None))
        elif node.type == "dir":
            if self.opts.one_file_system and self._root_dev is not None and st.st_dev != self._root_dev:
                node.subtree = self._store_tree([])
            else:
                walked = self._dir(path)
                if walked is None:
                    return None
                walked.node = node
                self._walked.append(walked)
                while len(self._walked) > WALK_AHEAD:
                    self._store_walked(self._walked.popleft())
        else:
            self.stats.others += 1
        return node

    def _store_walked(self, walked: _Walked) -> None:
        assert walked.node is not None
        walked.node.subtree = self._store_listing(walked.nodes, walked.pending)

    def _store_listing(self, nodes: list[Node], pending: list[Pending]) -> bytes:
        """Wait for the content of a folder's files, then store its listing (without the
        files that could not be read)."""
        skipped = self._resolve(pending)
        return self._store_tree([n for n in nodes if id(n) not in skipped])

    def _store_all_walked(self) -> None:
        while self._walked:
            self._store_walked(self._walked.popleft())

    def _dir(self, path: bytes) -> _Walked | None:
        """Walk a folder (its subfolders first, each queued in self._walked); its own files are
        handed to the workers, and the folder is returned to be stored once they are read."""
        try:
            with os.scandir(path) as it:
                names = sorted(e.name for e in it)
        except OSError as exc:
            self._error(path, exc)
            return None
        self.stats.dirs += 1
        prefix = path.rstrip(b"/") + b"/"
        planned = [item for item in (self._plan(name, prefix + name) for name in names) if item]
        self._files_walked += sum(1 for item in planned if item.node.type == "file")
        self._consult_cache(planned)
        in_batches = [item for item in planned if item.read and item.st.st_size < BATCHED_FILE_MAX]
        batched = self._batch(in_batches)
        prefetch = Prefetcher(
            [(item.path, item.st.st_size) for item in planned if item.read and item.path not in batched]
        )
        nodes: list[Node] = []
        pending: list[Pending] = []
        reads = 0
        for item in planned:
            node: Node | None
            if item.path in batched:
                self.stats.bytes_total += item.st.st_size
                node = item.node
                pending.append((node, batched[item.path], item.path, item.st, True))
            else:
                if item.read:
                    prefetch.reading(reads)
                    reads += 1
                node = self._entry(item, pending)
            if node is not None:
                nodes.append(node)
        self._flush_unchanged()
        return _Walked(nodes, pending)

    def _flush_unchanged(self) -> None:
        """Unchanged files go to the progress a folder at a time (one call, not one a file)."""
        if self._unchanged[0]:
            self.progress.advance(self._unchanged[0], self._unchanged[1])
            self._unchanged = [0, 0]

    def _batch(self, items: list[_Planned]) -> dict[bytes, _Batched]:
        """Hand small files to the workers, a batch at a time; path -> where its result lands."""
        out: dict[bytes, _Batched] = {}
        batch: list[_Planned] = []
        size = 0
        for n, item in enumerate(items):
            item.previous = self.previous.content(item.path)
            batch.append(item)
            size += item.st.st_size
            if len(batch) >= BATCH_FILES or size >= BATCH_BYTES or n == len(items) - 1:
                fut = self._submit_task(self._read_batch_helped if self._helped(batch) else self._read_batch,
                                        batch)
                for i, planned in enumerate(batch):
                    out[planned.path] = _Batched(planned, fut, i)
                batch, size = [], 0
        return out

    def _resolve(self, pending: list[Pending]) -> set[int]:
        """Wait for the content of these files; the ids of nodes whose file was skipped."""
        skipped: set[int] = set()
        for node, content, path, st, learn in pending:
            if isinstance(content, _Batched):
                got = self._outcome(content.item, content.future.result()[content.index])
                if got is None:
                    skipped.add(id(node))
                    continue
                content = got
            node.content = [c.result() if isinstance(c, Future) else c for c in content]
            self._use(node.content)
            previous = self._compare.pop(id(node), None)
            if previous is not None:
                # Read again (the files cache could not vouch for it) yet the same as in the
                # parent: unchanged, whatever its times say.
                if previous == node.content:
                    self.stats.files_unmodified += 1
                else:
                    self.stats.files_changed += 1
            # Deltas found in the repository need their bases kept as well.
            bases = [b for b in map(self.repo.index.base_of, node.content) if b is not None]
            if bases:
                self._use(bases)
            if self.cache is not None and learn:
                if st.st_mtime_ns < self.start_ns - RACY_NS:
                    self.cache.record(path, st, node.content)
                else:
                    self.cache.forget(path)
        return skipped

    # -- roots -----------------------------------------------------------------------------------
    def _path_tree(self, paths: list[bytes], extra: list[Node]) -> bytes:
        """Mirror the absolute paths of the sources, as restic does: /srv/a -> srv/a; `extra`
        nodes go beside them at the top (the databases' folder)."""
        structure: dict[bytes, object] = {}
        for p in paths:
            parts = [x for x in p.split(b"/") if x]
            cur = structure
            for part in parts[:-1]:
                nxt = cur.setdefault(part, {})
                if nxt is None:
                    break
                cur = nxt  # type: ignore[assignment]
            else:
                cur[parts[-1]] = None  # a source: everything below it
        return self._build(b"", structure, extra)

    def _build(self, prefix: bytes, structure: dict[bytes, object], extra: list[Node] | None = None) -> bytes:
        nodes: list[Node] = list(extra or [])
        pending: list[Pending] = []
        for name in sorted(structure):
            path = prefix + b"/" + name
            sub = structure[name]
            if sub is None:
                st = os.lstat(path)
                self._root_dev = st.st_dev
                item = self._plan(name, path)
                if item is not None:
                    self._consult_cache([item])
                node = self._entry(item, pending) if item is not None else None
                if node is not None:
                    nodes.append(node)
            else:
                # A folder above a source: follow a symlink here (/srv -> /data/srv), or the
                # source would hang below a symlink node and be unreachable.
                node = node_from_stat(name, path, os.stat(path))
                node.subtree = self._build(path, sub)  # type: ignore[arg-type]
                nodes.append(node)
        self._store_all_walked()  # the sources' folders, their listings stored
        self._flush_unchanged()
        return self._store_listing(nodes, pending)

    def _stdin_tree(self) -> bytes:
        node = self._virtual_node(os.fsencode(self.opts.stdin_name), "file", 0o600)
        previous = self.previous.content(b"/" + node.name)
        self.progress.advance(current=self.opts.stdin_name)
        if self.opts.stdin_command:
            content, size = self._from_command(self.opts.stdin_command, previous)
        else:
            counter = _CountingReader(self.opts.stdin, self.progress)  # type: ignore[arg-type]
            content = self._read_stream(counter, previous)  # type: ignore[arg-type]
            size = counter.count
        self.progress.advance(1)
        node.size = size
        self.stats.files_new += 1
        self.stats.bytes_total += size
        self.stats.bytes_read += size
        self._resolve([(node, content, b"", os.stat(os.devnull), False)])
        return self._store_tree([node])

    def _from_command(
        self, argv: list[str], previous: list[tuple[bytes, int]] | None
    ) -> tuple[Content, int]:
        def consume(stream: BinaryIO) -> tuple[Content, int]:
            counter = _CountingReader(stream, self.progress)
            return self._read_stream(counter, previous), counter.count  # type: ignore[arg-type]

        return stream_command(argv, consume, _("the command {name!r}").format(name=argv[0]))

    # -- databases -------------------------------------------------------------------------------
    def _databases_dir(self, files: list[str]) -> tuple[Node, list[DatabaseRecord]]:
        """Dump each database into the snapshot's databases folder; their records."""
        nodes: list[Node] = []
        records: list[DatabaseRecord] = []
        pending: list[Pending] = []
        for db, file in zip(self.opts.databases, files, strict=True):
            node, content, record = self._database(db, file)
            nodes.append(node)
            records.append(record)
            pending.append((node, content, b"", os.stat(os.devnull), False))
        self._resolve(pending)
        folder = self._virtual_node(DATABASES_DIR.encode(), "dir", 0o700)
        folder.subtree = self._store_tree(nodes)
        return folder, records

    def _virtual_node(self, name: bytes, kind: str, mode: int) -> Node:
        """A node for what has no file of its own (a stream, a dump): ours, made now."""
        now = self.repo.clock.now_ns()
        return Node(name=name, type=kind, mode=mode, uid=os.getuid(), gid=os.getgid(),
                    mtime_ns=now, atime_ns=now, ctime_ns=now)

    def _database(self, db: Database, file: str) -> tuple[Node, Content, DatabaseRecord]:
        node = self._virtual_node(file.encode(), "file", 0o600)
        previous = self.previous.content(f"/{DATABASES_DIR}/{file}".encode())
        # A page-image stream arrives without its first page, which comes last (Captured.head).
        prev_head = previous[0] if db.fixed and previous else None
        prev_body = previous[1:] if db.fixed and previous else previous

        def consume(stream: BinaryIO) -> tuple[Content, int]:
            counter = _CountingReader(stream, self.progress)
            content = self._read_stream(counter, prev_body or None, fixed=db.fixed)  # type: ignore[arg-type]
            return content, counter.count

        self.report(_("dumping the {database}").format(database=db.describe()))
        self.progress.advance(current=db.describe())
        (content, size), captured = db.dump(consume)
        if captured.head:
            ancestor = prev_head[0] if prev_head and prev_head[1] == len(captured.head) else None
            content.insert(0, self._submit(captured.head, ancestor, keep=True, fetch=True))
            size += len(captured.head)
        node.size = size
        self.problems.warnings += captured.warnings
        self.stats.databases += 1
        self.stats.bytes_total += size
        self.stats.bytes_read += size
        self.progress.advance(1)
        record = DatabaseRecord(
            engine=db.engine, name=db.recorded_name(), file=file, format=captured.format, size=captured.size,
            tables=captured.tables, server=captured.server, extra=captured.extra,
        )
        return node, content, record

    # -- the whole run --------------------------------------------------------------------------
    def _forget_unreadable(self) -> None:
        """What the index lists but cannot be read (a damaged repository) is treated as
        absent, so this backup stores it again from the live files instead of pointing at
        it ("heal"): packs storage lacks, blobs `check` found damaged (the damage register),
        and deltas whose base was among them. A delta whose base the index already lacks is
        dropped without a word: prune leaves them, a delta no snapshot uses in a pack it
        keeps whose unused base it deleted; nothing was lost, and saying "cannot be read"
        at every backup would be a false alarm."""
        self.repo.index.drop_unreadable()
        stored = {name for name, _ in self.repo.iter_pack_names()}
        gone = {pid for pid in self.repo.index.pack_ids() if pid.hex() not in stored and self._absent(pid)}
        if gone:
            self.repo.index.drop_packs(gone)
            self.problems.warnings.append(
                ngettext("{count} pack listed in the index is missing; its data is stored again "
                         "where this backup still finds it (run 'coffre check')",
                         "{count} packs listed in the index are missing; their data is stored again "
                         "where this backup still finds it (run 'coffre check')",
                         len(gone)).format(count=len(gone))
            )
        damaged = {(p, b) for p, b in self.damaged if p not in gone}
        lost = self.repo.index.drop_unreadable(damaged) if gone or damaged else 0
        if lost:
            self.problems.warnings.append(
                ngettext("{count} stored piece cannot be read (damaged, as 'coffre check' found, or a "
                         "delta whose base is lost); it is stored again where this backup still finds "
                         "its data",
                         "{count} stored pieces cannot be read (damaged, as 'coffre check' found, or a "
                         "delta whose base is lost); they are stored again where this backup still finds "
                         "their data", lost).format(count=lost)
            )

    def _absent(self, pack: bytes) -> bool:
        """A pack the listing lacks, confirmed absent (a listing may miss a page of names)."""
        try:
            self.repo.backend.stat(Handle("data", pack.hex()))
        except ObjectNotFound:
            return True
        except StorageError:
            return False
        return False

    def run(self) -> BackupResult:
        try:
            self._forget_unreadable()
            host = self.opts.host or socket.gethostname()
            db_files = database_files(self.opts.databases)
            if self.opts.stdin_name:
                files = [self.opts.stdin_name]
            else:
                files = _check_sources(self.opts.paths, allow_none=bool(db_files))
            paths = files + [f"{DATABASES_DIR}/{f}" for f in db_files]
            snaps = self.repo.snapshots(errors=[])
            self.previous = PreviousVersions(self.repo, find_parent(self.repo, host, paths, snaps),
                                             find_dump_sources(self.repo, host, paths, snaps))
            records: list[DatabaseRecord] = []
            if self.opts.stdin_name:
                self.progress.phase(_("standard input"))
                tree = self._stdin_tree()
            else:
                extra: list[Node] = []
                if db_files:
                    self.progress.phase(_("databases"), files_total=len(db_files), known=True)
                    folder, records = self._databases_dir(db_files)
                    extra.append(folder)
                self._leave_out_databases(files)
                self.progress.phase(_("files"))
                tree = self._files(files, extra)
            self.packer.flush()
            self._publish_index_if_due(force=True)
            self._rescue_if_pruned()
            try:
                self.lock.check_lease()
            except LeaseExpired as lapse:
                self._recheck_after_lapse(lapse)
            summary = {
                "files_new": self.stats.files_new,
                "files_changed": self.stats.files_changed,
                "files_unmodified": self.stats.files_unmodified,
                "dirs": self.stats.dirs,
                "bytes_total": self.stats.bytes_total,
                "bytes_read": self.stats.bytes_read,
                "data_added": self.packer.raw_bytes_written,
                "data_added_stored": self.packer.bytes_written,
                "blobs_added": self.packer.blobs_written,
                "deltas_added": self.packer.deltas_written,
                "errors": self.stats.errors,
                **({"databases": self.stats.databases} if records else {}),
                "duration_ns": self.repo.clock.now_ns() - self.start_ns,
            }
            snap = Snapshot(
                time_ns=self.start_ns,
                hostname=host,
                username=getpass.getuser(),
                paths=paths,
                tree=tree,
                tags=sorted(set(self.opts.tags)),
                excludes=self.opts.excludes + self.auto_excludes,
                summary=summary,
                program=f"coffre {__version__}",
                parent=self.previous.parent.id if self.previous.parent else "",
                databases=records,
            )
            self.repo.save_snapshot(snap)
            # A prune may have finished between the check above and the snapshot write.
            self._rescue_if_pruned()
            if self.cache is not None:
                self.cache.commit()
            if self.bases is not None:
                self.bases.expire()
            if self.repo.tree_packs is not None:  # copies of packs a prune removed
                self.repo.tree_packs.tidy(self.repo.index.pack_ids(),
                                          self.repo.clock.now_ns() - UNINDEXED_COPY_AGE_NS)
            return BackupResult(snap, self.problems, self.left_out)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            if self.helpers is not None:
                self.helpers.close()
            self.announcer.close()

    def _files(self, sources: list[str], extra: list[Node]) -> bytes:
        """The tree of the sources (and `extra` beside them); someone watching gets the totals
        from a scanner counting beside the walk, which also reads the folders' metadata ahead
        of it (sources/scan.py)."""
        roots = [os.fsencode(p) for p in sources]
        early = self.early_scanner
        if early is not None and early.scans(roots, self.excluder.patterns, self.skip,
                                             self.opts.one_file_system):
            scanner: Scanner | None = early
            early.attach(self.progress)
        else:
            scanner = start_scanner(roots, self.progress, self.excluder.patterns, self.skip,
                                    self.opts.one_file_system)
        if early is not None and early is not scanner:
            early.stop()
        self._scanner = scanner
        try:
            tree = self._path_tree(roots, extra)
        finally:
            if scanner is not None:
                scanner.stop()
        if self.helpers is not None:  # every file is read: they leave while the backup ends
            self.helpers.let_go()
        # The walk has seen everything: what it did is the total, if the scanner had not
        # finished counting (a short backup) or files grew meanwhile.
        done = self.progress.status()
        self.progress.add_total(max(0, done.files_done - done.files_total),
                                max(0, done.bytes_done - done.bytes_total))
        self.progress.total_known()
        return tree

    def _leave_out_databases(self, sources: list[str]) -> None:
        """Leave out of the files the raw files of the databases just captured by their engine
        (a live copy nobody should restore, read twice), unless `also_raw`; record them among
        the snapshot's exclusions so that `verify` does not miss them."""
        for db, inside in raw_files_left_out(self.opts.databases, sources, self.opts.also_raw):
            self.skip |= skipped_paths(inside)
            self.auto_excludes += [_exact_pattern(p) for p in inside]
            there = [p for p in inside if os.path.lexists(p)]
            if there:
                self.left_out.append(LeftOut(db.describe(), there))
                self.report(ngettext(
                    "{database}: left out of the files, as its engine's copy is in the snapshot: "
                    "{paths} (--also-raw keeps it)",
                    "{database}: left out of the files, as its engine's copy is in the snapshot: "
                    "{paths} (--also-raw keeps them)", len(there)).format(
                        database=db.describe(), paths=", ".join(there)))

    def _rescue_if_pruned(self) -> None:
        rescue_if_pruned(self.repo, self.used, self.report)

    def _recheck_after_lapse(self, lapse: LeaseExpired) -> None:
        """The lock may have been judged stale (the machine slept, the link was down), so a
        prune may have removed what this backup wrote. Take the lease again, then commit only
        if no prune is running and everything the snapshot needs is indexed in a pack that
        exists; otherwise stop with nothing committed."""
        self.report(_("warning: {reason}; checking that what this backup wrote is still there").format(
            reason=lapse.message))
        self.lock.renew()
        running = [lk for lk in live_locks(self.repo) if lk.exclusive and lk.lock_id != self.lock.lock_id]
        if running:
            raise CoffreError(
                _("{reason}, and {other} is running: nothing was committed").format(
                    reason=lapse.message, other=running[0].describe()),
                _("run the backup again once it has finished; it resumes where this one stopped"),
            )
        fresh = MasterIndex()
        self.repo.load_index(into=fresh)
        stored = {bytes.fromhex(name) for name, _ in self.repo.iter_pack_names()}
        lost = [b for b in self.used if not fresh.readable(b, stored.__contains__)]
        if lost:
            raise CoffreError(
                ngettext("{reason}; meanwhile a prune removed {count} piece of data this "
                         "backup relies on: nothing was committed",
                         "{reason}; meanwhile a prune removed {count} pieces of data this "
                         "backup relies on: nothing was committed", len(lost)).format(
                             reason=lapse.message, count=len(lost)),
                _("run the backup again: it stores what is missing"),
            )
        self.report(_("note: nothing this backup relies on was removed; committing"))


class _CountingReader:
    """Counts the bytes read through it, into the progress too."""

    def __init__(self, raw: IO[bytes], progress: Progress = NULL_PROGRESS) -> None:
        self.raw = raw
        self.count = 0
        self.progress = progress

    def readinto(self, buf: memoryview) -> int:
        n = self.raw.readinto(buf)  # type: ignore[attr-defined]
        if n:
            self.count += n
            self.progress.advance(nbytes=n)
        return n or 0

    def read(self, size: int) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        self.progress.advance(nbytes=len(data))
        return data


def _exact_pattern(path: str) -> str:
    """The pattern of exactly this path, for the snapshot's record (UTF-8 text: a byte that is
    not UTF-8 becomes `?`)."""
    return "".join("?" if "\udc80" <= c <= "\udcff" else c for c in escape(path))


def database_files(databases: list[Database]) -> list[str]:
    """The dumps' file names in the snapshot, made unique (postgres-officine.dump, -2, ...)."""
    out: list[str] = []
    for db in databases:
        name = db.file_name()
        stem, dot, suffix = name.rpartition(".")
        n = 2
        while name in out:
            name = f"{stem}-{n}{dot}{suffix}"
            n += 1
        out.append(name)
    return out


def _check_sources(paths: list[str], allow_none: bool = False) -> list[str]:
    if not paths and not allow_none:
        raise CoffreError(_("nothing to back up"), _("give one or more paths, or --stdin"))
    out = []
    for p in paths:
        ap = os.path.abspath(p)
        try:
            st = os.lstat(ap)
        except FileNotFoundError:
            raise CoffreError(_("{path}: does not exist; nothing was backed up").format(path=p)) from None
        except OSError as exc:
            raise CoffreError(
                _("{path}: cannot be read ({reason})").format(path=p, reason=exc.strerror)) from None
        if ap == "/":
            raise CoffreError(_("backing up '/' as a whole is not supported yet"), _("list the directories"))
        if ap.split("/")[1] == DATABASES_DIR:
            raise CoffreError(_("{path}: the name {name} is kept for database dumps in snapshots").format(
                path=p, name=DATABASES_DIR))
        del st
        out.append(ap)
    # A path inside another source would be stored twice.
    for a in out:
        for b in out:
            if a != b and (b + "/").startswith(a.rstrip("/") + "/"):
                raise CoffreError(_("{inner} is inside {outer}; give only {outer}").format(inner=b, outer=a))
    return sorted(set(out))

