"""Compare two repositories holding copies of each other (`check --against`): whether both
hold the same snapshots, and the same data for each.

Snapshots are matched by origin (a copy records the id of the snapshot it came from). For a
pair:
- with shared content keys, the copy's tree must be the original's tree (the same id means
  the same files, down to every byte);
- with independent keys, both trees are walked side by side: same names, types, sizes,
  modes and times (contents are then vouched for by each repository's own
  `check --read-data`, which authenticates every piece against its id).
Either way, every piece the copy needs must be in the copy's index, in a pack that its
storage lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from coffre.core.errors import CoffreError
from coffre.core.i18n import _, ngettext
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node
from coffre.ops.common import load_tree, reachable
from coffre.ops.copy import shares_content_keys
from coffre.repository.repo import Repository


@dataclass
class Comparison:
    same: list[tuple[Snapshot, Snapshot]] = field(default_factory=list)
    differing: list[tuple[Snapshot, Snapshot, str]] = field(default_factory=list)
    only_here: list[Snapshot] = field(default_factory=list)
    only_there: list[Snapshot] = field(default_factory=list)
    shared_keys: bool = False

    @property
    def ok(self) -> bool:
        """Every snapshot here is there too, with the same data (extra ones there are fine:
        an off-site copy often keeps a longer history)."""
        return not self.only_here and not self.differing


def compare(here: Repository, there: Repository) -> Comparison:
    result = Comparison(shared_keys=shares_content_keys(here, there))
    theirs = {s.original or s.id: s for s in there.snapshots(errors=[])}
    mine = here.snapshots(errors=[])
    stored = {bytes.fromhex(name) for name, _size in there.iter_pack_names()}
    matched = set()
    for snap in mine:
        origin = snap.original or snap.id
        other = theirs.get(origin)
        if other is None:
            result.only_here.append(snap)
            continue
        matched.add(origin)
        try:
            reason = _difference(here, snap, there, other, result.shared_keys, stored)
        except CoffreError as exc:
            reason = _("cannot be compared: {reason}").format(reason=exc.message)
        if reason:
            result.differing.append((snap, other, reason))
        else:
            result.same.append((snap, other))
    result.only_there = [s for origin, s in theirs.items() if origin not in matched]
    return result


def _difference(
    here: Repository, a: Snapshot, there: Repository, b: Snapshot, shared: bool, stored: set[bytes]
) -> str:
    if shared and a.tree != b.tree:
        return _("the copy's files differ from the original's")
    if not shared:
        found = _walk(here, a.tree, there, b.tree, "")
        if found:
            return found
    missing = [x for x in reachable(there, b.tree)
               if (loc := there.index.lookup(x)) is None or loc.pack not in stored]
    if missing:
        return ngettext("{n} piece of data is missing from the copy",
                        "{n} pieces of data are missing from the copy",
                        len(missing)).format(n=len(missing))
    return ""


def _walk(here: Repository, a_tree: bytes, there: Repository, b_tree: bytes, prefix: str) -> str:
    a_nodes = {n.name: n for n in load_tree(here, a_tree)}
    b_nodes = {n.name: n for n in load_tree(there, b_tree)}
    for name in sorted(a_nodes.keys() | b_nodes.keys()):
        path = f"{prefix}/{os.fsdecode(name)}"
        a, b = a_nodes.get(name), b_nodes.get(name)
        if a is None or b is None:
            only = _("{path} is only in the copy") if a is None else _("{path} is only in the original")
            return only.format(
                path=path)
        if _describe(a) != _describe(b):
            return _("{path} differs (type, size, mode or time)").format(path=path)
        if a.subtree is not None and b.subtree is not None:
            found = _walk(here, a.subtree, there, b.subtree, path)
            if found:
                return found
    return ""


def _describe(n: Node) -> tuple[object, ...]:
    return (n.type, n.size, n.mode, n.mtime_ns, n.target, n.xattrs)
