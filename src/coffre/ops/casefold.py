"""Names a restore target takes as one: exFAT and FAT (how USB disks are sold) do not tell upper
and lower case apart, so `Facture.pdf` and `facture.pdf`, two files of one Linux folder, are one
entry there. The second one met the first as "already there": a restore said it was left as it
was, or (--overwrite always) wrote it over the first, and either way exited 0 with a file lost.

A restore asks each file system it writes to once (`ignores_case`: a probe file, looked up in
upper case): the target's root, and a disk or a share mounted inside it. Only where it ignores
case are a folder's names compared (`twins`, folded more widely than any file
system folds: a false suspicion costs a listing of the folder), and a name that then finds its
place taken is checked to be missing from the folder's listing (`holder`: another name holds
the place) before it is reported as not restored.
"""

from __future__ import annotations

import os

from coffre.ops.target import probe_file


def ignores_case(folder: int) -> bool:
    """Whether the file system of this open folder finds a name in another case; False when it
    cannot be asked (a read-only target: the restore says so itself)."""
    with probe_file(folder, "case") as probe:
        if probe is None:
            return False
        try:
            os.stat(probe[1].upper(), dir_fd=folder, follow_symlinks=False)
            return True
        except OSError:
            return False


def twins(names: list[bytes]) -> dict[bytes, list[bytes]]:
    """name -> the other names of its folder that may be the same entry on such a target, for
    every name of such a group, the first one included: which of them the restore creates first
    depends on their sizes and on its threads, not on their order in the folder."""
    groups: dict[str, list[bytes]] = {}
    for name in names:
        groups.setdefault(os.fsdecode(name).casefold(), []).append(name)
    return {name: [other for other in group if other != name]
            for group in groups.values() if len(group) > 1 for name in group}


def holder(folder: int, name: bytes) -> str | None:
    """The name an open folder lists in this one's place (same letters, another case), None if
    it lists this very name, or "" if neither. The listing, not inode numbers: FUSE gives each
    name looked up a number of its own. Read through a descriptor of its own: a listing moves
    its descriptor's position, which threads sharing the folder's would see."""
    wanted = os.fsdecode(name)
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=folder)
    try:
        listed = os.listdir(fd)
    finally:
        os.close(fd)
    if wanted in listed:
        return None
    key = wanted.casefold()
    return next((other for other in listed if other.casefold() == key), "")
