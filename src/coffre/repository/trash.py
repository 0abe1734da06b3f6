"""Trash records: packs that prune took out of the index, waiting to be deleted.

A pack is deleted only when every lock that was live when it was trashed has ended, so no
running operation can still rely on a blob in it (see docs/design.md, "Prune safety").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coffre.core.errors import FormatError
from coffre.core.i18n import _
from coffre.format.codec import decode, encode, want, want_id, want_int, want_map
from coffre.repository.repo import Repository


@dataclass
class TrashRecord:
    name: str
    packs: list[bytes]
    marked_ns: int
    live_locks: list[str]


def save_trash(repo: Repository, packs: list[bytes], live_locks: list[str]) -> str:
    body = encode(
        {"v": 1, "packs": packs, "marked": repo.clock.now_ns(), "live_locks": live_locks}
    )
    return repo.save_object("trash", body)


def load_trash(repo: Repository) -> list[TrashRecord]:
    out = []
    for name in repo.list_names("trash"):
        d: dict[str, Any] = want_map(decode(repo.load_object("trash", name), "trash"), "trash")
        if d.get("v") != 1:
            raise FormatError(_("trash record: unknown version"))
        out.append(
            TrashRecord(
                name=name,
                packs=[want_id(p, "trashed pack") for p in want(d.get("packs"), list, "packs")],
                marked_ns=want_int(d.get("marked"), "trash time"),
                live_locks=[want(x, str, "lock id") for x in want(d.get("live_locks"), list, "l")],
            )
        )
    return out
