"""Writing the bulk of a large restored file, or of a pack stored on a local disk, around the
page cache (O_DIRECT, Linux).

Why: a restore writes each byte once and does not read it back (but with --verify). Through
the page cache, each written page is first allocated and filled by the kernel, and stays as a
dirty page until written out: a restored database of several GB pushes the server's own cache
out. On a virtual machine whose balloon hands free memory back to the host (free page
reporting, as on this project's bench machine), it costs far more: buffered writes of whole
aligned blocks (the database blocks, 256 KiB) make the kernel allocate large folios from
memory given back to the host, and the first touch of each 4 KiB page then faults in the
host. Writing 400 MiB there took 2.7 s of system time in 256 KiB-aligned writes, 0.06 s with
O_DIRECT; on the same machine with memory not yet given back, restores took about as long
either way (docs/restore.md, "Writing large files"). A backup's packs are the same: each is written
once, synced, and never read back by the backup (storage/local.py).

How: a second descriptor on the very file (reopened through /proc/self/fd: no name is looked
up again, whatever is swapped in the target meanwhile), opened with O_DIRECT. The aligned
middle of each run of data goes through it from a page-aligned buffer each thread keeps, in
pieces of at most PIECE bytes; the unaligned head and tail go through the ordinary
descriptor, so the two never write the same page. Where the system refuses (no O_DIRECT, no
/proc, a file system that rejects it with EINVAL), ordinary writes do everything, and the
restore stops asking.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
from collections.abc import Sequence

ALIGN = 4096  # file offsets, lengths and buffer addresses of direct writes (any disk's sector)
PIECE = 2 * 1024 * 1024  # one write, from each thread's buffer (a local range of database blocks)
MIN_DIRECT = 64 * 1024  # a smaller aligned middle goes through the page cache with the rest
_FLAG = getattr(os, "O_DIRECT", 0)  # Linux (and some BSDs); not Windows or macOS
# Answers that mean "not here": this file system, or this system, does not do it.
_REFUSED = (errno.EINVAL, errno.ENOENT, errno.ENOTDIR, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS)


class DirectWrites:
    """A restore's direct writes: whether they still work there, and each thread's buffer."""

    def __init__(self) -> None:
        self.enabled = bool(_FLAG) and os.path.isdir("/proc/self/fd")
        self.written = 0  # bytes that went around the page cache (a count; races only undercount)
        self._local = threading.local()

    def open(self, fd: int) -> int | None:
        """A descriptor with O_DIRECT on fd's own file, or None (ordinary writes then): only
        on a file system of a local disk. Network shares, FUSE, tmpfs, btrfs and ZFS have no
        device number of their own (major 0): there O_DIRECT may mean a round trip per write,
        a copy all the same, or nothing at all."""
        if not self.enabled:
            return None
        try:
            if os.major(os.fstat(fd).st_dev) == 0:
                return None
            return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_CLOEXEC | _FLAG)
        except OSError as exc:
            if exc.errno in _REFUSED:
                self.enabled = False
            return None  # any other reason (too many open files): this file only

    def write(self, fd: int, direct: int | None, blobs: Sequence[bytes | memoryview], offset: int) -> None:
        """Write the blobs one after the other from offset into fd's file: the aligned middle
        through `direct` (from open) when there is one and it is worth it, the rest through fd."""
        joined, end = _Joined(blobs, offset), offset + sum(len(b) for b in blobs)
        head, tail = min(-(-offset // ALIGN) * ALIGN, end), end // ALIGN * ALIGN
        if direct is None or not self.enabled or tail - head < MIN_DIRECT:
            joined.write(fd, offset, end)  # all of it the usual way
            return
        joined.write(fd, offset, head)
        at = head
        while at < tail:
            stop = min(at + PIECE, tail)
            done = self._write_direct(direct, joined, at, stop)
            if done < stop:  # refused, or cut short off the alignment: the rest the usual way
                joined.write(fd, done, tail)
                break
            at = stop
        joined.write(fd, tail, end)

    def _write_direct(self, direct: int, joined: _Joined, start: int, end: int) -> int:
        """The bytes from start to end (aligned) with O_DIRECT; where it stopped (end unless
        the system refused, or wrote a length off the alignment)."""
        buf = self._buffer()
        joined.copy_into(buf, start, end)
        view = memoryview(buf)[: end - start]
        while view:
            try:
                n = os.pwrite(direct, view, start)
            except OSError as exc:
                if exc.errno not in _REFUSED:
                    raise
                self.enabled = False
                return start
            self.written += n
            view, start = view[n:], start + n
            if n % ALIGN:
                break
        return start

    def _buffer(self) -> mmap.mmap:
        buf: mmap.mmap | None = getattr(self._local, "buf", None)
        if buf is None:  # an anonymous mapping starts on a page: as aligned as O_DIRECT asks
            buf = self._local.buf = mmap.mmap(-1, PIECE)
        return buf


class _Joined:
    """Blobs laid one after the other from a file offset, read by file offsets."""

    def __init__(self, blobs: Sequence[bytes | memoryview], offset: int) -> None:
        self.blobs, self.offset = blobs, offset

    def pieces(self, start: int, end: int) -> list[memoryview]:
        out, at = [], self.offset
        for data in self.blobs:
            lo, hi = max(start, at), min(end, at + len(data))
            if lo < hi:
                out.append(memoryview(data)[lo - at : hi - at])
            at += len(data)
            if at >= end:
                break
        return out

    def copy_into(self, buf: mmap.mmap, start: int, end: int) -> None:
        pos = 0
        for piece in self.pieces(start, end):
            buf[pos : pos + len(piece)] = piece
            pos += len(piece)

    def write(self, fd: int, start: int, end: int) -> None:
        for piece in self.pieces(start, end):
            _write_all(fd, piece, start)
            start += len(piece)


def _write_all(fd: int, view: memoryview, at: int) -> None:
    while view:
        n = os.pwrite(fd, view, at)
        view, at = view[n:], at + n
