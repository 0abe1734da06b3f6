"""`coffre wal push`: PostgreSQL's archive_command. Keeps the finished WAL file in the spool
and returns; the shipper sends it to the repository later, so a slow or absent repository
never blocks the database.

The archiving contract (PostgreSQL manual, continuous archiving): success only once the file
is durable; never overwrite: the same bytes already archived under the name are a success
(PostgreSQL archives again after a crash), other bytes a failure. Failures exit 1, never
above 125 (PostgreSQL would restart its archiver without counting a failure).

When the spool is full, the file is not kept and a gap is recorded instead: PostgreSQL then
recycles it, rather than keeping every later file in pg_wal until its disk is full and the
counter stops selling. The gap is shipped, reported, and point-in-time recovery across it is
refused until the next base backup.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from coffre.continuity import positions
from coffre.continuity.spool import Spool
from coffre.core.clock import Clock
from coffre.core.errors import CoffreError
from coffre.core.files import write_atomic
from coffre.core.i18n import _
from coffre.format.segment import SegmentHeader

ARCHIVED = "archived"  # name -> SHA-256 of what was archived under it (idempotence)
MARKER_DAYS = 7  # PostgreSQL only archives recent files again after a crash
_LONG_HEADER = struct.Struct("<HHIQI4xQII")  # XLogLongPageHeaderData
_XLP_LONG_HEADER = 0x0002
_MAX_HISTORY = 1024 * 1024


@dataclass(frozen=True)
class Pushed:
    name: str
    kept: bool  # False: the spool was full, a gap was recorded
    again: bool = False  # the same bytes were archived before


def system_identifier(data_dir: Path) -> int | None:
    """The cluster's system identifier from global/pg_control (its first 8 bytes)."""
    try:
        with open(data_dir / "global" / "pg_control", "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return struct.unpack("<Q", head)[0] if len(head) == 8 else None


def segment_identity(data: bytes, name: str) -> tuple[int, int, positions.WalName]:
    """(system identifier, segment size, segment) read from a WAL segment's first page,
    checked against its name and length: a file that is not that segment is refused."""
    if len(data) < _LONG_HEADER.size:
        raise CoffreError(_("{name} is too short to be a WAL segment").format(name=name))
    _magic, info, _tli, pageaddr, _rem, sysid, seg_size, _blcksz = _LONG_HEADER.unpack_from(data)
    if not info & _XLP_LONG_HEADER or seg_size <= 0 or seg_size & (seg_size - 1) or len(data) != seg_size:
        raise CoffreError(_("{name} is not a WAL segment (its first page or its length is wrong)").format(
            name=name))
    wal = positions.parse_segment(name, seg_size)
    if wal is None or pageaddr != wal.start(seg_size):
        raise CoffreError(_("{name} does not hold the segment its name says").format(name=name))
    return sysid, seg_size, wal


def header_for(data: bytes, name: str, data_dir: Path, now_ns: int) -> SegmentHeader:
    """Where this WAL file goes in its cluster's stream."""
    digest = hashlib.sha256(data).hexdigest()
    if name.endswith(".partial"):
        # The old timeline's last segment, archived at a promotion: kept beside the stream
        # (recovery never asks for it, a person investigating may).
        sysid, seg_size, _wal = segment_identity(data, name.removesuffix(".partial"))
        return SegmentHeader(stream=f"postgres:{sysid}", engine="postgres", kind="history", name=name,
                             start=0, end=0, time_ns=now_ns, size=len(data), sha256=digest,
                             extra={"segment_size": str(seg_size)})
    wal = positions.parse_segment(name)
    if wal is not None or (len(name) == 24 and positions.is_wal_file(name)):
        sysid, seg_size, wal = segment_identity(data, name)
        return SegmentHeader(stream=f"postgres:{sysid}", engine="postgres", kind="log", name=name,
                             start=wal.start(seg_size), end=wal.start(seg_size) + seg_size, time_ns=now_ns,
                             size=len(data), sha256=digest,
                             extra={"timeline": str(wal.timeline), "segment_size": str(seg_size)})
    sysid_or_none = system_identifier(data_dir)
    if sysid_or_none is None:
        raise CoffreError(_("{name}: the cluster's identity cannot be read from global/pg_control "
                            "(archive_command runs in the data folder)").format(name=name))
    if len(data) > _MAX_HISTORY:
        raise CoffreError(_("{name} is too large for a history file").format(name=name))
    return SegmentHeader(stream=f"postgres:{sysid_or_none}", engine="postgres", kind="history", name=name,
                         start=0, end=0, time_ns=now_ns, size=len(data), sha256=digest)


def push(spool: Spool, source: Path, name: str, clock: Clock, data_dir: Path | None = None) -> Pushed:
    if not positions.is_wal_file(name) or Path(name).name != name:
        raise CoffreError(_("{name} is not the name of a WAL file").format(name=repr(name[:100])))
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CoffreError(_("cannot read {path}: {reason}").format(
            path=source, reason=exc.strerror)) from None
    header = header_for(data, name, data_dir or Path.cwd(), clock.now_ns())
    marker = spool.path / ARCHIVED / name
    try:
        before = marker.read_text().strip()
    except FileNotFoundError:
        before = None
    if before is not None:
        if before == header.sha256:
            return Pushed(name, kept=True, again=True)
        raise CoffreError(_("a different {name} was already archived; it is never replaced").format(
            name=name),
                          _("two clusters may be archiving into the same spool: give each its own"))
    kept = spool.put(header, data)
    if not kept:
        spool.put(header.as_gap("spool full"), b"", force=True)
    (spool.path / ARCHIVED).mkdir(mode=0o700, exist_ok=True)
    write_atomic(marker, header.sha256.encode(), 0o600)
    return Pushed(name, kept=kept)


def forget_markers(spool: Spool, older_than_ns: int) -> int:
    """Idempotence records PostgreSQL can no longer need (it re-archives only recent files)."""
    folder = spool.path / ARCHIVED
    removed = 0
    for e in os.scandir(folder) if folder.is_dir() else ():
        if e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_mtime_ns < older_than_ns:
            Path(e.path).unlink(missing_ok=True)
            removed += 1
    return removed
