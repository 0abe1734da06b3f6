"""Restore: recreate a snapshot's files under a target directory.

Safety: every name is validated (no '/', '.', '..' or NUL), directories are created by us and
checked not to be symlinks, and the last component is opened with O_NOFOLLOW, so nothing is
ever written outside the target whatever the snapshot contains.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from coffre.core.errors import CoffreError
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node
from coffre.ops.common import Problems, Reporter, load_tree, quiet
from coffre.ops.content import content_matches
from coffre.repository.repo import Repository
from coffre.sources.files import Excluder

ZERO = bytes(16 * 1024 * 1024)
# Blobs of one file decoded ahead of the write, by the fetch pool: a large file (the
# database) is then restored by several cores, not one.
PREFETCH = 8


@dataclass
class RestoreOptions:
    target: str
    includes: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    verify: bool = False
    sparse: bool = True
    workers: int = 2


@dataclass
class RestoreStats:
    files: int = 0
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
        self.problems = Problems()
        self.stats = RestoreStats()
        self.excluder = Excluder(opts.excludes)
        self.root = os.fsencode(os.path.abspath(opts.target))
        self._dirs: list[tuple[bytes, Node]] = []
        self._links: list[tuple[bytes, Node]] = []
        self._first_link: dict[tuple[int, int], bytes] = {}
        self._lock = threading.Lock()
        self._is_root = os.geteuid() == 0
        self._slots = threading.BoundedSemaphore(opts.workers * 4)
        self._owners: dict[tuple[str, str, int, int], tuple[int, int]] = {}
        self._fetch: ThreadPoolExecutor | None = None

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
        except OSError as exc:
            raise CoffreError(f"cannot create {self.opts.target}: {exc.strerror}") from None
        with ThreadPoolExecutor(self.opts.workers, thread_name_prefix="restore") as pool, \
                ThreadPoolExecutor(self.opts.workers, thread_name_prefix="fetch") as fetch:
            self._fetch = fetch
            futures: list[Future[None]] = []
            self._restore_dir(pool, futures, snap.tree, self.root, "")
            for fut in futures:
                fut.result()
        for path, node in self._links:
            self._make_link(path, node)
        # Children before their parent (the order _dirs was filled in): a parent's mode may
        # close it to its owner, and its mtime must come after the last write into it.
        for path, node in self._dirs:
            self._set_metadata(path, node)
        return self.problems

    def _restore_dir(
        self, pool: ThreadPoolExecutor, futures: list[Future[None]], tree_id: bytes,
        dest: bytes, prefix: str,
    ) -> None:
        try:
            nodes = load_tree(self.repo, tree_id)
        except CoffreError as exc:  # a damaged folder listing: the rest is still restored
            self._problem(dest, CoffreError(f"folder contents cannot be read ({exc.message}); skipped"))
            return
        for node in nodes:
            path = prefix + "/" + os.fsdecode(node.name)
            out = dest + b"/" + node.name
            if node.type == "dir" and node.subtree is not None:
                selected = self._selected(path)
                if not selected and not self._has_selected_below(node.subtree, path):
                    continue
                if self.excluder.excluded(os.fsencode(path)):
                    continue
                try:
                    self._make_dir(out)
                except OSError as exc:
                    self._problem(out, exc)
                    continue
                self.stats.dirs += 1
                self._restore_dir(pool, futures, node.subtree, out, path)
                self._dirs.append((out, node))
                continue
            if not self._selected(path):
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
        """Queue a file, with a bounded number in flight so memory stays flat."""
        self._slots.acquire()
        fut = pool.submit(self._restore_file, path, node)
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

    def _make_dir(self, path: bytes) -> None:
        """A real directory at path. Something else there (a symlink above all, which is
        never followed) is replaced, as a file replaces what stands at its place."""
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                return
            os.unlink(path)
            os.mkdir(path, 0o700)

    def _clear(self, path: bytes) -> None:
        """Remove an existing non-directory at path (never follows a symlink)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise CoffreError(f"{os.fsdecode(path)} exists as a directory; not replaced by a file")
        os.unlink(path)

    def _restore_file(self, path: bytes, node: Node) -> None:
        try:
            self._clear(path)
            mode = os.O_RDWR if self.opts.verify else os.O_WRONLY
            fd = os.open(path, mode | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except (OSError, CoffreError) as exc:
            self._problem(path, exc)
            return
        try:
            written = 0
            for data in self._blobs(node.content):
                if self.opts.sparse and len(data) <= len(ZERO) and data == ZERO[: len(data)]:
                    os.lseek(fd, len(data), os.SEEK_CUR)
                else:
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                written += len(data)
            os.ftruncate(fd, written)
            if self.opts.verify:
                os.fsync(fd)
                reason = content_matches(self.repo, fd, node.content, node.size)
                if reason:
                    self.problems.errors.append(f"verify {os.fsdecode(path)}: {reason}")
                else:
                    with self._lock:
                        self.stats.verified += 1
            self._set_metadata_fd(fd, path, node)
        except (OSError, CoffreError) as exc:  # unreadable data: report, go on with the rest
            self._problem(path, exc)
        finally:
            os.close(fd)
        with self._lock:
            self.stats.files += 1
            self.stats.bytes += node.size

    def _blobs(self, content: list[bytes]) -> Iterator[bytes]:
        """The decoded blobs of a file, in order; several fetched ahead for large files."""
        if len(content) < 2 or self._fetch is None:
            for blob_id in content:
                yield self.repo.load_blob(blob_id)
            return
        ahead: deque[Future[bytes]] = deque()
        todo = iter(content)
        try:
            for blob_id in todo:
                ahead.append(self._fetch.submit(self.repo.load_blob, blob_id))
                if len(ahead) >= PREFETCH:
                    break
            while ahead:
                data = ahead.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    ahead.append(self._fetch.submit(self.repo.load_blob, nxt))
                yield data
        finally:
            for fut in ahead:
                fut.cancel()

    def _restore_special(self, path: bytes, node: Node) -> None:
        try:
            self._clear(path)
            if node.type == "symlink":
                os.symlink(node.target, path)
            elif node.type == "fifo":
                os.mkfifo(path, 0o600)
            elif node.type in ("chardev", "blockdev"):
                kind = stat.S_IFCHR if node.type == "chardev" else stat.S_IFBLK
                os.mknod(path, kind | 0o600, node.rdev)
            else:
                return  # sockets are not restored: they are recreated by their programs
            self.stats.others += 1
            self._set_metadata(path, node)
        except (OSError, CoffreError) as exc:
            self._problem(path, exc)

    def _make_link(self, path: bytes, node: Node) -> None:
        first = self._first_link[(node.device, node.inode)]
        try:
            self._clear(path)
            os.link(first, path, follow_symlinks=False)
            self.stats.files += 1
        except (OSError, CoffreError) as exc:
            self._problem(path, exc)

    # -- metadata ------------------------------------------------------------------------------
    def _owner(self, node: Node) -> tuple[int, int]:
        import grp
        import pwd

        key = (node.user, node.group, node.uid, node.gid)
        found = self._owners.get(key)
        if found is not None:
            return found
        uid, gid = node.uid, node.gid
        try:
            if node.user:
                uid = pwd.getpwnam(node.user).pw_uid
        except KeyError:
            pass
        try:
            if node.group:
                gid = grp.getgrnam(node.group).gr_gid
        except KeyError:
            pass
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
            os.fchown(fd, *self._owner(node))
        self._set_xattrs(fd, node, True)
        os.fchmod(fd, node.mode)
        os.utime(fd, ns=(node.atime_ns, node.mtime_ns))

    def _set_metadata(self, path: bytes, node: Node) -> None:
        try:
            if self._is_root:
                os.lchown(path, *self._owner(node))
            self._set_xattrs(path, node, False)
            if node.type != "symlink":
                os.chmod(path, node.mode, follow_symlinks=False)
            os.utime(path, ns=(node.atime_ns, node.mtime_ns), follow_symlinks=False)
        except OSError as exc:
            self._problem(path, exc)

    def _problem(self, path: bytes, exc: BaseException) -> None:
        msg = exc.message if isinstance(exc, CoffreError) else (getattr(exc, "strerror", None) or str(exc))
        with self._lock:
            self.problems.errors.append(f"{os.fsdecode(path)}: {msg}")


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]
