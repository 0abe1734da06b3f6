"""A repository in a local directory: a second disk, a mounted NAS share, a USB disk.

Every write goes to a temporary file in the target directory, is fsynced, renamed into place
and the directory fsynced. A failed write or fsync leaves no object: the temporary file is
removed and the error raised, the caller writes again under a new name. A pack (written once,
never read back by the backup that writes it) has its aligned bulk written around the page
cache, where the file system allows it (core/directwrite.py): no copy into memory the system
must then allocate, and on a virtual machine whose host took that memory back, far less
system time.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from coffre.core import posix
from coffre.core.directwrite import DirectWrites
from coffre.core.errors import (
    CoffreError,
    ObjectExists,
    ObjectNotFound,
    StorageError,
    StorageFull,
    StoragePermissionDenied,
)
from coffre.core.files import place_new
from coffre.core.i18n import _
from coffre.storage.base import (
    KINDS,
    LOOKING_UP,
    NOT_FOUND,
    OTHER_OBJECT,
    READING,
    REMOVING,
    WRITING,
    Handle,
    ObjectInfo,
    doing,
    outcome,
)

_TMP_PREFIX = ".tmp-"
# Every stored name is a SHA-256 in hex; anything else in the folders is not ours.
_NAME = re.compile(r"^[0-9a-f]{64}$")
# What a medium that went away answers: a USB disk pulled out (EIO, ENODEV, ENXIO; ENOTCONN
# or, for a request under way, ECONNABORTED when it was mounted through FUSE, whose process is
# gone), a network share lost (ESTALE, EHOSTDOWN).
_GONE = {errno.ENOTCONN, errno.ECONNABORTED, errno.ENODEV, errno.ENXIO, errno.ESTALE,
         errno.EHOSTDOWN}


def _translate(exc: OSError, what: str) -> StorageError:
    if exc.errno == errno.ENOENT:
        return ObjectNotFound(outcome(NOT_FOUND, what))
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoragePermissionDenied(
            _("{what}: permission denied ({reason})").format(what=what, reason=exc.strerror),
            _("check that the repository location is writable by this user"),
        )
    if exc.errno in posix.NO_SPACE:
        return StorageFull(
            _("{what}: no space left on the backup medium").format(what=what),
            _("free space with 'coffre forget --max-size ... --prune' or use a larger medium"),
        )
    if exc.errno in _GONE:
        return StorageError(
            f"{what}: {exc.strerror or exc}",
            _("check that the backup disk is still plugged in and mounted (or the network share "
              "reachable), then run the command again: what was saved before stays whole"),
        )
    if exc.errno == errno.EIO:  # unplugged, or a failing disk: nothing can be promised
        return StorageError(
            f"{what}: {exc.strerror or exc}",
            _("the backup disk could not read or write: check that it is still plugged in, then run "
              "coffre check --read-data to learn whether what it holds is whole (a disk that fails "
              "again is failing: replace it)"),
        )
    return StorageError(f"{what}: {exc.strerror or exc}")


class LocalBackend:
    remote = False

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.location = str(self.root)
        self._direct = DirectWrites()

    # -- layout ---------------------------------------------------------------------------
    def _folders(self, kind: str, name: str = "") -> tuple[str, ...]:
        """Where objects of a kind live under the root (data: in folders by their first two
        hex digits)."""
        if kind == "data":
            return ("data", name[:2]) if name else ("data",)
        if kind == "config":
            return ()
        return (kind,)

    def _dir(self, kind: str, name: str = "") -> Path:
        return self.root.joinpath(*self._folders(kind, name))

    def _path(self, handle: Handle) -> Path:
        return self._dir(handle.kind, handle.name) / handle.name

    def _file(self, handle: Handle) -> str:
        """_path as text, made without pathlib: a restore loads once per run of blobs."""
        return os.path.join(self.location, *self._folders(handle.kind, handle.name), handle.name)

    # -- contract -------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.root / "config").is_file()

    def create(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if any(p for p in self.root.iterdir() if not p.name.startswith(".")):
                raise CoffreError(
                    _("{location} is not empty").format(location=self.root),
                    _("choose an empty directory or a new one for the repository"),
                )
            for kind in KINDS:
                if kind != "config":
                    (self.root / kind).mkdir(exist_ok=True)
            posix.fsync_dir(self.root)
        except OSError as exc:
            raise _translate(exc, _("creating {location}").format(location=self.root)) from exc

    def save(self, handle: Handle, data: bytes | memoryview) -> None:
        directory = self._dir(handle.kind, handle.name)
        final = directory / handle.name
        try:
            if handle.kind != "config" and not directory.is_dir():
                directory.mkdir(exist_ok=True, parents=True)
                posix.fsync_dir(directory.parent)  # the new folder itself must survive a power cut
            if final.exists():
                if final.stat().st_size == len(data) and final.read_bytes() == bytes(data):
                    # A save cut after its link() may have left the name unsynced: success
                    # here must be as durable as a new save's.
                    posix.fsync_dir(directory)
                    return
                raise ObjectExists(outcome(OTHER_OBJECT, doing(WRITING, handle)))
            # A str, and os.unlink below rather than Path.unlink: a signal that came during the
            # write is raised at the next Python function's entry, and must not find one
            # between this finally and the removal.
            tmp = os.path.join(directory, f"{_TMP_PREFIX}{secrets.token_hex(8)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            # Whatever ends this (an error, SIGTERM), the temporary name goes: only `final`,
            # complete, may stay behind.
            try:
                try:
                    view = memoryview(data)
                    self._write(fd, view, handle.kind == "data")
                    if os.fstat(fd).st_size != len(view):
                        raise OSError(errno.EIO, "short write")
                    os.fsync(fd)
                    if handle.kind == "data":  # a backup does not read its packs back
                        posix.drop_cached(fd)
                finally:
                    os.close(fd)
                # Never over another object (files.place_new). Where the file system offers
                # neither hard links nor a rename that refuses to replace, another process can
                # put the name there between the look and the rename, but only with the same
                # bytes: every stored name is the SHA-256 of its content, and the config, the
                # only other, is written only where there is none (init, repair config).
                try:
                    place_new(tmp, str(final))
                except FileExistsError:
                    if final.read_bytes() != bytes(data):
                        raise ObjectExists(outcome(OTHER_OBJECT, doing(WRITING, handle))) from None
                    # the other writer may not have synced it yet: fsync_dir below
            finally:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
            posix.fsync_dir(directory)
        except OSError as exc:
            raise _translate(exc, doing(WRITING, handle)) from exc

    def _write(self, fd: int, view: memoryview, direct: bool) -> None:
        """All of view into the new file fd: a pack's aligned bulk around the page cache."""
        other = self._direct.open(fd) if direct else None
        try:
            self._direct.write(fd, other, [view], 0)
        finally:
            if other is not None:
                os.close(other)

    def load(self, handle: Handle, offset: int = 0, length: int | None = None) -> bytes:
        try:
            fd = os.open(self._file(handle), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if length is None or length > 1024 * 1024:
                    # Also clamps a generous limit (a whole object "up to 256 MiB"), so the
                    # read buffer is the object's size, not the limit's.
                    end = os.fstat(fd).st_size
                    length = max(0, end - offset) if length is None else max(0, min(length, end - offset))
                parts = []
                while length > 0:
                    # pread: one system call, no buffer copy, no shared file position.
                    part = os.pread(fd, length, offset)
                    if not part:
                        break
                    parts.append(part)
                    offset += len(part)
                    length -= len(part)
                return parts[0] if len(parts) == 1 else b"".join(parts)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _translate(exc, doing(READING, handle)) from exc

    def will_read(self, handle: Handle, offset: int, length: int) -> None:
        # A restore's workers read packs one span after the other: on a cold page cache each
        # read waited for the disk while a core stood idle. Told a task ahead, the disk reads
        # while they write (restores of the bench sets of 200 and 500 MB 15 and 5 % faster).
        try:
            fd = os.open(self._file(handle), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # the load reports it
        try:
            posix.will_need(fd, offset, length)
        finally:
            os.close(fd)

    def stat(self, handle: Handle) -> ObjectInfo:
        try:
            st = self._path(handle).stat()
        except OSError as exc:
            raise _translate(exc, doing(LOOKING_UP, handle)) from exc
        return ObjectInfo(handle.name, st.st_size, st.st_mtime_ns)

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        if kind == "config":
            if self.exists():
                yield self.stat(Handle("config", "config"))
            return
        base = self._dir(kind)
        dirs = [base]
        if not base.is_dir() and self.exists():
            return  # a kind never written yet (e.g. a repository copied without empty folders)
        if kind == "data":
            try:
                dirs = sorted(p for p in base.iterdir() if p.is_dir())
            except OSError as exc:
                raise _translate(exc, _("listing {kind}").format(kind=kind)) from exc
        for d in dirs:
            try:
                entries = list(os.scandir(d))
            except FileNotFoundError:
                if d is base:
                    raise _translate(FileNotFoundError(2, "not found"),
                                     _("listing {kind}").format(kind=kind)) from None
                continue  # a data/XX folder emptied and removed meanwhile
            except OSError as exc:
                raise _translate(exc, _("listing {kind}").format(kind=kind)) from exc
            for entry in entries:
                if not _NAME.match(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                if kind == "data" and entry.name[:2] != d.name:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield ObjectInfo(entry.name, st.st_size, st.st_mtime_ns)

    def remove(self, handle: Handle) -> None:
        path = self._path(handle)
        try:
            path.unlink()
            posix.fsync_dir(path.parent)
        except OSError as exc:
            raise _translate(exc, doing(REMOVING, handle)) from exc

    def clean_temporaries(self, older_than_ns: int) -> int:
        removed = 0
        for folder in [self.root, *(self.root / k for k in KINDS if k != "config"),
                       *sorted((self.root / "data").glob("??"))]:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if not entry.name.startswith(_TMP_PREFIX):
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_mtime_ns < older_than_ns:
                        os.unlink(entry.path)
                        removed += 1
                except OSError:
                    continue
        return removed

    def free_space(self) -> int | None:
        try:
            return shutil.disk_usage(self.root).free  # what this user may still write
        except OSError:
            return None

    def close(self) -> None:
        pass
