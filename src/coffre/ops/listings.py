"""Folder listings read ahead from remote storage, where each request costs a round trip.

Folder listings (trees) lie among the data in the packs. Walking a snapshot folder by folder
would wait for one round trip per folder; instead every listing under the roots is read level
by level: each level's listings at once, grouped by pack (neighbours within TREE_GAP with one
request), READ_AHEAD_STREAMS requests in flight. A walk then waits for as many rounds
as the tree is deep. Used by the restore's plan (ops/selection.py) and by copy (ops/copy.py).
Everything read is checked against its id (load_many).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from coffre.core.errors import CoffreError
from coffre.ops.common import load_tree
from coffre.repository.repo import Repository

# Folder listings lie among the data: read ahead together only when this close in a pack.
TREE_GAP = 64 * 1024
# Requests in flight while the listings of one level are read.
READ_AHEAD_STREAMS = 8


def read_levels(repo: Repository, roots: list[bytes], into: dict[bytes, bytes], limit: int) -> None:
    """Every folder listing under `roots` into `into` (tree id -> bytes), level by level,
    while the bytes read fit in `limit`. A listing that cannot be read is left out: its folder's
    walk reads it again, and reports it."""
    held = 0
    level = list(dict.fromkeys(roots))
    with ThreadPoolExecutor(READ_AHEAD_STREAMS) as pool:
        while level:
            wanted = [t for t in level if t not in into]
            for tree_id, data in zip(wanted, _read_at_once(repo, pool, wanted), strict=True):
                if not isinstance(data, bytes):
                    continue
                held += len(data)
                if held > limit:
                    return
                into[tree_id] = data
            below: dict[bytes, None] = {}
            for tree_id in level:
                listing = into.get(tree_id)
                try:
                    nodes = load_tree(repo, tree_id, listing) if listing is not None else []
                except CoffreError:
                    continue
                below.update((n.subtree, None) for n in nodes if n.type == "dir" and n.subtree is not None)
            level = list(below)


def _read_at_once(repo: Repository, pool: ThreadPoolExecutor, ids: list[bytes]) -> list[bytes | CoffreError]:
    """Blobs read with one request per run of neighbours in a pack (Repository.stored_runs,
    within TREE_GAP), the runs READ_AHEAD_STREAMS at a time: one round trip for a level, as few
    requests as its packs allow."""
    located, missing = [], []
    for blob_id in ids:
        loc = repo.index.lookup(blob_id)
        if loc is None:
            missing.append(blob_id)
        else:
            located.append(loc)
    runs = [[loc.entry.id for loc in run] for run in repo.stored_runs(located, TREE_GAP)]
    if missing:
        runs.append(missing)  # load_many says why each cannot be read
    got: dict[bytes, bytes | CoffreError] = {}
    for run, results in zip(runs, pool.map(lambda run: repo.load_many(run, gap=TREE_GAP), runs), strict=True):
        got.update(zip(run, results, strict=True))
    return [got[blob_id] for blob_id in ids]
