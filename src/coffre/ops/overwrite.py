"""What a restore does with what already stands where it writes (`--overwrite`).

- "never" (the default): anything there is left as it is (and counted);
- "if-changed": a file is replaced when its size or content differs from the snapshot's; one
  with the snapshot's size and modification time is taken as unchanged without being read, as
  restic does, and one with another time is compared by content (its pieces hashed with the
  repository's keyed hash, nothing read from the repository); a symlink, fifo or device node
  is replaced when it differs;
- "always": everything is replaced.

A folder is never replaced by a file (an error, the folder stays). Nothing here follows a
symlink: everything is looked at relative to an open folder, without following.
"""

from __future__ import annotations

import os
import secrets
import stat

from coffre.core.errors import CoffreError
from coffre.core.i18n import _
from coffre.format.tree import Node
from coffre.ops.content import content_matches
from coffre.repository.repo import Repository

OVERWRITE = ("never", "if-changed", "always")
SKIP, UNCHANGED, REPLACE = "skip", "unchanged", "replace"


def decide(policy: str, repo: Repository, folder: int, name: bytes, path: bytes, node: Node,
           delete_hint: bool = False) -> str:
    """SKIP, UNCHANGED or REPLACE for what is at `name` in `folder` (`path` in the target),
    where the restore would make `node`. CoffreError for a folder that a policy would replace
    (`delete_hint`: saying that --delete, with --sync, removes it)."""
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return REPLACE  # gone meanwhile: written beside and renamed all the same
    if policy == "never":
        return SKIP
    if stat.S_ISDIR(st.st_mode):
        if delete_hint:
            raise CoffreError(_("{path} exists as a folder; not replaced (with --sync, --delete removes "
                                "a folder standing where the snapshot has a file)").format(
                path=os.fsdecode(path)))
        raise CoffreError(_("{path} exists as a folder; not replaced").format(path=os.fsdecode(path)))
    if policy == "always":
        return REPLACE
    return UNCHANGED if same(repo, folder, name, st, node) else REPLACE


def same(repo: Repository, folder: int, name: bytes, st: os.stat_result, node: Node) -> bool:
    """--overwrite if-changed: whether what is there is the snapshot's entry already."""
    if node.type == "file":
        if not stat.S_ISREG(st.st_mode) or st.st_size != node.size:
            return False
        if st.st_mtime_ns == node.mtime_ns:
            return True  # as restic: same size and time, taken as unchanged unread
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
        try:
            return stat.S_ISREG(os.fstat(fd).st_mode) and content_matches(
                repo, fd, node.content, node.size) is None
        finally:
            os.close(fd)
    if node.type == "symlink":
        return stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=folder) == node.target
    if node.type == "fifo":
        return stat.S_ISFIFO(st.st_mode)
    if node.type in ("chardev", "blockdev"):
        kind = stat.S_ISCHR if node.type == "chardev" else stat.S_ISBLK
        return kind(st.st_mode) and st.st_rdev == node.rdev
    return False


def beside(path: bytes) -> bytes:
    """A temporary name beside path for its replacement (fixed length: any name fits)."""
    return path.rpartition(b"/")[0] + b"/.coffre-restore-" + secrets.token_hex(8).encode()
