"""Tombstones: what a `forget` leaves in the repository (`forgotten/`), naming the snapshots it
removed, so that every machine sharing the repository tells a forget from a deletion by the
storage (docs/design.md §8.1). Ids only: a tombstone says nothing else about the snapshots."""

from __future__ import annotations

from coffre.core.errors import FormatError
from coffre.core.i18n import _
from coffre.format.codec import decode, encode, want, want_id, want_map

VERSION = 1
# Per tombstone; a forget of more writes several. Keeps one object at about 2.2 MiB.
MAX_IDS = 65_536


def encode_tombstone(snapshot_ids: list[str]) -> bytes:
    """The plaintext of a tombstone naming these snapshots (hex ids, 1 to MAX_IDS)."""
    if not 1 <= len(snapshot_ids) <= MAX_IDS:
        raise ValueError(f"a tombstone names 1 to {MAX_IDS} snapshots, not {len(snapshot_ids)}")
    return encode({"v": VERSION, "snapshots": [bytes.fromhex(s) for s in snapshot_ids]})


def decode_tombstone(data: bytes) -> list[str]:
    """The snapshot ids (hex) a tombstone names, validated: untrusted until the caller has
    authenticated the object (Repository.load_object)."""
    d = want_map(decode(data, "tombstone"), "tombstone")
    if d.get("v") != VERSION:
        raise FormatError(_("tombstone: unknown version (written by a newer Coffre?)"))
    ids = want(d.get("snapshots"), list, "tombstone snapshots")
    if not 1 <= len(ids) <= MAX_IDS:
        raise FormatError(_("tombstone: names {n} snapshots (1 to {max})").format(n=len(ids), max=MAX_IDS))
    return [want_id(i, "tombstone snapshot").hex() for i in ids]
