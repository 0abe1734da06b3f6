"""Paths inside a snapshot as a person types them.

A snapshot of /srv/officine holds /srv/officine/scans: `ls latest /srv/officine/scans` names it
in full, and `ls latest scans` relative to the snapshot's sources (each source path it backed
up, and its top level, where standard input and the databases' folder are). A relative path
found under several sources is ambiguous: the error names each candidate. A path that is not
there is an error with the closest existing paths as a hint (difflib on the snapshot's paths).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator

from coffre.core.errors import CoffreError
from coffre.core.i18n import _
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node
from coffre.ops.common import file_sources, find_node, load_tree
from coffre.repository.repo import Repository

CLOSE_MATCHES = 3
# Paths compared for a hint at most: a hint on a huge snapshot must not take minutes.
HINT_PATHS = 200_000


def clean(path: str) -> str:
    """The path without repeated or trailing '/' ('' for the root)."""
    absolute = path.startswith("/")
    parts = [p for p in path.split("/") if p and p != "."]
    joined = "/".join(parts)
    return "/" + joined if absolute and joined else ("" if absolute else joined)


def candidates(snap: Snapshot, path: str) -> list[str]:
    """The absolute paths a path may stand for in this snapshot: itself when absolute, else
    under each source and under the top level."""
    path = clean(path)
    if path.startswith("/") or not path:
        return [path]
    out = [s.rstrip("/") + "/" + path for s in file_sources(snap)] + ["/" + path]
    return list(dict.fromkeys(out))


def resolve(repo: Repository, snap: Snapshot, path: str) -> tuple[str, Node | None]:
    """The absolute path (in the snapshot) and node a path names; ('', None) for the root.
    CoffreError if it is not there or is ambiguous."""
    wanted = clean(path)
    if not wanted:
        return "", None
    found: list[tuple[str, Node]] = []
    for candidate in candidates(snap, wanted):
        node = find_node(repo, snap.tree, os.fsencode(candidate))
        if node is not None:
            found.append((candidate, node))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise CoffreError(
            _("{path} is ambiguous in snapshot {id}: it may be {candidates}").format(
                path=path, id=snap.id[:8], candidates=", ".join(p for p, _n in found)),
            _("give the full path"))
    raise not_found(repo, snap, path)


def not_found(repo: Repository, snap: Snapshot, path: str) -> CoffreError:
    close = close_paths(repo, snap, path)
    hint = _("the closest paths in it: {paths}").format(paths=", ".join(close)) if close else None
    return CoffreError(_("{path}: not in snapshot {id}").format(path=path, id=snap.id[:8]), hint)


def close_paths(repo: Repository, snap: Snapshot, wanted: str, n: int = CLOSE_MATCHES) -> list[str]:
    """The snapshot's paths closest to `wanted` (a path or a pattern): compared in full when it
    is absolute, else relative to the sources. Returned as absolute paths."""
    wanted = clean(wanted) or "/"
    relative = not wanted.startswith("/")
    sources = sorted((s.rstrip("/") for s in file_sources(snap)), key=len, reverse=True)
    keys: dict[str, str] = {}
    by_name: dict[str, str] = {}
    for i, path in enumerate(_walk(repo, snap.tree, "")):
        if i >= HINT_PATHS:
            break
        key = path
        if relative:
            key = next((path[len(s) + 1 :] for s in sources if path.startswith(s + "/")), path[1:])
        keys.setdefault(key, path)
        by_name.setdefault(path.rsplit("/", 1)[-1], path)
    close = [keys[k] for k in difflib.get_close_matches(wanted, list(keys), n=n, cutoff=0.6)]
    if len(close) < n and "/" in wanted.strip("/"):  # a mistyped file name in a right folder
        name = wanted.rsplit("/", 1)[-1]
        for k in difflib.get_close_matches(name, list(by_name), n=n, cutoff=0.6):
            if by_name[k] not in close:
                close.append(by_name[k])
    return close[:n]


def _walk(repo: Repository, tree_id: bytes, prefix: str) -> Iterator[str]:
    try:
        nodes = load_tree(repo, tree_id)
    except CoffreError:
        return  # a damaged folder: its paths give no hint
    for node in nodes:
        path = prefix + "/" + os.fsdecode(node.name)
        yield path
        if node.type == "dir" and node.subtree is not None:
            yield from _walk(repo, node.subtree, path)
