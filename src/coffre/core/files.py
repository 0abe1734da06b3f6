"""Small files written whole or not at all (certificates, token files, password hashes,
service units), and complete files given their final name without replacing another."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from coffre.core import posix


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """`data` as the whole of `path` with `mode`, or `path` unchanged: a temporary file beside
    it (created with that mode, never readable by others meanwhile), fsync, rename, fsync of
    the folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a crash: never written into, whatever its mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # whatever the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    posix.fsync_dir(path.parent)


def write_new(tmp: Path, final: Path, data: bytes, owner: tuple[int, int] | None = None) -> None:
    """`data` as `final`, whole or not at all: written to the new file `tmp` (0600, refused if
    it exists), fsync, given to `owner` (uid, gid), renamed, fsync of the folder."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if owner is not None:
            os.chown(tmp, *owner)
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    posix.fsync_dir(final.parent)


# What link() answers on a file system without hard links: EPERM on Linux (exFAT and FAT, how
# USB disks come; FUSE), EOPNOTSUPP or ENOSYS on some network shares.
NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def place_new(tmp: str, final: str) -> None:
    """Give the complete file `tmp` the name `final`, never replacing what is there
    (FileExistsError); `tmp` may be left beside it, for the caller to remove. link() refuses to
    replace, unlike rename(); where the file system has no hard links, a rename that refuses to
    replace in one step (posix.rename_noreplace: Linux's exFAT, FAT and CIFS drivers); where it
    has neither (FUSE file systems), a rename once the name is seen free, which another process
    could beat in between: callers say why that is harmless for them."""
    try:
        os.link(tmp, final)
        return
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
    if posix.rename_noreplace(tmp, final):
        return
    if os.path.lexists(final):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), final)
    os.rename(tmp, final)
