"""The previous version of a file, from the parent snapshot: the base for delta blobs.

The parent is the newest snapshot of the same host and the same source paths, as restic
chooses it: a snapshot of a stream (`--stdin`, `--stdin-from-command`) or of databases only
never becomes the parent of a files backup, nor hides the files snapshot it follows. The
database dumps beside the files do not count in the comparison (adding or dropping a
`--sqlite` keeps the files' parent); each dump's previous version comes from the newest
snapshot of the host that holds that dump. Trees are read lazily, only for files that
changed, and only a few are kept in memory (the walk is depth-first, so recent folders are
the ones asked for again).
"""

from __future__ import annotations

from collections import OrderedDict

from coffre.core.errors import CoffreError
from coffre.format.snapshot import DATABASES_DIR, Snapshot
from coffre.format.tree import Node
from coffre.ops.common import load_tree
from coffre.policy.timeline import choose_latest
from coffre.repository.repo import Repository

TREES_KEPT = 64


def source_paths(paths: list[str]) -> list[str]:
    """A snapshot's paths without its database dumps: the files or the stream it holds."""
    return sorted(p for p in paths if not p.startswith(DATABASES_DIR + "/"))


def find_parent(repo: Repository, host: str, paths: list[str],
                snaps: list[Snapshot] | None = None) -> Snapshot | None:
    """The newest readable snapshot of this host and these source paths (dumps aside), as
    'latest' is chosen: one dated in the future (a wrong clock) does not displace the real
    newest. A backup of databases only has as parent the newest of the same databases."""
    sources = source_paths(paths)
    snaps = repo.snapshots(errors=[]) if snaps is None else snaps
    if sources:
        same = [s for s in snaps if s.hostname == host and source_paths(s.paths) == sources]
    else:
        same = [s for s in snaps if s.hostname == host and sorted(s.paths) == sorted(paths)]
    return _newest(repo, same)


def find_dump_sources(repo: Repository, host: str, paths: list[str],
                      snaps: list[Snapshot] | None = None) -> dict[str, Snapshot]:
    """For each dump among `paths` (databases/NAME), the newest snapshot of this host that
    holds it: its previous version."""
    if not any(p.startswith(DATABASES_DIR + "/") for p in paths):
        return {}
    snaps = [s for s in (repo.snapshots(errors=[]) if snaps is None else snaps) if s.hostname == host]
    out = {}
    for path in paths:
        if path.startswith(DATABASES_DIR + "/"):
            found = _newest(repo, [s for s in snaps if path in s.paths])
            if found is not None:
                out["/" + path] = found
    return out


def _newest(repo: Repository, snaps: list[Snapshot]) -> Snapshot | None:
    return choose_latest(snaps, repo.clock.now_ns()).chosen if snaps else None


class PreviousVersions:
    def __init__(self, repo: Repository, parent: Snapshot | None,
                 dumps: dict[str, Snapshot] | None = None) -> None:
        self.repo = repo
        self.parent = parent
        self.dumps = dumps or {}  # "/databases/NAME" -> the snapshot holding its last version
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
        snap = self.dumps.get(path.decode("utf-8", "surrogateescape"), self.parent)
        if snap is None:
            return None
        parts = [p for p in path.split(b"/") if p]
        if not parts:
            return None
        try:
            tree_id: bytes | None = snap.tree
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
