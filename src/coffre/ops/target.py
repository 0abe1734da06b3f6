"""The folders of a restore target, reached without following symlinks.

A restore (often as root) writes into a folder other users may be able to write in. Checking
a folder with lstat and then opening a file by its full path leaves a window in which a folder
can be swapped for a symlink, and the file written wherever it points. Here every file,
folder, link and node is made relative to an open folder (`dir_fd`), and folders are opened
from the target's own folder one name at a time with O_NOFOLLOW: a swapped folder makes that
one operation fail (ELOOP or ENOTDIR), and nothing is ever written outside the target.

Each thread keeps the last folders it opened (KEPT_PER_THREAD, the least recently used
closed first), and reaches a new one from its deepest kept ancestor: files come folder by folder
and folders depth first, so most lookups cost nothing and the others one `openat`, however deep
the target. A kept folder that is renamed meanwhile is still the real folder, inside the target
(those the restore makes are its owner's only, mode 0700, until the end).
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

# Windows lacks these flags (and opening folders): there the module loads, restore cannot run.
DIR_FLAGS = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))
# Folders each thread keeps open: a restore has up to 9 threads, well under the usual limit
# of 1,024 open files.
KEPT_PER_THREAD = 32


class TargetDirs:
    def __init__(self, root: bytes) -> None:
        """root: the target folder, absolute, which exists (it is the user's choice, and is
        opened as given)."""
        self._top = root.rstrip(b"/")  # what the paths below the target start with
        self.root = self._top or b"/"
        self.root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # Thread id -> the folders that thread keeps open, by path (the least recently used
        # first). Each thread reads and changes only its own; the lock guards the dict
        # against close().
        self._kept: dict[int, OrderedDict[bytes, int]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for kept in self._kept.values():
                for fd in kept.values():
                    os.close(fd)
            self._kept.clear()
        os.close(self.root_fd)

    def _names(self, path: bytes) -> list[bytes]:
        """The names leading from the target to path ('//' as '/': a target of '/')."""
        if path != self.root and not path.startswith(self._top + b"/"):
            raise ValueError(f"{path!r} is not inside the restore target")
        return [name for name in path[len(self.root):].split(b"/") if name]

    def open_dir(self, path: bytes) -> int:
        """A new fd on the folder at path (the caller closes it), reached from the target
        without following a symlink; OSError if one of the names is not a real folder."""
        names = self._names(path)
        if not names:
            return os.dup(self.root_fd)
        return os.open(names[-1], DIR_FLAGS, dir_fd=self._folder(names[:-1]))

    def parent(self, path: bytes) -> tuple[int, bytes]:
        """The folder holding path, as an fd this thread keeps until it needs others (never
        close it, nor use it after this thread's next call), and path's name in it."""
        head, _, name = path.rpartition(b"/")
        kept = self._kept.get(threading.get_ident())
        if kept is not None and (fd := kept.get(head)) is not None:  # the usual case: kept as is
            kept.move_to_end(head)
            return fd, name
        return self._folder(self._names(head or b"/")), name

    def _folder(self, names: list[bytes]) -> int:
        """The folder reached from the target by `names`, kept by this thread (under its path,
        '//' as '/'): opened from its deepest kept ancestor one name at a time, never following
        a symlink."""
        if not names:
            return self.root_fd
        kept = self._kept.get(threading.get_ident())
        if kept is None:
            with self._lock:
                kept = self._kept.setdefault(threading.get_ident(), OrderedDict())
        paths = [self._top]
        for name in names:
            paths.append(paths[-1] + b"/" + name)
        known, fd = 0, self.root_fd
        for above in range(len(names), 0, -1):  # the folder itself, else its deepest kept ancestor
            found = kept.get(paths[above])
            if found is not None:
                known, fd = above, found
                kept.move_to_end(paths[above])
                break
        for depth in range(known + 1, len(names) + 1):
            fd = os.open(names[depth - 1], DIR_FLAGS, dir_fd=fd)
            kept[paths[depth]] = fd
            if len(kept) > KEPT_PER_THREAD:  # never the folders just opened or used
                os.close(kept.popitem(last=False)[1])
        return fd

    @contextmanager
    def node(self, path: bytes) -> Iterator[str]:
        """A path naming the very node at `path` (a symlink itself, never its target) through
        /proc, for the calls that have no *at() form without following: chmod and
        setxattr of a fifo or device node."""
        folder, name = self.parent(path)
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
        try:
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)


@contextmanager
def probe_file(folder: int, kind: str) -> Iterator[tuple[int, str] | None]:
    """A new empty file in an open folder, (fd, name), to ask its file system a question; None
    if none can be made (a read-only target). Closed and removed afterwards."""
    name = f".coffre-{kind}-{secrets.token_hex(6)}-a"
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
    except OSError:
        yield None
        return
    try:
        yield fd, name
    finally:
        os.close(fd)
        try:
            os.unlink(name, dir_fd=folder)
        except OSError:
            pass


def keeps_modes(folder: int) -> bool:
    """Whether the file system of this open folder keeps the mode a file is given. A FAT or
    exFAT disk keeps none: Linux's own drivers refuse a mode that differs from the mount's
    (EPERM, counted entry by entry), but exfat-fuse accepts every chmod and keeps nothing, so
    only reading a mode back tells. True when it cannot be asked (a read-only target)."""
    with probe_file(folder, "mode") as probe:
        if probe is None:
            return True
        try:
            os.fchmod(probe[0], 0o640)
            return stat.S_IMODE(os.fstat(probe[0]).st_mode) == 0o640
        except OSError:
            return False
