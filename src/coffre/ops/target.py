"""The folders of a restore target, reached without following symlinks.

A restore (often as root) writes into a folder other users may be able to write in. Checking
a folder with lstat and then opening a file by its full path leaves a window in which a folder
can be swapped for a symlink, and the file written wherever it points. Here every file,
folder, link and node is made relative to an open folder (`dir_fd`), and folders are opened
from the target's own folder one name at a time with O_NOFOLLOW: a swapped folder makes that
one operation fail (ELOOP or ENOTDIR), and nothing is ever written outside the target.

Each thread keeps the last folder it opened: files come folder by folder, so most lookups
cost nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Windows lacks these flags (and opening folders): there the module loads, restore cannot run.
DIR_FLAGS = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))


class TargetDirs:
    def __init__(self, root: bytes) -> None:
        """root: the target folder, absolute, which exists (it is the user's choice, and is
        opened as given)."""
        self.root = root.rstrip(b"/") or b"/"
        self.root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # Thread id -> the folder that thread keeps open: its path and fd. Each thread reads
        # and replaces only its own entry; the lock guards the dict against close().
        self._kept: dict[int, tuple[bytes, int]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for _, fd in self._kept.values():
                os.close(fd)
            self._kept.clear()
        os.close(self.root_fd)

    def _names(self, path: bytes) -> list[bytes]:
        """The names leading from the target to path ('//' as '/': a target of '/')."""
        if path != self.root and not path.startswith(self.root.rstrip(b"/") + b"/"):
            raise ValueError(f"{path!r} is not inside the restore target")
        return [name for name in path[len(self.root):].split(b"/") if name]

    def open_dir(self, path: bytes) -> int:
        """A new fd on the folder at path, opened name by name from the target without
        following a symlink; OSError if one of them is not a real folder."""
        fd = os.dup(self.root_fd)
        try:
            for name in self._names(path):
                inner = os.open(name, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
        except BaseException:
            os.close(fd)
            raise
        return fd

    def parent(self, path: bytes) -> tuple[int, bytes]:
        """The folder holding path, as an fd this thread keeps until it needs another one
        (never close it), and path's name in it."""
        head, _, name = path.rpartition(b"/")
        me = threading.get_ident()
        kept = self._kept.get(me)
        if kept is not None and kept[0] == head:
            return kept[1], name
        if not self._names(head or b"/"):
            return self.root_fd, name
        fd = self.open_dir(head)
        with self._lock:
            self._kept[me] = (head, fd)
        if kept is not None:
            os.close(kept[1])
        return fd, name

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
