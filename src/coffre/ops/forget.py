"""Forget: apply a retention policy (and an optional size budget) to the snapshots."""

from __future__ import annotations

from collections import Counter

from coffre.format.snapshot import Snapshot
from coffre.ops.common import load_tree
from coffre.policy.retention import Decision, Policy, SnapInfo, apply_policy, apply_size_budget
from coffre.repository.repo import Repository
from coffre.storage.base import Handle


class SizeModel:
    """Repository size if only some snapshots were kept: the stored bytes of the blobs they
    reach, computed incrementally from reference counts."""

    def __init__(self, repo: Repository, snaps: list[Snapshot]) -> None:
        self.repo = repo
        self.blobs: dict[str, set[bytes]] = {s.id: self._reach(s) for s in snaps}
        self.refs: Counter[bytes] = Counter()
        self.kept: set[str] = set()
        self.size = 0

    def _reach(self, snap: Snapshot) -> set[bytes]:
        seen: set[bytes] = set()
        stack = [snap.tree]
        while stack:
            tree = stack.pop()
            if tree in seen:
                continue
            seen.add(tree)
            for node in load_tree(self.repo, tree):
                seen.update(node.content)
                if node.subtree is not None:
                    stack.append(node.subtree)
        return seen

    def _stored(self, blob: bytes) -> int:
        loc = self.repo.index.lookup(blob)
        return loc.entry.length if loc else 0

    def __call__(self, kept_ids: list[str]) -> int:
        want = set(kept_ids)
        for sid in want - self.kept:
            for b in self.blobs[sid]:
                if self.refs[b] == 0:
                    self.size += self._stored(b)
                self.refs[b] += 1
        for sid in self.kept - want:
            for b in self.blobs[sid]:
                self.refs[b] -= 1
                if self.refs[b] == 0:
                    self.size -= self._stored(b)
        self.kept = want
        return self.size


def plan_forget(
    repo: Repository, snaps: list[Snapshot], policy: Policy, now_ns: int, max_size: int = 0
) -> list[Decision]:
    infos = [SnapInfo(s.id, s.time_ns, s.hostname, tuple(s.paths), tuple(s.tags)) for s in snaps]
    decisions = apply_policy(infos, policy, now_ns, allow_empty=max_size > 0)
    if max_size > 0:
        decisions = apply_size_budget(decisions, SizeModel(repo, snaps), max_size)
    return decisions


def remove_snapshots(repo: Repository, ids: list[str]) -> None:
    for sid in ids:
        repo.backend.remove(Handle("snapshots", sid))
