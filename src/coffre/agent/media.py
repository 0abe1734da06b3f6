"""Removable disks that alternate (a media set): which disk of the set is plugged in now.

Each disk is its own repository, recognised by the repository id in its `config` file wherever
it is mounted: under the set's search folders (`/media`, `/mnt`, `/run/media` by default), at
the folder itself, one level down (`/media/COFFRE-A`) or two (`/run/media/USER/COFFRE-A`),
with the set's `path` inside the disk (`coffre` by default). The id is read without the key:
it only says which disk this is. A planted folder carrying a known id still has to be opened
with the pharmacy's key by the backup, which fails on anything else.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from coffre.agent.model import MediaSet

_CONFIG_LIMIT = 64 * 1024  # a repository's config file is a few hundred bytes


@dataclass(frozen=True)
class Disk:
    path: str  # the repository's folder on the mounted disk
    disk_id: str  # its repository id
    disk_name: str  # the name the configuration gives it


def repository_id(folder: Path) -> str | None:
    """The repository id of the repository in `folder`, or None (no repository, unreadable,
    or not a Coffre config: it is untrusted input)."""
    try:
        with open(folder / "config", "rb") as f:
            raw = f.read(_CONFIG_LIMIT + 1)
    except OSError:
        return None
    if len(raw) > _CONFIG_LIMIT:
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != "coffre-repository":
        return None
    rid = doc.get("id")
    if not isinstance(rid, str) or len(rid) != 32 or any(c not in "0123456789abcdef" for c in rid):
        return None
    return rid


def _candidates(search: str, inner: str) -> list[Path]:
    """Folders where a disk of the set may hold its repository, under one search folder."""
    root = Path(search)
    found: list[Path] = [root / inner if inner else root]
    levels = [root]
    for _depth in range(2):
        below: list[Path] = []
        for folder in levels:
            try:
                with os.scandir(folder) as it:
                    below.extend(Path(e.path) for e in it if e.is_dir(follow_symlinks=False))
            except OSError:
                continue
        found.extend(d / inner if inner else d for d in sorted(below))
        levels = below
    return found


def present_disks(media: MediaSet) -> list[Disk]:
    """The disks of the set that are plugged in now (usually one), in search order."""
    names = {rid: name for name, rid in media.disks.items()}
    seen: dict[str, Disk] = {}
    for search in media.search:
        for folder in _candidates(search, media.path):
            rid = repository_id(folder)
            if rid is not None and rid in names and rid not in seen:
                seen[rid] = Disk(str(folder), rid, names[rid])
    return list(seen.values())


def medium_usage(path: str) -> tuple[int, int] | None:
    """(used, total) bytes of the file system holding a local repository, or None."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    total = st.f_blocks * st.f_frsize
    return total - st.f_bavail * st.f_frsize, total
