"""Shared helpers of the operations: finding snapshots, walking trees, progress reporting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from coffre.core.errors import CoffreError, FormatError, NotFoundInRepository
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node, decode_tree, validate_name
from coffre.repository.repo import Repository

Reporter = Callable[[str], None]


def quiet(_: str) -> None:
    pass


def find_snapshot(
    repo: Repository, ref: str, host: str | None = None, report: Reporter = quiet
) -> Snapshot:
    """'latest' or an id prefix (at least 4 hex characters). A damaged snapshot file is
    reported and passed over, so it never hides the others."""
    damaged: list[str] = []
    snaps = repo.snapshots(errors=damaged)
    for d in damaged:
        report(f"warning: {d} (skipped)")
    if host:
        snaps = [s for s in snaps if s.hostname == host]
    if not snaps:
        raise NotFoundInRepository("the repository has no snapshot yet")
    if ref == "latest":
        return snaps[-1]
    ref = ref.lower()
    if len(ref) < 4:
        raise CoffreError(f"snapshot id {ref!r} is too short", "give at least 4 characters")
    matches = [s for s in snaps if s.id.startswith(ref)]
    if not matches:
        raise NotFoundInRepository(f"no snapshot with id {ref!r}", "list them: coffre snapshots")
    if len(matches) > 1:
        raise CoffreError(f"snapshot id {ref!r} is ambiguous", "give more characters")
    return matches[0]


def load_tree(repo: Repository, tree_id: bytes) -> list[Node]:
    nodes = decode_tree(repo.load_blob(tree_id))
    names = set()
    for n in nodes:
        validate_name(n.name)
        if n.name in names:
            raise FormatError(f"duplicate name {n.name!r} in a tree")
        names.add(n.name)
    return nodes


def reachable(repo: Repository, root: bytes) -> set[bytes]:
    """Every tree and data blob a snapshot tree reaches, with the bases of its delta blobs."""
    seen: set[bytes] = set()
    stack = [root]
    while stack:
        tree = stack.pop()
        if tree in seen:
            continue
        seen.add(tree)
        for node in load_tree(repo, tree):
            for blob in node.content:
                if blob not in seen:
                    seen.add(blob)
                    base = repo.index.base_of(blob)
                    if base is not None:
                        seen.add(base)
            if node.subtree is not None:
                stack.append(node.subtree)
    return seen


def find_node(repo: Repository, tree_id: bytes, path: bytes) -> Node | None:
    """The node at a '/'-separated path inside a snapshot tree."""
    parts = [p for p in path.split(b"/") if p]
    current = tree_id
    node: Node | None = None
    for i, part in enumerate(parts):
        found = next((n for n in load_tree(repo, current) if n.name == part), None)
        if found is None:
            return None
        node = found
        if i < len(parts) - 1:
            if found.type != "dir" or found.subtree is None:
                return None
            current = found.subtree
    return node


@dataclass
class Problems:
    """Errors and warnings collected by an operation that goes on after them."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
