"""Reading file-system metadata into tree nodes, and exclude patterns."""

from __future__ import annotations

import os
import stat

from coffre.core.posix import group_name, user_name
from coffre.format.tree import Node
from coffre.sources.patterns import PathMatcher

_TYPE_OF_FORMAT = {  # stat.S_IFMT(mode) -> node type (a dict: one lookup a file, not seven tests)
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def node_type(mode: int) -> str | None:
    return _TYPE_OF_FORMAT.get(stat.S_IFMT(mode))


def read_xattrs(path: bytes) -> list[tuple[bytes, bytes]]:
    """Extended attributes, POSIX ACLs included (system.posix_acl_*). Errors mean none."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    out = []
    for name in sorted(names):
        try:
            out.append((name.encode("utf-8", "surrogateescape"),
                        os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return out


def node_from_stat(name: bytes, path: bytes, st: os.stat_result) -> Node:
    ntype = node_type(st.st_mode) or "file"
    node = Node(
        name=name,
        type=ntype,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        user=user_name(st.st_uid),
        group=group_name(st.st_gid),
        mtime_ns=st.st_mtime_ns,
        # Listing a folder updates its access time, and its change time cannot be restored:
        # recording them would make every backup store new trees for unchanged folders.
        # Folders get their mtime as atime, and no ctime.
        atime_ns=st.st_mtime_ns if ntype == "dir" else st.st_atime_ns,
        ctime_ns=0 if ntype == "dir" else st.st_ctime_ns,
        size=st.st_size if ntype == "file" else 0,
        inode=st.st_ino,
        device=st.st_dev,
        nlink=st.st_nlink,
        rdev=st.st_rdev if ntype in ("chardev", "blockdev") else 0,
    )
    if ntype == "symlink":
        node.target = os.readlink(path)
    node.xattrs = read_xattrs(path)
    return node


class Excluder:
    """Exclude patterns (the grammar of sources/patterns.py); a match excludes a folder's whole
    subtree (the walks do not descend into it)."""

    def __init__(self, patterns: list[str]) -> None:
        self._matcher = PathMatcher(patterns)
        self.patterns = self._matcher.patterns

    @staticmethod
    def from_file(path: str) -> list[str]:
        with open(path, encoding="utf-8") as f:
            return [
                line.strip()
                for line in f
                if line.strip() and not line.lstrip().startswith("#")
            ]

    def excluded(self, path: bytes) -> bool:
        return bool(self._matcher) and self._matcher.matches(path)
