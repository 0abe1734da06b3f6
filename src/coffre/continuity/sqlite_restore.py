"""Point-in-time restore of a SQLite database from its continuous capture (sqlite_monitor.py).

**Choosing** (`plan`, pure): the newest base taken at or before the target time, in any
generation of that database; then, in its generation, the log pieces in position order from
the base's position, each starting where the previous one ended, as long as they were
captured at or before the target (all of them for the latest moment). A piece's time is its
capture time: the monitor's clock just after it read the frames, so every transaction in it
was committed before that time. The restore point's granularity is therefore the monitor's
interval: a transaction committed less than about one pass before the target may be left
out, one committed after it never is. The result says which moment was reached.

**Refused**, naming what is wrong and saying the latest moment that can be restored: a gap
recorded on the way (a piece lost before it could be stored, e.g. the spool was full), a
piece missing (the chain stops while later pieces exist: its name is told from the positions
around it), a piece whose frames do not follow the previous one.

**Applying**: the base is written to a temporary file beside the target; each piece's frames
are checked as SQLite checks them (salts, cumulative checksums chained from where the
previous piece, or the base, ended); each page is written at its place and, at each commit,
the file takes the size its commit frame gives (`Applier`, writing through `Pages`: the
restore's file, or a standby's pass, sqlite_standby.py, which goes on from a `Resume`).
Then `PRAGMA integrity_check`, fsync, and the file is linked under the target's name, never
over an existing database: the rule of `coffre restore-db --sqlite` (a missing or empty file
only, and no -wal, -shm or -journal beside it, which SQLite would replay into the restored
file).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from coffre.continuity import sqlite_names as names
from coffre.core import posix
from coffre.core.errors import CoffreError, IntegrityError
from coffre.core.files import place_new
from coffre.core.human import human_time
from coffre.core.i18n import _
from coffre.format.segment import SegmentHeader
from coffre.ops.common import Reporter, quiet
from coffre.repository import segments
from coffre.repository.repo import Repository
from coffre.repository.segments import StoredSegment
from coffre.sources.databases import sqlite_wal as wal
from coffre.sources.databases.sqlite import sqlite_name

SQLITE_MAGIC = b"SQLite format 3\0"


@dataclass(frozen=True)
class Plan:
    base: StoredSegment
    pieces: list[StoredSegment]
    point_ns: int  # the capture time of the last piece applied (the base's when none)
    since_ns: int  # every transaction committed before this moment is in the result


@dataclass(frozen=True)
class SqliteRestored:
    target: str
    stream: str  # the generation restored from
    base_time_ns: int
    point_ns: int  # the moment reached: nothing committed after it is in the file
    since_ns: int  # ...and everything committed before this one is
    pieces: int
    transactions: int
    size: int
    resume: Resume | None = None  # where the log goes on (a standby's next pass starts there)


def since_of(seg: StoredSegment) -> int:
    try:
        return int(seg.header.extra.get("since_ns", ""))
    except ValueError:
        return seg.header.time_ns


def selector(database_path_or_stream: str) -> tuple[Callable[[str], bool], str]:
    """Which streams a restore may use: a database path (every generation of it), a stream
    `sqlite:<database id>` (the same, by id) or `sqlite:<database id>:<generation>` (one)."""
    text = database_path_or_stream
    if names.parse_stream(text):
        return (lambda s: s == text), text
    if text.startswith(f"{names.ENGINE}:") and text.count(":") == 1 and len(text) > len(names.ENGINE) + 1:
        prefix = text + ":"
        return (lambda s: s.startswith(prefix)), text
    prefix = names.stream(names.database_id(text), "")
    return (lambda s: s.startswith(prefix)), os.path.abspath(text)


def plan(found: list[StoredSegment], until_ns: int | None, what: str) -> Plan:
    """The base and the pieces that reach `until_ns` (None: the latest moment), from the
    segments of one database; CoffreError naming what prevents it."""
    bases = [s for s in found if s.header.kind == "base"]
    if not bases:
        raise CoffreError(_("{what}: the repository holds no copy of this database to start from").format(
            what=what))
    usable = [b for b in bases if until_ns is None or b.header.time_ns <= until_ns]
    if not usable:
        first = min(b.header.time_ns for b in bases)
        raise CoffreError(_("{what}: nothing was captured at or before {until}; the earliest moment that "
                            "can be restored is {first}").format(what=what, until=human_time(until_ns or 0),
                                                                 first=human_time(first)))
    base = max(usable, key=lambda b: (b.header.time_ns, b.header.start))
    chain = walk(found, base.header.stream, base.header.end, base.header.time_ns, until_ns, what)
    if chain.stop is not None:
        raise chain.stop
    point = chain.pieces[-1].header.time_ns if chain.pieces else base.header.time_ns
    since = since_of(chain.pieces[-1]) if chain.pieces else since_of(base)
    return Plan(base, chain.pieces, point, since)


@dataclass(frozen=True)
class Walk:
    pieces: list[StoredSegment]  # in order, each starting where the previous one ended
    stop: CoffreError | None = None  # a gap or a missing piece where the chain stops
    stopped_at: str = ""  # that piece's name


def walk(found: list[StoredSegment], stream: str, pos: int, point: int, until_ns: int | None,
         what: str) -> Walk:
    """The log pieces of generation `stream` from position `pos` on (`point`: the capture time
    reached there), captured at or before `until_ns` (None: all), up to the first gap or
    missing piece, which is named in `stop` (never skipped)."""
    following: dict[int, list[StoredSegment]] = defaultdict(list)
    for s in found:
        if s.header.stream == stream and s.header.kind in ("log", "gap") and s.header.end > s.header.start:
            following[s.header.start].append(s)
    chain: list[StoredSegment] = []
    while True:
        here = following.get(pos, [])
        in_time = [s for s in here if until_ns is None or s.header.time_ns <= until_ns]
        logs = [s for s in in_time if s.header.kind == "log"]
        if logs:
            step = max(logs, key=lambda s: (s.header.end, -s.header.time_ns))
            chain.append(step)
            pos, point = step.header.end, step.header.time_ns
            continue
        if in_time:
            gap = in_time[0].header
            return Walk(chain, CoffreError(
                _("{what}: the log piece {name} of generation {generation} was lost before it could be "
                  "stored ({reason}), at {when}").format(
                      what=what, name=gap.name, generation=_generation(stream),
                      reason=gap.extra.get("reason", "?"), when=human_time(gap.time_ns)),
                _latest(found, point)), gap.name)
        mine = [seg for group in following.values() for seg in group]
        later = [seg for seg in mine if seg.header.start > pos]
        # Not missing when a piece captured later covers the position (a monitor that stopped
        # between putting a piece and recording it copies again from the older position).
        covered = any(seg.header.start <= pos < seg.header.end for seg in mine)
        if not covered and later and (until_ns is None or until_ns > point):
            name = names.log_name(pos, min(s.header.start for s in later))
            return Walk(chain, CoffreError(
                _("{what}: the log piece {name} of generation {generation} is missing from the "
                  "repository").format(what=what, name=name, generation=_generation(stream)),
                _latest(found, point)), name)
        return Walk(chain)


def _generation(stream: str) -> str:
    parsed = names.parse_stream(stream)
    return parsed[1] if parsed else stream


def _latest(found: list[StoredSegment], point: int) -> str:
    after = [b.header.time_ns for b in found if b.header.kind == "base" and b.header.time_ns > point]
    text = _("the latest moment that can be restored before it is {point}").format(point=human_time(point))
    if after:
        text += _("; from {moment} on, the next copy of the database can be used").format(
            moment=human_time(min(after)))
    return text


@dataclass(frozen=True)
class Resume:
    """Where a generation's log goes on after what was applied: what the next piece is
    checked against."""
    position: int
    wal_header: str  # the WAL header in force there, in hex ("" when the log had none yet)
    checksum: str  # the cumulative checksum reached there, 16 hex digits

    @classmethod
    def of_base(cls, base: SegmentHeader) -> Resume:
        return cls(base.end, base.extra.get("wal_header", ""), base.extra.get("checksum", "0" * 16))


class Pages(Protocol):
    """Where the applier writes: a page (numbered from 1) and, at each commit, the size."""

    def write(self, page: int, data: bytes) -> None: ...

    def resize(self, pages: int) -> None: ...


class FilePages:
    """Straight into an open file (a restore's temporary file)."""

    def __init__(self, f: BinaryIO, page_size: int) -> None:
        self.fd, self.page_size = f.fileno(), page_size

    def write(self, page: int, data: bytes) -> None:
        os.pwrite(self.fd, data, (page - 1) * self.page_size)

    def resize(self, pages: int) -> None:
        os.ftruncate(self.fd, pages * self.page_size)


class Applier:
    """Writes the log's pages after a base (or after what was applied before: `resume`),
    checking that every piece follows the previous one as SQLite would."""

    def __init__(self, pages: Pages, resume: Resume, page_size: int, what: str) -> None:
        self.pages = pages
        self.page_size = page_size
        self.position = resume.position
        try:
            self.header = wal.parse_header(bytes.fromhex(resume.wal_header)) if resume.wal_header else None
            text = resume.checksum
            self.checksum: wal.Checksum = (int(text[:8], 16), int(text[8:16], 16))
        except ValueError:
            raise IntegrityError(_("the copy {name} does not say where the log continues").format(
                name=what)) from None
        if resume.wal_header and self.header is None:
            raise IntegrityError(_("the copy {name} does not say where the log continues").format(
                name=what))
        self.transactions = 0

    @property
    def resume(self) -> Resume:
        return Resume(self.position, self.header.raw.hex() if self.header else "",
                      f"{self.checksum[0]:08x}{self.checksum[1]:08x}")

    def apply(self, seg: SegmentHeader, payload: bytes) -> None:
        header = wal.parse_header(payload)
        run0, off0 = names.split_position(seg.start)
        run1, off1 = names.split_position(seg.end)
        refused = IntegrityError(_("the log piece {name} does not follow the previous one").format(
            name=seg.name))
        if header is None or header.page_size != self.page_size or seg.start != self.position:
            raise refused
        if run1 == run0:
            if self.header is None or header.raw != self.header.raw:
                raise refused
            first, seed = off0, self.checksum
        else:
            first, seed = wal.HEADER_SIZE, header.checksum
        body = memoryview(payload)[wal.HEADER_SIZE:]
        reached, running = first, seed
        for tx in wal.transactions(body, header, first, seed):
            for frame in tx:
                self.pages.write(frame.page, frame.data)
            commit = tx[-1]
            self.pages.resize(commit.commit_size)
            reached, running = commit.offset + header.frame_size, commit.checksum
            self.transactions += 1
        if reached != off1 or reached - first != len(body):
            raise refused
        self.header, self.checksum, self.position = header, running, seg.end


def database_page_size(head: bytes) -> int:
    """The page size a SQLite database's header gives (its first 100 bytes)."""
    size = int.from_bytes(head[16:18], "big")
    return 65536 if size == 1 else size


def _check_target(target: Path) -> None:
    if not target.parent.is_dir():
        raise CoffreError(_("{folder}: no such folder").format(folder=target.parent))
    try:
        size = target.stat().st_size if not target.is_symlink() else 1
    except FileNotFoundError:
        size = 0
    if size:
        raise CoffreError(_("{path} exists: a restore never replaces a database").format(path=target),
                          _("choose a new file name"))
    for suffix in ("-wal", "-shm", "-journal"):
        if os.path.lexists(f"{target}{suffix}"):
            # SQLite would replay an old -wal or -journal into the restored file.
            raise CoffreError(_("{path} exists: it belongs to another database").format(
                path=f"{target}{suffix}"), _("choose a new file name"))


def _integrity(path: str) -> str:
    try:
        with sqlite_name(path) as name, contextlib.closing(sqlite3.connect(name)) as conn:
            rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    except sqlite3.Error as exc:
        return str(exc)
    return "ok" if rows == ["ok"] else "; ".join(rows[:10])


def restore_sqlite(repo: Repository, database_path_or_stream: str, target: str | os.PathLike[str],
                   until_ns: int | None = None, report: Reporter = quiet) -> SqliteRestored:
    """Restore a database captured by the monitor into the new file `target`, as it was at
    `until_ns` (None: the latest moment captured), checked by PRAGMA integrity_check."""
    wanted, what = selector(database_path_or_stream)
    errors: list[str] = []
    found = [s for s in segments.listing(repo, errors=errors)
             if s.header.engine == names.ENGINE and wanted(s.header.stream)]
    for e in errors:
        report(e)
    if not found:
        raise CoffreError(_("{what}: the repository holds no continuous capture of this database").format(
            what=what))
    chosen = plan(found, until_ns, what)
    dest = Path(os.path.abspath(target))
    _check_target(dest)
    fd, tmp = tempfile.mkstemp(prefix=".coffre-restore-", dir=dest.parent)
    try:
        with os.fdopen(fd, "r+b") as f:
            base = segments.load(repo, chosen.base)
            if len(base) < 100 or base[:16] != SQLITE_MAGIC:
                raise IntegrityError(_("the copy {name} is not a SQLite database").format(
                    name=chosen.base.header.name))
            page_size = database_page_size(base)
            f.write(base)
            f.flush()
            applier = Applier(FilePages(f, page_size), Resume.of_base(chosen.base.header), page_size,
                              chosen.base.header.name)
            for piece in chosen.pieces:
                applier.apply(piece.header, segments.load(repo, piece))
            f.flush()
            os.fsync(f.fileno())
            size = os.fstat(f.fileno()).st_size
        verdict = _integrity(tmp)
        if verdict != "ok":
            raise CoffreError(_("the restored database fails PRAGMA integrity_check: {result}").format(
                result=verdict), _("nothing was written to {path}").format(path=dest))
        if dest.exists():  # empty: replaced, as restore-db does
            os.replace(tmp, dest)
        else:
            # Never over a file that appeared meanwhile (on a FUSE file system, only one that
            # appears between a look and the rename: files.place_new).
            place_new(tmp, str(dest))
        posix.fsync_dir(dest.parent)
    except FileExistsError:
        raise CoffreError(_("{path} exists: a restore never replaces a database").format(path=dest)) from None
    finally:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    return SqliteRestored(str(dest), chosen.base.header.stream, chosen.base.header.time_ns, chosen.point_ns,
                          chosen.since_ns, len(chosen.pieces), applier.transactions, size, applier.resume)
