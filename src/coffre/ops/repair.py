"""Repair index: rebuild every index file from the pack headers alone."""

from __future__ import annotations

from dataclasses import dataclass, field

from coffre.core.errors import FormatError, ObjectNotFound, StorageError
from coffre.format.pack import BlobEntry
from coffre.ops.common import Reporter, quiet
from coffre.repository.repo import Repository
from coffre.storage.base import Handle


@dataclass
class RepairStats:
    packs: int = 0
    blobs: int = 0
    unreadable: list[str] = field(default_factory=list)
    old_index_files: int = 0


def repair_index(repo: Repository, report: Reporter = quiet) -> RepairStats:
    stats = RepairStats()
    old = repo.list_names("index")
    packs: dict[bytes, list[BlobEntry]] = {}
    for name, size in sorted(repo.iter_pack_names()):
        try:
            entries = repo.read_pack_header(bytes.fromhex(name), size)
        except (FormatError, StorageError) as exc:
            stats.unreadable.append(f"{name}: {exc.message}")
            report(f"pack {name[:12]}: header unreadable ({exc.message}); left out of the index")
            continue
        packs[bytes.fromhex(name)] = entries
        stats.blobs += len(entries)
    stats.packs = len(packs)
    new = repo.save_full_index(packs)
    # New files first, old ones removed after: a crash in between leaves duplicates only.
    for name in old:
        if name in new:
            continue
        try:
            repo.backend.remove(Handle("index", name))
            stats.old_index_files += 1
        except ObjectNotFound:
            pass
    return stats
