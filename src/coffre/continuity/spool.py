"""The spool: a bounded local folder of captured log pieces waiting for the shipper.

Capture (pg_push, the SQLite monitor, the binlog reader) puts pieces in; the shipper sends
them to the repository and removes each once it is stored. A piece is one file, written
beside and renamed after fsync, so the shipper never sees half of one:

    u32 big-endian length of the header, the header (JSON), the log bytes

The spool may be written by the database's account and read by the agent's: what it holds is
validated like anything read from storage. When the pieces waiting would pass the bound, a
new piece is not kept: the caller records a gap instead (the database must never stop for a
backup, nor its disk fill).
"""

from __future__ import annotations

import json
import os
import secrets
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from coffre.core import posix
from coffre.core.errors import CoffreError, FormatError
from coffre.core.files import write_new
from coffre.core.i18n import _
from coffre.format.segment import SegmentHeader

SUFFIX = ".piece"
_TMP = ".tmp-"
_LEN = struct.Struct(">I")
MAX_SPOOL_HEADER = 64 * 1024
DEFAULT_LIMIT = 2 * 1024 * 1024 * 1024
TEMPORARY_AGE = 3600.0  # seconds: a temporary file older than this was left by a crash


@dataclass(frozen=True)
class Pending:
    path: Path
    size: int

    @property
    def time_ns(self) -> int | None:
        """The piece's capture time, from its name (None for a name not made by `put`)."""
        stem = self.path.name[:20]
        return int(stem) if len(stem) == 20 and stem.isdigit() else None


@dataclass(frozen=True)
class Waiting:
    """What the spool holds now: pieces, bytes, and the capture time of the oldest piece
    (None when empty, or when no name tells it)."""

    pieces: int
    bytes: int
    oldest_ns: int | None


class Spool:
    def __init__(self, path: str | os.PathLike[str], limit: int = DEFAULT_LIMIT) -> None:
        self.path = Path(path)
        self.limit = limit

    def create(self, mode: int = 0o700) -> None:
        self.path.mkdir(mode=mode, parents=True, exist_ok=True)

    def pending(self) -> list[Pending]:
        """The pieces waiting, oldest first (names start with the capture time)."""
        out = []
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return []
        for e in entries:
            if e.name.endswith(SUFFIX) and not e.name.startswith("."):
                try:
                    out.append(Pending(Path(e.path), e.stat(follow_symlinks=False).st_size))
                except FileNotFoundError:
                    continue
        return sorted(out, key=lambda p: p.path.name)

    def used(self) -> int:
        return sum(p.size for p in self.pending())

    def waiting(self) -> Waiting:
        pending = self.pending()
        times = [t for p in pending if (t := p.time_ns) is not None]
        return Waiting(len(pending), sum(p.size for p in pending), min(times) if times else None)

    def put(self, header: SegmentHeader, payload: bytes, force: bool = False) -> bool:
        """Keep a piece durably. False (nothing kept) when it would pass the bound, unless
        `force` (a gap record, a few hundred bytes, is always kept)."""
        head = json.dumps(header.to_map(), sort_keys=True).encode()
        data = _LEN.pack(len(head)) + head + payload
        if not force and self.used() + len(data) > self.limit:
            return False
        self.create()
        stem = f"{header.time_ns:020d}-{secrets.token_hex(4)}-{header.name}"
        write_new(self.path / f"{_TMP}{stem}", self.path / f"{stem}{SUFFIX}", data)
        return True

    def read(self, pending: Pending) -> tuple[SegmentHeader, bytes]:
        fd = os.open(pending.path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            data = f.read()
        try:
            (length,) = _LEN.unpack_from(data)
            if length > MAX_SPOOL_HEADER or len(data) < _LEN.size + length:
                raise FormatError(_("impossible header length"))
            header = SegmentHeader.from_map(json.loads(data[_LEN.size:_LEN.size + length]))
        except (struct.error, ValueError, FormatError) as exc:
            raise CoffreError(_("the spooled piece {name} cannot be read: {reason}").format(
                name=pending.path.name, reason=getattr(exc, "message", exc))) from None
        return header, data[_LEN.size + length:]

    def remove(self, pending: Pending) -> None:
        pending.path.unlink(missing_ok=True)
        posix.fsync_dir(self.path)

    def clean_temporaries(self, older_than_s: float = TEMPORARY_AGE) -> None:
        """Pieces a crash left half written (never renamed, so never shipped). Only those
        untouched for `older_than_s`: capture may be writing one right now, in another
        process or thread, while the shipper runs."""
        limit = time.time() - older_than_s
        for e in os.scandir(self.path) if self.path.is_dir() else ():
            if e.name.startswith(_TMP):
                try:
                    if e.stat(follow_symlinks=False).st_mtime < limit:
                        Path(e.path).unlink(missing_ok=True)
                except FileNotFoundError:
                    continue
