"""Whether a file changed while it was read: the backup and its helper processes ask it of every
file they read (apart from sources/files.py, whose imports a helper does not need)."""

from __future__ import annotations

import os


def changed_while_read(before: os.stat_result, after: os.stat_result) -> bool:
    """Whether a file was modified while it was read (its fstat before and after)."""
    return (before.st_mtime_ns, before.st_size, before.st_ctime_ns) != (
        after.st_mtime_ns, after.st_size, after.st_ctime_ns)
