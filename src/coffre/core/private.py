"""What Coffre keeps on this machine is private to its user: caches and the damage register
hold plaintext paths, and patients' names are in file names.

The command sets the process umask to 077, so every file and folder it creates is 0600/0700;
`private_dir` also narrows a folder an older version (or another umask) left open.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

UMASK = 0o077


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner can open: created 0700 with its missing parents, or
    narrowed to that if it exists with rights for group or others."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    narrow(path)
    return path


def narrow(path: Path) -> None:
    """Take group's and others' rights off a file or folder of ours. Someone else's, a
    symlink or a read-only disk are left as they are: the folder around keeps others out."""
    try:
        st = os.lstat(path)
        if st.st_mode & 0o077 and st.st_uid == os.geteuid() and not stat.S_ISLNK(st.st_mode):
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
    except OSError:
        pass


def open_to_others(st: os.stat_result) -> bool:
    """Whether group or others may read a file with this status."""
    return bool(st.st_mode & (stat.S_IRGRP | stat.S_IROTH))
