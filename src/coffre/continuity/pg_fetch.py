"""`coffre wal fetch`: PostgreSQL's restore_command.

PostgreSQL reads an exit status of 1 to 125 as "not in the archive": during a point-in-time
recovery it then ends recovery and opens the database. So 1 means only "not found"; any other
failure is retried, then exits 126 (PostgreSQL stops recovery instead of opening a database
that misses committed transactions). A file is written beside the destination and renamed,
never left half written.

Two sources: a staging folder that the restore or the standby filled with checked pieces
(fast: no key, no listing), or the repository itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from coffre.continuity import positions
from coffre.core.errors import CoffreError
from coffre.core.files import write_new
from coffre.core.i18n import _
from coffre.core.posix import Account
from coffre.repository import segments
from coffre.repository.repo import Repository
from coffre.repository.segments import StoredSegment

FOUND, NOT_FOUND, FAILED = 0, 1, 126


def _checked_name(name: str) -> str:
    if not positions.is_wal_file(name) or Path(name).name != name:
        raise CoffreError(_("{name} is not the name of a WAL file").format(name=repr(name[:100])))
    return name


def write_beside(dest: Path, data: bytes, account: Account | None = None) -> None:
    """`data` as `dest`, whole or not at all (given to `account`)."""
    tmp = dest.with_name(f".{dest.name}.coffre-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    write_new(tmp, dest, data, (account.pw_uid, account.pw_gid) if account is not None else None)


def fetch_staged(staging: Path, name: str, dest: Path) -> int:
    """From a staging folder: FOUND after copying it to `dest`, NOT_FOUND if it is not
    staged (yet)."""
    source = staging / _checked_name(name)
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        if not staging.is_dir():
            raise CoffreError(_("the staging folder {folder} does not exist").format(
                folder=staging)) from None
        return NOT_FOUND
    write_beside(dest, data)
    return FOUND


def find(listed: list[StoredSegment], stream: str, name: str) -> StoredSegment | None:
    """The stored piece of this stream named `name` (any copy: each is checked when read)."""
    for seg in listed:
        if seg.header.stream == stream and seg.header.name == name and seg.header.kind in ("log", "history"):
            return seg
    return None


def fetch_from_repository(repo: Repository, stream: str, name: str, dest: Path) -> int:
    seg = find(segments.listing(repo, errors=[]), stream, _checked_name(name))
    if seg is None:
        return NOT_FOUND
    write_beside(dest, segments.load(repo, seg))
    return FOUND
