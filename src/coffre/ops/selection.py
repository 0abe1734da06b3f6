"""What a restore writes: its include and exclude patterns (sources/patterns.py), and the plan,
a walk of the selection before anything is written.

The plan counts the files and bytes to restore (the progress totals), notes the folders that
are not selected themselves but hold something selected (the restore goes into those only),
and makes an include that matches nothing an error, with the closest paths of the snapshot as
a hint. The folder listings it reads are kept for the restore that follows, decoded while they
fit in NODES_KEPT_BYTES, then as bytes up to TREES_KEPT_BYTES: a restore reads them once, and
decodes and checks most of them once (decoding them again in the walk that feeds the writers
made a restore of /usr/share, 55,000 files, 10 % slower). On remote storage the listings are
read before the walk, level by level (ops/listings.py), so a restore waits for as many rounds
as the tree is deep rather than one round trip per folder.
"""

from __future__ import annotations

import os

from coffre.core.errors import CoffreError
from coffre.core.i18n import _, ngettext
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node
from coffre.ops.common import load_tree
from coffre.ops.listings import TREE_GAP, read_levels
from coffre.ops.paths import close_paths
from coffre.repository.repo import Repository
from coffre.repository.wholepacks import PackDemand
from coffre.sources.files import Excluder
from coffre.sources.patterns import PathMatcher

# Folder listings read by the plan and kept for the restore that follows: decoded, up to
# NODES_KEPT_BYTES of memory (estimated: a listing of small files takes ~5.3 times its size
# once decoded, 820 bytes an entry), then as bytes.
NODES_KEPT_BYTES = 64 * 1024 * 1024
DECODED_PER_BYTE = 6
TREES_KEPT_BYTES = 64 * 1024 * 1024


class Selection:
    def __init__(self, repo: Repository, includes: list[str], excludes: list[str]) -> None:
        self.repo = repo
        self.excluder = Excluder(excludes)
        self.includes = PathMatcher(includes)
        self.files = 0  # files selected (the plan's count)
        self.bytes = 0
        self._unmatched = {p: PathMatcher([p]) for p in self.includes.patterns}
        self._wanted: set[str] = set()  # folders not selected themselves, holding something selected
        self._trees: dict[bytes, bytes] = {}  # folder listings read ahead
        self._kept: set[bytes] = set()  # those the plan keeps for the restore
        self._kept_bytes = 0
        self._nodes: dict[bytes, list[Node]] = {}  # listings the plan decoded, for the restore
        self._nodes_bytes = 0  # their estimated memory
        self._unreadable = False  # the plan met a folder it could not read
        # Remote storage: what the restore will read of each pack (some are then read whole).
        self.demand = PackDemand(repo.index) if repo.backend.remote else None

    # -- questions of the restore -----------------------------------------------------------------
    def covered(self, at: str) -> bool:
        """Whether everything under `at` ('' for the whole snapshot) is selected."""
        return not self.includes or (bool(at) and self.includes.matches_or_under(os.fsencode(at)))

    def excluded(self, path: bytes) -> bool:
        return self.excluder.excluded(path)

    def selected(self, path: bytes, covered: bool) -> bool:
        return covered or self.includes.matches(path)

    def wanted(self, path: str) -> bool:
        """Whether the restore goes into this folder, which is not selected itself."""
        return path in self._wanted

    def tree(self, tree_id: bytes) -> list[Node]:
        """A folder's entries for the restore: its listing as read ahead, else read now."""
        nodes = self._nodes.pop(tree_id, None)
        if nodes is not None:
            return nodes  # the same folder met again is read again
        data = self._trees.pop(tree_id, None)
        if data is not None and tree_id in self._kept:
            self._kept.discard(tree_id)
            self._kept_bytes -= len(data)
        nodes = load_tree(self.repo, tree_id, data)
        if self.repo.backend.remote:
            self.read_ahead(nodes)  # what the levels read before the walk did not hold
        return nodes

    def read_ahead(self, nodes: list[Node]) -> None:
        """Remote storage: read a folder's subfolder listings together (grouped by pack)
        rather than one round trip each; what cannot be read is read again, and reported,
        when its folder comes."""
        ids = [n.subtree for n in nodes if n.type == "dir" and n.subtree is not None
               and n.subtree not in self._trees and n.subtree not in self._nodes]
        if len(ids) > 1:
            for tree_id, data in zip(ids, self.repo.load_many(ids, gap=TREE_GAP), strict=True):
                if isinstance(data, bytes):
                    self._trees[tree_id] = data

    # -- the plan ---------------------------------------------------------------------------------
    def plan(self, snap: Snapshot, at: str = "", node: Node | None = None) -> None:
        """Walk the selection of the snapshot (or of the folder or file `node` at `at`) before
        anything is written. CoffreError if an include matches nothing."""
        covered = self.covered(at)
        above = at
        while above:  # SNAPSHOT:PATH: patterns matching PATH or a folder above it
            self._note(os.fsencode(above))
            above = above.rsplit("/", 1)[0]
        if node is None or node.type == "dir":
            try:
                tree = snap.tree if node is None else node.subtree
                if tree is not None and self.repo.backend.remote:
                    self._read_levels(tree)
                nodes = self._plan_tree(tree) if tree is not None else []
            except CoffreError:
                nodes, self._unreadable = [], True  # reported by the restore
        else:
            nodes, at = [node], at.rsplit("/", 1)[0]
        self._plan(nodes, at, covered)
        if self._unmatched and not self._unreadable:  # else the damage is the error
            self._refuse(snap, list(self._unmatched))

    def _refuse(self, snap: Snapshot, missing: list[str]) -> None:
        hints = []
        for pattern in missing:
            close = close_paths(self.repo, snap, pattern)
            if close:
                hints.append(_("closest paths to {pattern}: {paths}").format(
                    pattern=pattern, paths=", ".join(close)))
        raise CoffreError(
            ngettext("--include {patterns} matches nothing in snapshot {id}; nothing was restored",
                     "--include {patterns} match nothing in snapshot {id}; nothing was restored",
                     len(missing)).format(patterns=", ".join(missing), id=snap.id[:8]),
            "; ".join(hints) or _("list the snapshot's files: coffre ls {id}").format(id=snap.id[:8]))

    def _plan(self, nodes: list[Node], prefix: str, covered: bool) -> bool:
        """Count what the restore will write below prefix; True if anything is selected."""
        found = False
        for node in nodes:
            path = prefix + "/" + os.fsdecode(node.name)
            bpath = os.fsencode(path)
            if self.excluder.excluded(bpath):
                continue
            selected = self._included(bpath, covered)
            if node.type == "dir" and node.subtree is not None:
                try:
                    below = self._plan(self._plan_tree(node.subtree), path, selected)
                except CoffreError:
                    below = self._unreadable = True  # go in: the damage is reported there
                if below and not selected:
                    self._wanted.add(path)
                found = found or selected or below
            elif selected:
                found = True
                if node.type == "file":
                    self.files += 1
                    self.bytes += node.size
                    if self.demand is not None:
                        self.demand.add(node.content)
        return found

    def _included(self, path: bytes, covered: bool) -> bool:
        """Whether this path is selected (covered: a folder above it is); notes which include
        patterns match it, so that one matching nothing at all is known."""
        if covered:
            if self._unmatched:
                self._note(path)
            return True
        if not self.includes.matches(path):
            return False
        self._note(path)
        return True

    def _note(self, path: bytes) -> None:
        for pattern, matcher in list(self._unmatched.items()):
            if matcher.matches(path):
                del self._unmatched[pattern]

    def _read_levels(self, root: bytes) -> None:
        """Remote storage: every folder listing under `root` read ahead (ops/listings.py),
        while they fit in TREES_KEPT_BYTES. What cannot be read here is read again, and
        reported, when its folder comes."""
        read_levels(self.repo, [root], self._trees, TREES_KEPT_BYTES)

    def _plan_tree(self, tree_id: bytes) -> list[Node]:
        """A folder's entries for the plan, keeping its listing for the restore while it fits."""
        nodes = self._nodes.get(tree_id)
        if nodes is not None:
            return nodes
        data = self._trees.get(tree_id)
        if data is None:
            data = self.repo.load_blob(tree_id)
        cost = len(data) * DECODED_PER_BYTE
        if self._nodes_bytes + cost <= NODES_KEPT_BYTES:
            nodes = load_tree(self.repo, tree_id, data)  # a damaged listing: nothing kept
            self._nodes[tree_id] = nodes
            self._nodes_bytes += cost
            self._trees.pop(tree_id, None)  # read ahead (remote): its bytes are no longer needed
            return nodes
        if tree_id not in self._kept:
            if self._kept_bytes + len(data) <= TREES_KEPT_BYTES:
                self._trees[tree_id] = data
                self._kept.add(tree_id)
                self._kept_bytes += len(data)
            else:  # read ahead (remote) but beyond what is kept: read again when restored
                self._trees.pop(tree_id, None)
        return load_tree(self.repo, tree_id, data)
