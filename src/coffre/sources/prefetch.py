"""Read-ahead of the files a backup is about to read.

The backup reads one file at a time; on a cold cache each small file then costs a full disk
round trip, one after the other (the bench tree reads at 420 MB/s this way, one big file at
1.95 GB/s). Asking the kernel for the next files' first bytes in advance
(POSIX_FADV_WILLNEED) keeps several reads in flight without threads or extra copies.
"""

from __future__ import annotations

import os

AHEAD_FILES = 64
AHEAD_BYTES = 1024 * 1024  # per file; the kernel's own read-ahead takes over after that
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0)


class Prefetcher:
    """Announces the files of one folder a few entries ahead of the one being read."""

    def __init__(self, paths: list[bytes]) -> None:
        self._paths = paths
        self._next = 0  # first path not announced yet
        self._enabled = hasattr(os, "posix_fadvise")

    def reading(self, index: int) -> None:
        """The backup is about to read path number `index`: announce the ones after it."""
        if not self._enabled:
            return
        stop = min(len(self._paths), index + AHEAD_FILES)
        while self._next < stop:
            _announce(self._paths[self._next])
            self._next += 1


def _announce(path: bytes) -> None:
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return  # the backup itself reports what cannot be opened
    try:
        os.posix_fadvise(fd, 0, AHEAD_BYTES, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)
