"""The damage register: which stored blobs `check` found damaged, remembered in this
machine's cache of the repository.

Why: a damaged blob stays in the index, so without this every later backup would keep
pointing at it. The next backup treats the damaged copies as absent and stores those
pieces again from the live files (restic's and borg's "heal"); prune copies the intact
blobs out of a damaged pack and lets the pack go. Only authenticated failures are recorded
(bytes that do not match their name or tag, read twice), never an I/O error. Losing the
register costs the heal, never data: `backup --verify` and `check` find the damage again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from coffre.repository.cache import RepoCache, repo_cache_path

PACK_ITSELF = b""  # the blob id under which a damaged pack is recorded


class DamageRegister:
    def __init__(self, cache: RepoCache) -> None:
        self.db = cache.db

    def _create(self) -> None:
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS damaged (pack BLOB NOT NULL, blob BLOB NOT NULL,"
            " PRIMARY KEY (pack, blob))"
        )

    def update(self, examined: Iterable[bytes], damaged: dict[bytes, list[bytes]]) -> None:
        """Replace what is known of the packs just examined: `damaged` maps each damaged pack
        to its damaged blobs (the others examined were found intact). A pack whose bytes do
        not match its name is recorded even when all its blobs are intact (a damaged header):
        under the pack-level marker PACK_ITSELF."""
        with self.db:
            self._create()
            for pack in {*examined, *damaged}:
                self.db.execute("DELETE FROM damaged WHERE pack = ?", (pack,))
            self.db.executemany(
                "INSERT OR IGNORE INTO damaged VALUES (?, ?)",
                [(pack, blob) for pack, blobs in damaged.items() for blob in blobs],
            )

    def forget_packs(self, packs: Iterable[bytes]) -> None:
        """Packs that are gone from the repository (deleted by prune)."""
        with self.db:
            self._create()
            self.db.executemany("DELETE FROM damaged WHERE pack = ?", [(p,) for p in packs])

    def pairs(self) -> set[tuple[bytes, bytes]]:
        """Every (pack id, blob id) known to be damaged (blob PACK_ITSELF: the pack as such).
        Only reads: a backup's start writes nothing here."""
        return _pairs(self.db)


def _pairs(db: sqlite3.Connection) -> set[tuple[bytes, bytes]]:
    known = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'damaged'").fetchone()
    if not known:
        return set()
    return {(bytes(p), bytes(b)) for p, b in db.execute("SELECT pack, blob FROM damaged")}


def known_damage(repo_id: bytes) -> set[tuple[bytes, bytes]]:
    """The register of this repository on this machine (empty if it has no cache yet), read
    without writing anything (no cache is created, nothing is synced to disk)."""
    path = repo_cache_path(repo_id) / "cache.sqlite"
    if not path.exists():
        return set()
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=120)
    except sqlite3.Error:
        return set()
    try:
        return _pairs(db)
    except sqlite3.Error:
        return set()  # losing the register costs the heal, never data
    finally:
        db.close()
