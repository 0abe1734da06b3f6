"""Tombstone objects under `forgotten/`: written by `forget` before it removes snapshots, never
removed (docs/design.md §8.1)."""

from __future__ import annotations

from coffre.format.tombstone import MAX_IDS, decode_tombstone, encode_tombstone
from coffre.repository.repo import Repository

KIND = "forgotten"


def save_tombstones(repo: Repository, snapshot_ids: list[str]) -> list[str]:
    """Tombstones naming these snapshots (MAX_IDS per object); their names."""
    ids = sorted(set(snapshot_ids))
    parts = [ids[i : i + MAX_IDS] for i in range(0, len(ids), MAX_IDS)]
    return [repo.save_object(KIND, encode_tombstone(part)) for part in parts]


def load_tombstone(repo: Repository, name: str) -> list[str]:
    """The snapshot ids one tombstone names. FormatError (or IntegrityError) if it is damaged
    or not authentic; ObjectNotFound if it is gone."""
    return decode_tombstone(repo.load_object(KIND, name))


def tombstone_names(repo: Repository) -> list[str]:
    return repo.list_names(KIND)
