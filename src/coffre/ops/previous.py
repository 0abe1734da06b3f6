"""The previous version of a file, from the parent snapshot: the base for delta blobs.

The parent is the newest snapshot of the same host and the same source paths. Its trees are
read lazily, only for files that changed, and only a few are kept in memory (the walk is
depth-first, so recent folders are the ones asked for again).
"""

from __future__ import annotations

from collections import OrderedDict

from coffre.core.errors import CoffreError
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node
from coffre.ops.common import load_tree
from coffre.policy.timeline import choose_latest
from coffre.repository.repo import Repository

TREES_KEPT = 64


def find_parent(repo: Repository, host: str, paths: list[str]) -> Snapshot | None:
    """The newest readable snapshot of this host and these paths, as 'latest' is chosen: one
    dated in the future (a wrong clock) does not displace the real newest."""
    same = [s for s in repo.snapshots(errors=[]) if s.hostname == host and sorted(s.paths) == sorted(paths)]
    return choose_latest(same, repo.clock.now_ns()).chosen if same else None


class PreviousVersions:
    def __init__(self, repo: Repository, parent: Snapshot | None) -> None:
        self.repo = repo
        self.parent = parent
        self._trees: OrderedDict[bytes, dict[bytes, Node]] = OrderedDict()

    def _tree(self, tree_id: bytes) -> dict[bytes, Node]:
        found = self._trees.get(tree_id)
        if found is None:
            found = {n.name: n for n in load_tree(self.repo, tree_id)}
            self._trees[tree_id] = found
            if len(self._trees) > TREES_KEPT:
                self._trees.popitem(last=False)
        else:
            self._trees.move_to_end(tree_id)
        return found

    def content(self, path: bytes) -> list[tuple[bytes, int]] | None:
        """(blob id, length) of the file at this absolute path in the parent snapshot, or None
        if it had no such file (or it cannot be read: a delta is an optimisation only)."""
        if self.parent is None:
            return None
        parts = [p for p in path.split(b"/") if p]
        if not parts:
            return None
        try:
            tree_id: bytes | None = self.parent.tree
            node: Node | None = None
            for part in parts:
                if tree_id is None:
                    return None
                node = self._tree(tree_id).get(part)
                if node is None:
                    return None
                tree_id = node.subtree
        except CoffreError:
            return None
        if node is None or node.type != "file":
            return None
        out = []
        for blob_id in node.content:
            loc = self.repo.index.lookup(blob_id)
            if loc is None:
                return None
            out.append((blob_id, loc.entry.raw_length))
        return out
