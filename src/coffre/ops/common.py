"""Shared helpers of the operations: finding snapshots, walking trees, progress reporting."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from coffre.core.errors import CoffreError, FormatError, NotFoundInRepository, ObjectNotFound, StorageError
from coffre.core.i18n import _, ngettext
from coffre.format.pack import BlobEntry
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node, decode_tree, validate_name
from coffre.policy.timeline import choose_latest, future_warning
from coffre.repository.index import MasterIndex
from coffre.repository.repo import Repository
from coffre.repository.trash import load_trash

Reporter = Callable[[str], None]


def quiet(_: str) -> None:
    pass


def find_snapshot(
    repo: Repository, ref: str, host: str | None = None, report: Reporter = quiet,
    paths: list[str] | None = None, files: bool = False, named: str | None = None,
) -> Snapshot:
    """'latest' or an id prefix (at least 4 hex characters). A damaged snapshot file is
    reported and passed over, so it never hides the others. 'latest' is the newest snapshot
    not dated in the future (policy.timeline), with a warning naming those that are.

    `host` and `paths` (absolute; a snapshot qualifies when each is one of its sources or
    inside one) narrow the choice, as restic's --host and --path do. `files`: the command
    reads files, so 'latest' is the newest snapshot that holds files: a snapshot of standard
    input or of databases only never hides it (when there are only such snapshots, the newest
    of them). `named`: 'latest' is the newest snapshot that recorded this name (a file of
    standard input, '@databases')."""
    damaged: list[str] = []
    snaps = repo.snapshots(errors=damaged)
    for d in damaged:
        report(_("warning: {problem} (skipped)").format(problem=d))
    if not snaps:
        raise NotFoundInRepository(_("the repository has no snapshot yet"))
    if host:
        snaps = [s for s in snaps if s.hostname == host]
        if not snaps:
            raise NotFoundInRepository(_("no snapshot of host {host}").format(host=host),
                                       _("list them: coffre snapshots"))
    if paths:
        wanted = [os.path.normpath(os.path.abspath(p)) for p in paths]
        snaps = [s for s in snaps if holds_paths(s, wanted)]
        if not snaps:
            raise NotFoundInRepository(
                _("no snapshot holds {paths}").format(paths=", ".join(wanted)),
                _("list them: coffre snapshots"))
    if ref == "latest":
        if named is not None:
            snaps = [s for s in snaps
                     if any(p.split("/")[0] == named for p in s.paths if not p.startswith("/"))]
            if not snaps:
                raise NotFoundInRepository(_("no snapshot holds {paths}").format(paths=named),
                                           _("list them: coffre snapshots"))
        elif files and not paths:
            # Only snapshots of standard input or databases: nothing to hide, the newest of all.
            snaps = [s for s in snaps if file_sources(s)] or snaps
        now = repo.clock.now_ns()
        choice = choose_latest(snaps, now)
        if choice.future:
            report(future_warning(choice.future, now, choice.chosen, total=len(snaps)))
        return choice.chosen
    ref = ref.lower()
    if len(ref) < 4:
        raise CoffreError(_("snapshot id {id!r} is too short").format(id=ref),
                          _("give at least 4 characters"))
    matches = [s for s in snaps if s.id.startswith(ref)]
    if not matches:
        raise NotFoundInRepository(_("no snapshot with id {id!r}").format(id=ref),
                                   _("list them: coffre snapshots"))
    if len(matches) > 1:
        raise CoffreError(_("snapshot id {id!r} is ambiguous").format(id=ref), _("give more characters"))
    return matches[0]


def file_sources(snap: Snapshot) -> list[str]:
    """The folders and files a snapshot backed up (absolute paths); not its standard input
    or databases, which are recorded under plain names."""
    return [p for p in snap.paths if p.startswith("/")]


def holds_paths(snap: Snapshot, paths: list[str]) -> bool:
    """Whether each absolute path is one of the snapshot's sources or inside one."""
    sources = file_sources(snap)
    return all(any(p == s or p.startswith(s.rstrip("/") + "/") for s in sources) for p in paths)


def load_tree(repo: Repository, tree_id: bytes, data: bytes | None = None) -> list[Node]:
    """A folder's entries, validated; `data`: the tree's bytes when already read (load_many)."""
    nodes = decode_tree(data if data is not None else repo.load_blob(tree_id))
    # Every name checked at once (a year's check and prune read ~70,000); one node at a
    # time only to word what is wrong.
    names = [n.name for n in nodes]
    unique = set(names)
    joined = b"".join(names)
    if (len(unique) != len(names) or b"/" in joined or b"\0" in joined
            or b"." in unique or b".." in unique or b"" in unique):
        seen = set()
        for n in nodes:
            validate_name(n.name)
            if n.name in seen:
                raise FormatError(f"duplicate name {n.name!r} in a tree")
            seen.add(n.name)
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


def rescue_if_pruned(repo: Repository, used: set[bytes], report: Reporter) -> None:
    """Before a commit: if a prune rewrote the index while we ran, blobs we deduplicated
    against may have been moved to the trash. Re-publish the packs that hold them
    (docs/design.md §6.5); fail if some are already gone."""
    current = set(repo.list_names("index"))
    if repo.index.loaded_files <= current:
        return
    fresh = MasterIndex()
    repo.load_index(into=fresh)
    missing = {b for b in used if b not in fresh}
    if not missing:
        return
    rescued: dict[bytes, list[BlobEntry]] = {}
    for record in load_trash(repo):
        for pack_id in record.packs:
            try:
                entries = repo.read_pack_header(pack_id)
            except (ObjectNotFound, FormatError, StorageError):
                continue  # gone, or its header damaged: another trashed pack may hold the blob
            if any(e.id in missing for e in entries):
                rescued[pack_id] = entries
                missing -= {e.id for e in entries}
    if missing:
        raise CoffreError(
            ngettext("{count} piece of data this run relies on was deleted meanwhile",
                     "{count} pieces of data this run relies on were deleted meanwhile",
                     len(missing)).format(count=len(missing)),
            _("run it again"),
        )
    if rescued:
        repo.save_index(rescued)
        report(ngettext("re-published {count} pack that a concurrent prune had trashed",
                        "re-published {count} packs that a concurrent prune had trashed",
                        len(rescued)).format(count=len(rescued)))
