"""Forget: apply a retention policy (and an optional size budget) to the snapshots."""

from __future__ import annotations

from collections import Counter

from coffre.core.errors import StorageFull
from coffre.core.i18n import ngettext
from coffre.format.pack import BlobEntry
from coffre.format.snapshot import Snapshot
from coffre.ops.common import Reporter, quiet, reachable
from coffre.ops.prune import worth_repacking
from coffre.policy.retention import Decision, Policy, SnapInfo, apply_policy, apply_size_budget
from coffre.repository.packer import header_size
from coffre.repository.repo import Repository
from coffre.repository.tombstones import save_tombstones
from coffre.storage.base import Handle


class SizeModel:
    """The repository size (the sum of its pack files) that prune would leave if only some
    snapshots were kept, with the `fixed` ones (outside the forget filter) always kept.

    As prune does: a pack with no used blob is deleted, a pack worth repacking shrinks to its
    used blobs and a header, any other pack stays whole. Kept up to date incrementally from
    blob reference counts; only the packs whose use changed are weighed again."""

    def __init__(self, repo: Repository, snaps: list[Snapshot], fixed: list[Snapshot]) -> None:
        self.repo = repo
        self.blobs: dict[str, set[bytes]] = {s.id: reachable(repo, s.tree) for s in [*snaps, *fixed]}
        self.fixed = {s.id for s in fixed}
        self.index = repo.index.packs()
        self.stored = {bytes.fromhex(name): size for name, size in repo.iter_pack_names()}
        self.refs: Counter[bytes] = Counter()
        self.used: dict[bytes, dict[bytes, BlobEntry]] = {}  # pack -> its used blobs
        self.weight: dict[bytes, int] = {}  # pack -> its size after prune
        self.kept: set[str] = set()
        self.size = 0

    def _use(self, blob: bytes, used: bool, dirty: set[bytes]) -> None:
        loc = self.repo.index.lookup(blob)
        if loc is None:
            return
        in_pack = self.used.setdefault(loc.pack, {})
        if used:
            in_pack[blob] = loc.entry
        else:
            in_pack.pop(blob, None)
        dirty.add(loc.pack)

    def _weigh(self, pack: bytes) -> int:
        used = list(self.used[pack].values())
        if not used:
            return 0
        size = self.stored.get(pack, 0)
        used_bytes = sum(e.length for e in used)
        if worth_repacking(size, used_bytes, len(used), len(self.index.get(pack, []))):
            return used_bytes + header_size(used, self.repo.version)
        return size

    def __call__(self, kept_ids: list[str]) -> int:
        want = set(kept_ids) | self.fixed
        dirty: set[bytes] = set()
        for sid in want - self.kept:
            for b in self.blobs[sid]:
                if self.refs[b] == 0:
                    self._use(b, True, dirty)
                self.refs[b] += 1
        for sid in self.kept - want:
            for b in self.blobs[sid]:
                self.refs[b] -= 1
                if self.refs[b] == 0:
                    self._use(b, False, dirty)
        for pack in dirty:
            new = self._weigh(pack)
            self.size += new - self.weight.get(pack, 0)
            self.weight[pack] = new
        self.kept = want
        return self.size


def plan_forget(
    repo: Repository,
    snaps: list[Snapshot],
    policy: Policy,
    now_ns: int,
    max_size: int = 0,
    others: list[Snapshot] | None = None,
) -> list[Decision]:
    """Decisions for `snaps`. With a size budget, `others` (snapshots this forget does not
    touch, e.g. of other hosts) count in the repository size."""
    infos = [SnapInfo(s.id, s.time_ns, s.hostname, tuple(s.paths), tuple(s.tags)) for s in snaps]
    decisions = apply_policy(infos, policy, now_ns, allow_empty=max_size > 0)
    if max_size > 0:
        decisions = apply_size_budget(decisions, SizeModel(repo, snaps, others or []), max_size)
    return decisions


def remove_snapshots(repo: Repository, ids: list[str], report: Reporter = quiet) -> None:
    """Remove snapshots, after writing a tombstone naming them (docs/design.md §8.1), so that
    the other machines sharing the repository see a forget, not a deletion by the storage.
    On a full medium the tombstone may only fit once the removals have freed some space: it
    is then written after them."""
    if not ids:
        return
    try:
        save_tombstones(repo, ids)
        late = False
    except StorageFull:
        late = True
    for sid in ids:
        repo.backend.remove(Handle("snapshots", sid))
    if late:
        try:
            save_tombstones(repo, ids)
        except StorageFull:
            report(ngettext(
                "warning: the medium is full: the record of this forget ({n} snapshot) could not be written; "
                "the other machines that use this repository will report this snapshot as vanished "
                "('coffre acknowledge' there accepts it)",
                "warning: the medium is full: the record of this forget ({n} snapshots) could not be "
                "written; "
                "the other machines that use this repository will report these snapshots as vanished "
                "('coffre acknowledge' there accepts it)", len(ids)).format(n=len(ids)))
