"""Repair index: rebuild the index from the packs, never losing an entry it cannot replace
with something at least as good.

- A pack whose header reads gives its entries.
- A pack whose header cannot be read keeps the entries the old index files gave it (its
  blobs may well be intact: restores read blobs by their index entries, not by the header),
  completed by the blobs salvaged from its body (repository/salvage.py).
- A pack the index lists but storage lacks is confirmed gone (one stat each: a listing error
  must not look like loss) before its entries are left out.
- New index files are written first; the old ones are deleted only if the new ones cover
  every blob the old ones placed in a pack that still exists. Otherwise they stay, and the
  repair says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coffre.core.errors import FormatError, ObjectNotFound, StorageError
from coffre.core.i18n import _, ngettext
from coffre.format.index import decode_index
from coffre.format.pack import MAX_PACK, BlobEntry
from coffre.ops.common import Reporter, quiet
from coffre.repository.repo import Repository
from coffre.repository.salvage import salvage_pack
from coffre.storage.base import Handle


@dataclass
class RepairStats:
    packs: int = 0
    blobs: int = 0
    unreadable: list[str] = field(default_factory=list)  # headers that could not be read
    salvaged: int = 0  # blobs found in packs without a readable header
    kept_from_old_index: int = 0  # entries kept from the old index for such packs
    packs_gone: int = 0
    old_index_files: int = 0
    old_index_kept: bool = False
    damaged_index_files: list[str] = field(default_factory=list)


OldIndex = dict[bytes, dict[bytes, BlobEntry]]  # pack -> blob id -> entry


def _old_entries(repo: Repository, stats: RepairStats) -> tuple[list[str], OldIndex]:
    """The old index files, and what the readable ones say: pack -> blob id -> entry."""
    names = repo.list_names("index")
    packs: OldIndex = {}
    for name in names:
        try:
            content = decode_index(repo.load_object("index", name), repo.version)
        except ObjectNotFound:
            continue
        except FormatError as exc:
            stats.damaged_index_files.append(_("{name}: {problem}").format(
                name=name[:12], problem=exc.message))
            continue
        for pid, entries in content.items():
            packs.setdefault(pid, {}).update({e.id: e for e in entries})
    return names, packs


def repair_index(repo: Repository, report: Reporter = quiet) -> RepairStats:
    stats = RepairStats()
    old_names, old = _old_entries(repo, stats)
    stored = dict(repo.iter_pack_names())
    # The old entries serve as delta bases while salvaging.
    for pid, entries in old.items():
        if pid.hex() in stored:
            repo.index.add_pack(pid, list(entries.values()))
    packs: dict[bytes, list[BlobEntry]] = {}
    for name, size in sorted(stored.items()):
        pid = bytes.fromhex(name)
        try:
            packs[pid] = repo.read_pack_header(pid, size)
            continue
        except (FormatError, StorageError) as exc:
            reason = exc.message
        rescued = _rescue(repo, pid, old.get(pid, {}), stats)
        n = len(rescued)
        stats.unreadable.append(ngettext("{name}: header unreadable ({reason}); {n} blob kept or salvaged",
                                         "{name}: header unreadable ({reason}); {n} blobs kept or salvaged",
                                         n).format(name=name, reason=reason, n=n))
        report(ngettext("pack {name}: header unreadable ({reason}); {n} blob kept from the old index or "
                        "salvaged from its body; the pack itself is left in place",
                        "pack {name}: header unreadable ({reason}); {n} blobs kept from the old index or "
                        "salvaged from its body; the pack itself is left in place", n).format(
                            name=name[:12], reason=reason, n=n))
        if rescued:
            packs[pid] = rescued
    for pid in old:
        if pid.hex() not in stored:
            try:
                repo.backend.stat(Handle("data", pid.hex()))
            except ObjectNotFound:
                stats.packs_gone += 1
                continue
            raise FormatError(_("the storage listing lacks pack {name}, which exists; nothing was "
                                "changed").format(
                name=pid.hex()[:12]), _("try again later"))
    stats.packs = len(packs)
    stats.blobs = sum(len(v) for v in packs.values())
    new = repo.save_full_index(packs)
    uncovered = _uncovered(old, packs, stored)
    if uncovered:
        stats.old_index_kept = True
        report(ngettext("the old index files are kept: {n} blob they place in existing packs is not in the "
                        "rebuilt index",
                        "the old index files are kept: {n} blobs they place in existing packs are not in the "
                        "rebuilt index", uncovered).format(n=uncovered))
        return stats
    # New files first, old ones removed after: a crash in between leaves duplicates only.
    for name in old_names:
        if name in new:
            continue
        try:
            repo.backend.remove(Handle("index", name))
            stats.old_index_files += 1
        except ObjectNotFound:
            pass
    return stats


def _rescue(
    repo: Repository, pid: bytes, known: dict[bytes, BlobEntry], stats: RepairStats
) -> list[BlobEntry]:
    """Entries for a pack without a readable header: those the old index gave it, then any
    blob salvaged from its body that they lack."""
    entries = dict(known)
    stats.kept_from_old_index += len(known)
    try:
        if repo.backend.stat(Handle("data", pid.hex())).size > MAX_PACK:
            return list(entries.values())  # larger than any pack Coffre writes: not read
        data = repo.backend.load(Handle("data", pid.hex()))
    except StorageError:
        return list(entries.values())
    for e in salvage_pack(repo, data, [e.offset for e in known.values()]):
        if e.id not in entries:
            entries[e.id] = e
            stats.salvaged += 1
    return sorted(entries.values(), key=lambda e: e.offset)


def _uncovered(old: OldIndex, new: dict[bytes, list[BlobEntry]], stored: dict[str, int]) -> int:
    """Blobs the old index placed in a pack that still exists and the new index lacks."""
    have = {e.id for entries in new.values() for e in entries}
    return sum(1 for pid, entries in old.items() if pid.hex() in stored for b in entries if b not in have)
