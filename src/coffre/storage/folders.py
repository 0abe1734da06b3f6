"""What the file-server backends (SFTP, FTP) share: the repository's folder layout under a
root folder, the same as on a local disk (`config`, `KIND/NAME`, `data/ab/NAME`), and the
reading of folder listings into objects and into leftover temporary files."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from coffre.core.i18n import _
from coffre.storage.base import KINDS, REMOVING, Handle, ObjectInfo, doing

C = TypeVar("C")  # a connection: an SFTP client, an FTP session
T = TypeVar("T")

TMP_PREFIX = ".tmp-"
# Every stored name is a SHA-256 in hex; anything else in the folders is not ours.
NAME = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Entry:
    """One line of a folder listing."""

    name: str
    is_dir: bool
    is_file: bool
    size: int
    mtime_ns: int


# Lists a folder; None when it does not exist.
Lister = Callable[[str], "list[Entry] | None"]


def folder(root: str, kind: str, name: str = "") -> str:
    if kind == "config":
        return root
    if kind == "data":
        return f"{root}/data/{name[:2]}" if name else f"{root}/data"
    return f"{root}/{kind}"


def path(root: str, handle: Handle) -> str:
    return f"{folder(root, handle.kind, handle.name)}/{handle.name}"


def objects(root: str, kind: str, listdir: Lister) -> list[ObjectInfo]:
    """Every object of a kind (not config), from folder listings; foreign names are skipped."""
    base = folder(root, kind)
    top = listdir(base)
    if top is None:
        return []
    folders = [("", top)]
    if kind == "data":
        folders = []
        for e in sorted(top, key=lambda e: e.name):
            if len(e.name) == 2 and e.is_dir:
                sub = listdir(f"{base}/{e.name}")
                if sub is not None:  # None: emptied and removed meanwhile
                    folders.append((e.name, sub))
    return [
        ObjectInfo(e.name, e.size, e.mtime_ns)
        for sub_name, entries in folders
        for e in entries
        if NAME.match(e.name) and e.is_file and (kind != "data" or e.name[:2] == sub_name)
    ]


def temporaries(root: str, older_than_ns: int, listdir: Lister) -> list[str]:
    """Paths of partial uploads (`.tmp-*`) last written before the given time."""
    folders = [root, *(folder(root, k) for k in KINDS if k not in ("config", "data"))]
    data = listdir(folder(root, "data")) or []
    folders += [f"{folder(root, 'data')}/{e.name}" for e in data if len(e.name) == 2 and e.is_dir]
    return [
        f"{f}/{e.name}"
        for f in folders
        for e in listdir(f) or []
        if e.name.startswith(TMP_PREFIX) and e.mtime_ns < older_than_ns
    ]


class FolderBackend(Generic[C]):
    """The parts of the SFTP and FTP backends that only depend on the folder layout: paths,
    listings, the clean-up of partial uploads. A subclass says how to run an operation on a
    connection (`_run`), list a folder (`_lister`), delete a file (`_delete`, raising one of
    `_MISSING` when it is already gone) and where the repository's root folder is (`_base`)."""

    _MISSING: tuple[type[Exception], ...] = ()

    def _run(self, what: str, fn: Callable[[C], T]) -> T:
        raise NotImplementedError

    def _lister(self, conn: C) -> Lister:
        raise NotImplementedError

    def _delete(self, conn: C, where: str) -> None:
        raise NotImplementedError

    def _base(self) -> str:
        raise NotImplementedError

    def stat(self, handle: Handle) -> ObjectInfo:
        raise NotImplementedError

    def exists(self) -> bool:
        raise NotImplementedError

    def _dir(self, kind: str, name: str = "") -> str:
        return folder(self._base(), kind, name)

    def _path(self, handle: Handle) -> str:
        return path(self._base(), handle)

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        if kind == "config":
            if self.exists():
                yield self.stat(Handle("config", "config"))
            return
        yield from self._run(_("listing {kind}").format(kind=kind),
                             lambda conn: objects(self._base(), kind, self._lister(conn)))

    def remove(self, handle: Handle) -> None:
        target = self._path(handle)
        self._run(doing(REMOVING, handle), lambda conn: self._delete(conn, target))

    def free_space(self) -> int | None:
        return None

    def will_read(self, handle: Handle, offset: int, length: int) -> None:
        pass  # a request costs a round trip: the callers read ahead whole packs themselves

    def clean_temporaries(self, older_than_ns: int) -> int:
        def clean(conn: C) -> int:
            removed = 0
            for leftover in temporaries(self._base(), older_than_ns, self._lister(conn)):
                try:
                    self._delete(conn, leftover)
                    removed += 1
                except self._MISSING:
                    continue
            return removed

        return self._run(_("removing partial uploads"), clean)
