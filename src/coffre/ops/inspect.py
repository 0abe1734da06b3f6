"""Read-only views of snapshots: listings, differences between two snapshots, statistics."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node
from coffre.ops.common import load_tree
from coffre.repository.repo import Repository


def iter_tree(repo: Repository, tree_id: bytes, prefix: str = "") -> Iterator[tuple[str, Node]]:
    for node in load_tree(repo, tree_id):
        path = prefix + "/" + os.fsdecode(node.name)
        yield path, node
        if node.type == "dir" and node.subtree is not None:
            yield from iter_tree(repo, node.subtree, path)


@dataclass
class DiffEntry:
    change: str  # "+" added, "-" removed, "M" content changed, "U" metadata only, "T" type
    path: str


def diff_trees(repo: Repository, a: bytes | None, b: bytes | None, prefix: str = "") -> Iterator[DiffEntry]:
    if a == b:
        return
    left = {n.name: n for n in load_tree(repo, a)} if a else {}
    right = {n.name: n for n in load_tree(repo, b)} if b else {}
    for name in sorted(set(left) | set(right)):
        yield from diff_nodes(repo, left.get(name), right.get(name), prefix + "/" + os.fsdecode(name))


def diff_nodes(repo: Repository, x: Node | None, y: Node | None, path: str) -> Iterator[DiffEntry]:
    """The changes from entry x to entry y at path (None: not there), and below them."""
    if x is None or y is None:
        node = x or y
        if node is None:
            return
        yield DiffEntry("+" if x is None else "-", path)
        if node.type == "dir":
            yield from diff_trees(repo, None if x is None else x.subtree,
                                  None if y is None else y.subtree, path)
        return
    if x.type != y.type:
        yield DiffEntry("T", path)
        return
    if x.type == "dir":
        if x.mode != y.mode or (x.uid, x.gid) != (y.uid, y.gid) or x.xattrs != y.xattrs:
            yield DiffEntry("U", path)
        yield from diff_trees(repo, x.subtree, y.subtree, path)
    elif x.content != y.content or x.target != y.target:
        yield DiffEntry("M", path)
    elif (x.mode, x.uid, x.gid, x.mtime_ns, x.xattrs) != (y.mode, y.uid, y.gid, y.mtime_ns, y.xattrs):
        yield DiffEntry("U", path)


@dataclass
class RepoStats:
    snapshots: int = 0
    files: int = 0
    restore_size: int = 0  # bytes a full restore of all counted snapshots writes
    unique_blobs: int = 0
    raw_size: int = 0  # uncompressed size of the unique blobs
    stored_size: int = 0  # repository bytes of those blobs
    packs: int = 0
    pack_bytes: int = 0
    per_snapshot: list[dict[str, object]] = field(default_factory=list)


def repo_stats(repo: Repository, snaps: list[Snapshot]) -> RepoStats:
    st = RepoStats(snapshots=len(snaps))
    seen: set[bytes] = set()
    for snap in snaps:
        stack = [snap.tree]
        while stack:
            tree_id = stack.pop()
            seen.add(tree_id)
            for node in load_tree(repo, tree_id):
                if node.type == "file":
                    st.files += 1
                    st.restore_size += node.size
                    seen.update(node.content)
                elif node.subtree is not None:
                    stack.append(node.subtree)
    for blob_id in seen:
        loc = repo.index.lookup(blob_id)
        if loc is not None:
            st.unique_blobs += 1
            st.raw_size += loc.entry.raw_length
            st.stored_size += loc.entry.length
    for _, size in repo.iter_pack_names():
        st.packs += 1
        st.pack_bytes += size
    return st
