"""The folder listings an earlier check decoded, remembered in this machine's cache of the
repository: what each names (its subfolders' listings, its files' blobs), so that the nightly
check of a year of snapshots decodes only the listings it has not met before.

Why: a listing is named by its content, and the snapshots a pharmacy keeps share most of
theirs, but each day's changes make new ones up to the root; after a year the check walked
~1,800 listings every night, each read, decrypted, decompressed, hashed and decoded (half of
its walk, ~0.1 s of a 0.64 s check on the year bench), for the same answer as the night before.

What makes a remembered listing as good as one decoded again (ops/check.py uses it so):
- an entry is for one stored copy, the one it was decoded from: its pack and its place in it
  (offset, lengths, kind, key salt: `place_of`). The index must still give the listing that
  very copy first, or it is decoded again. Only a listing stored once is remembered: with
  several copies, reading falls back to the next when one fails, so the copy decoded is not
  known to be the first;
- that pack's bytes are hashed the same night and must match its name: the bytes are those
  the listing was decoded from, and decoding them again could only give the same listing;
- every entry carries a MAC under the repository's key (`Crypter.mac`): the cache is private
  to its user (core/private.py), but a damaged or forged row is dropped, never trusted.
Whatever is not trusted is decoded as before; losing the table costs one full walk, and a
cache that cannot be read or written only costs the decoding it would have saved.
"""

from __future__ import annotations

import hmac
import sqlite3
import struct
from dataclasses import dataclass
from typing import Annotated

import msgspec

from coffre.crypto.aead import ID_LEN, Crypter
from coffre.format.pack import BlobEntry
from coffre.repository.cache import RepoCache

# v2: the entry's place in its pack is part of it (v1 rows, without it, are replaced).
_MAC_CONTEXT = b"coffre walked listing v2\x00"
_PLACE = struct.Struct("<BQQQ")  # kind, offset, stored length, decoded length; then the salt
_COLUMNS = ("tree", "pack", "place", "names", "mac")
_Id = Annotated[bytes, msgspec.Meta(min_length=ID_LEN, max_length=ID_LEN)]
# What a listing names, as [subtrees, content]: decoded and its ids' lengths checked in C (a
# year's 1,795 listings name ~130,000 ids, one bytes object each).
_decode_names = msgspec.msgpack.Decoder(tuple[list[_Id], list[_Id]]).decode
_encode_names = msgspec.msgpack.Encoder().encode


def place_of(entry: BlobEntry) -> bytes:
    """Where and how a copy lies in its pack, as an index entry gives it."""
    return _PLACE.pack(entry.kind, entry.offset, entry.length, entry.raw_length) + (entry.salt or b"")


@dataclass(frozen=True, slots=True)
class Walked:
    """One listing as decoded from one copy (its pack, and its place there: `place_of`): the
    listings of its subfolders, and the blobs of its files' contents, in order (a blob may
    repeat), kept as the one MessagePack document the table stores and decoded only when
    asked (`names`): a year's listings name ~130,000 ids, ~10 MiB as Python objects, and a
    prune or a check needs each listing once."""

    pack: bytes
    place: bytes
    encoded: bytes

    @classmethod
    def of(cls, pack: bytes, place: bytes, subtrees: list[bytes], content: list[bytes]) -> Walked:
        return cls(pack, place, _encode_names((subtrees, content)))

    def names(self) -> tuple[list[bytes], list[bytes]] | None:
        """(subtrees, content); None if the document does not decode (it authenticates, so
        another version wrote it: the listing is then decoded from its pack)."""
        try:
            return _decode_names(self.encoded)
        except msgspec.DecodeError:
            return None


class WalkedListings:
    def __init__(self, cache: RepoCache, crypter: Crypter) -> None:
        """sqlite3.Error if the cache cannot hold the table (the caller then decodes all)."""
        self.db = cache.db
        self.crypter = crypter
        # tree -> (pack, place) as the table holds them, None for a row not trusted (replaced
        # or removed by `keep`).
        self._stored: dict[bytes, tuple[bytes, bytes] | None] = {}
        columns = [row[1] for row in self.db.execute("PRAGMA table_info(checked_listings)")]
        with self.db:
            if columns and tuple(columns) != _COLUMNS:  # an earlier version's table
                self.db.execute("DROP TABLE checked_listings")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS checked_listings (tree BLOB PRIMARY KEY, pack BLOB NOT NULL,"
                " place BLOB NOT NULL, names BLOB NOT NULL, mac BLOB NOT NULL)"
            )

    def load(self) -> dict[bytes, Walked]:
        """Every entry whose MAC holds; the others are left out (and replaced by `keep`)."""
        out: dict[bytes, Walked] = {}
        self._stored = {}
        try:
            rows = self.db.execute("SELECT tree, pack, place, names, mac FROM checked_listings").fetchall()
        except sqlite3.Error:
            return out  # a damaged cache: every listing is decoded
        for tree, pack, place, names, mac in rows:
            if type(tree) is bytes:
                self._stored[tree] = None
            if not all(type(v) is bytes for v in (tree, pack, place, names, mac)):
                continue
            if (len(tree) != ID_LEN or len(pack) != ID_LEN
                    or not hmac.compare_digest(mac, self._mac(tree, pack, place, names))):
                continue
            out[tree] = Walked(pack, place, names)
            self._stored[tree] = (pack, place)
        return out

    def keep(self, walked: dict[bytes, Walked]) -> None:
        """Make the table hold exactly these entries (the listings of tonight's snapshots):
        the others are removed, new or changed ones written, in one transaction."""
        gone = [(tree,) for tree in self._stored.keys() - walked.keys()]
        new = []
        for tree, w in walked.items():
            if self._stored.get(tree) == (w.pack, w.place):
                continue
            new.append((tree, w.pack, w.place, w.encoded, self._mac(tree, w.pack, w.place, w.encoded)))
        if not gone and not new:
            return
        with self.db:
            self.db.executemany("DELETE FROM checked_listings WHERE tree = ?", gone)
            self.db.executemany("INSERT OR REPLACE INTO checked_listings VALUES (?, ?, ?, ?, ?)", new)
        for tree, pack, place, _names, _mac in new:
            self._stored[tree] = (pack, place)
        for (tree,) in gone:
            del self._stored[tree]

    def moved(self, copies: dict[bytes, tuple[bytes, BlobEntry, bytes, BlobEntry]]) -> None:
        """Listings a prune copied to new packs: tree -> (old pack, old entry, new pack, new
        entry). An entry remembered for the old copy, and authentic, is made to name the new
        one. Sound because prune authenticated and decoded the old copy (its
        content hashed to its id) and checked that the new copy's encryption decrypts to the
        same bytes: decoding the new copy gives the same listing, and the check still hashes
        its pack the night it relies on it."""
        updates = []
        for tree, (old_pack, old_entry, new_pack, new_entry) in copies.items():
            row = self.db.execute("SELECT pack, place, names, mac FROM checked_listings WHERE tree = ?",
                                  (tree,)).fetchone()
            if row is None:
                continue
            pack, place, names, mac = row
            if (pack, place) != (old_pack, place_of(old_entry)) or not all(
                    type(v) is bytes for v in (names, mac)) or not hmac.compare_digest(
                    mac, self._mac(tree, pack, place, names)):
                continue
            new_place = place_of(new_entry)
            updates.append((new_pack, new_place, self._mac(tree, new_pack, new_place, names), tree))
        with self.db:
            self.db.executemany("UPDATE checked_listings SET pack = ?, place = ?, mac = ? WHERE tree = ?",
                                updates)
        for new_pack, new_place, _mac, tree in updates:
            if tree in self._stored:
                self._stored[tree] = (new_pack, new_place)

    def _mac(self, tree: bytes, pack: bytes, place: bytes, names: bytes) -> bytes:
        # tree and pack are ID_LEN bytes, place is prefixed with its length: no two rows share
        # the input (a row read back may hold a place of any length).
        size = len(place).to_bytes(4, "little")
        return self.crypter.mac(b"".join((_MAC_CONTEXT, tree, pack, size, place, names)))
