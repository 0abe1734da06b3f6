"""`coffre find`: which versions of a file the snapshots hold.

Patterns follow sources/patterns.py (a pattern without '/' matches file names, `*` never crosses
'/', `**` does, a leading '/' anchors); a folder matches as itself, and is searched inside as
well. Optionally without regard to case (names are compared lowercased).

Speed: most of a folder's snapshots share its listing (unchanged folders keep their tree id),
so what a folder holds that matches is remembered by (tree id, path): a folder shared by a
hundred snapshots is read and matched once. Matches are grouped by path, then by version
(type, size, modification time, content): a file unchanged across thirty snapshots is one
version, found in thirty snapshots.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from coffre.core.errors import CoffreError
from coffre.core.i18n import _
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node
from coffre.ops.common import load_tree
from coffre.repository.repo import Repository
from coffre.sources.patterns import PathMatcher

Found = tuple[tuple[str, Node], ...]
NOTHING: Found = ()


@dataclass
class Version:
    """One version of a path: its entry, and the snapshots that hold it (oldest first)."""

    node: Node
    snapshots: list[Snapshot] = field(default_factory=list)


@dataclass
class FindResult:
    searched: int = 0  # snapshots searched
    trees_read: int = 0  # folder listings read (each once)
    matches: dict[str, list[Version]] = field(default_factory=dict)  # path -> versions
    errors: list[str] = field(default_factory=list)

    @property
    def versions(self) -> int:
        return sum(len(v) for v in self.matches.values())


class Finder:
    def __init__(self, repo: Repository, patterns: list[str], ignore_case: bool = False) -> None:
        self.repo = repo
        self.ignore_case = ignore_case
        self.matcher = PathMatcher([p.lower() for p in patterns] if ignore_case else patterns)
        self._found: dict[tuple[bytes, str], Found] = {}
        self.result = FindResult()

    def _matches(self, path: str) -> bool:
        return self.matcher.matches(os.fsencode(path.lower() if self.ignore_case else path))

    def _search(self, tree_id: bytes, prefix: str) -> Found:
        """What matches in this folder and below (remembered by tree id and path)."""
        key = (tree_id, prefix)
        found = self._found.get(key)
        if found is not None:
            return found
        try:
            nodes = load_tree(self.repo, tree_id)
        except CoffreError as exc:
            self.result.errors.append(_("{path}: folder contents cannot be read ({reason})").format(
                path=prefix or "/", reason=exc.message))
            nodes = []
        self.result.trees_read += 1
        out: list[tuple[str, Node]] = []
        for node in nodes:
            path = prefix + "/" + os.fsdecode(node.name)
            if self._matches(path):
                out.append((path, node))
            if node.type == "dir" and node.subtree is not None:
                out.extend(self._search(node.subtree, path))
        found = tuple(out) if out else NOTHING
        self._found[key] = found
        return found

    def run(self, snaps: list[Snapshot]) -> FindResult:
        """Search these snapshots (oldest first)."""
        for snap in sorted(snaps, key=lambda s: (s.time_ns, s.id)):
            self.result.searched += 1
            for path, node in self._search(snap.tree, ""):
                versions = self.result.matches.setdefault(path, [])
                for version in versions:
                    if _same(version.node, node):
                        version.snapshots.append(snap)
                        break
                else:
                    versions.append(Version(node, [snap]))
        self.result.matches = dict(sorted(self.result.matches.items()))
        return self.result


def _same(a: Node, b: Node) -> bool:
    return ((a.type, a.size, a.mtime_ns, a.content, a.target)
            == (b.type, b.size, b.mtime_ns, b.content, b.target))
