"""What the file-server backends (SFTP, FTP) share: the repository's folder layout under a
root folder, the same as on a local disk (`config`, `KIND/NAME`, `data/ab/NAME`), and the
reading of folder listings into objects and into leftover temporary files."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from coffre.storage.base import KINDS, Handle, ObjectInfo

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
