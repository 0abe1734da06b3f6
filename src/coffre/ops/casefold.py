"""Names a restore target takes as one: exFAT and FAT (how USB disks are sold) do not tell upper
and lower case apart, so `Facture.pdf` and `facture.pdf`, two files of one Linux folder, are one
entry there. The second one met the first as "already there": a restore said it was left as it
was, or (--overwrite always) wrote it over the first, and either way exited 0 with a file lost.

A restore asks the target once (`ignores_case`: a probe file, looked up in upper case). Only
where it ignores case are a folder's names compared (`twins`, folded more widely than any file
system folds: a false suspicion costs a listing of the folder), and a name that then finds its
place taken is checked to be missing from the folder's listing (`name_missing`: another name
holds the place) before it is reported as not restored.
"""

from __future__ import annotations

import os
import secrets


def ignores_case(folder: int) -> bool:
    """Whether the file system of this open folder finds a name in another case; False when it
    cannot be asked (a read-only target: the restore says so itself)."""
    probe = f".coffre-case-{secrets.token_hex(6)}-a"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
    except OSError:
        return False
    try:
        os.close(fd)
        os.stat(probe.upper(), dir_fd=folder, follow_symlinks=False)
        return True
    except OSError:
        return False
    finally:
        try:
            os.unlink(probe, dir_fd=folder)
        except OSError:
            pass


def twins(names: list[bytes]) -> dict[bytes, bytes]:
    """name -> the first name before it that may be the same entry on such a target."""
    first: dict[str, bytes] = {}
    out: dict[bytes, bytes] = {}
    for name in names:
        key = os.fsdecode(name).casefold()
        if key in first:
            out[name] = first[key]
        else:
            first[key] = name
    return out


def name_missing(folder: int, name: bytes) -> bool:
    """Whether an open folder lists no entry of exactly this name (one it found under this
    name is then another's). Its listing, not inode numbers: FUSE gives each name looked up
    a number of its own."""
    return os.fsdecode(name) not in os.listdir(folder)
