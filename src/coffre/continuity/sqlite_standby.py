"""The warm standby of a continuously captured SQLite database (sqlite_monitor.py): a file on a
second machine kept a few seconds behind the pharmacy's, fed only from the repository, that the
pharmacy software can be pointed at after `promote`.

- `init`: the latest moment captured is restored (sqlite_restore.restore_sqlite) into a new
  file; its state, `<file>.coffre-standby.json` (0600, written atomically), records the
  generation and where its log goes on (position, WAL header, cumulative checksum).
- `follow` (each pass): the pieces of that generation stored after the position, in chain
  order (sqlite_restore.walk), are checked and applied by the restore's own `Applier`, into an
  overlay in memory first. Only then is the file touched, under an undo journal of our own
  (`<file>.coffre-standby.undo`: the former size and every page about to change, durable
  before the first write): pages written, fsync, `PRAGMA quick_check`, state saved, journal
  removed. A crash at any moment leaves the previous state or the new one: a journal whose
  position is still the state's is played back before anything else (next pass, promote).
  A pass that fails quick_check is undone the same way.
- A gap, a missing piece or a piece that does not follow stops the pass there (what comes
  before it is applied; nothing after it, ever) and is recorded in the state (`gap`,
  `problem`); the next pass tries again from the same position.
- A new generation (the monitor's break: a base in another stream, newer than ours): the file
  is rebuilt from that generation's base into `<file>.coffre-standby.new` and renamed over it,
  the state recording the new file before the rename (so an interrupted rebuild is finished,
  never half done); the reason the capture gave is reported.
- `promote`: a last pass (unless offline), `PRAGMA integrity_check`, the state marked promoted:
  no pass touches the file again.

The file is checked by connections opened read-only and `immutable`: no -wal or -shm is ever
created beside it. It must not be opened by the pharmacy software before `promote`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import urllib.parse
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from coffre.continuity import sqlite_names as names
from coffre.continuity.sqlite_restore import (
    Applier,
    Resume,
    database_page_size,
    restore_sqlite,
    selector,
    since_of,
    walk,
)
from coffre.continuity.standby_lock import held
from coffre.core import posix
from coffre.core.errors import CoffreError, IntegrityError
from coffre.core.files import write_atomic
from coffre.core.i18n import _
from coffre.format.segment import SegmentHeader
from coffre.ops.common import Reporter, quiet
from coffre.repository import segments
from coffre.repository.repo import Repository
from coffre.repository.segments import StoredSegment
from coffre.sources.databases.sqlite import sqlite_name

STATE_SUFFIX = ".coffre-standby.json"
UNDO_SUFFIX = ".coffre-standby.undo"
NEW_SUFFIX = ".coffre-standby.new"
UNDO_MAGIC = b"coffre-sqlite-standby-undo 1\n"
PIECES_PER_PASS = 1_000  # a standby far behind catches up over several passes


def state_path(target: Path) -> Path:
    return target.with_name(target.name + STATE_SUFFIX)


def _undo_path(target: Path) -> Path:
    return target.with_name(target.name + UNDO_SUFFIX)


@dataclass
class SqliteStandbyState:
    target: str
    database: str  # the captured database's path (or stream), as restore_sqlite takes it
    stream: str  # the generation applied
    base_time_ns: int  # when that generation's base was taken (a newer one elsewhere: rebuild)
    position: int  # where the log goes on after what was applied
    wal_header: str
    checksum: str
    newest_ns: int = 0  # capture time of the newest piece applied (the base's when none)
    since_ns: int = 0  # everything committed before this moment is in the file
    applied: int = 0  # pieces applied by the passes since the last init or rebuild
    transactions: int = 0
    last_pass_ns: int = 0
    behind_pieces: int = 0  # stored in the generation but not applied (a gap stops the pass)
    behind_bytes: int = 0  # their bytes
    gap: str = ""  # the piece where the last pass stopped: lost, missing or not following
    problem: str = ""  # what the last pass said about it
    rebuilds: int = 0
    rebuilding: str = ""  # the rebuilt file about to replace the target (an unfinished rebuild)
    promoted_ns: int = 0

    @property
    def resume(self) -> Resume:
        return Resume(self.position, self.wal_header, self.checksum)

    def save(self) -> None:
        write_atomic(state_path(Path(self.target)), json.dumps(asdict(self), indent=1).encode(), 0o600)

    @classmethod
    def load(cls, target: Path) -> SqliteStandbyState:
        path = state_path(target)
        try:
            raw = json.loads(path.read_text())
            return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
        except FileNotFoundError:
            raise CoffreError(_("{file} is not a standby's file (no {state})").format(
                file=target, state=path.name), _("set it up with 'coffre standby sqlite-init'")) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise CoffreError(_("{file} cannot be read: {reason}").format(file=path, reason=exc)) from None


def check(path: Path, pragma: str) -> str:
    """`PRAGMA quick_check` or `integrity_check` on a file, read-only and immutable (nothing
    is created beside it): "ok" or what SQLite found."""
    try:
        with sqlite_name(str(path)) as name, contextlib.closing(sqlite3.connect(
                f"file:{urllib.parse.quote(name)}?mode=ro&immutable=1", uri=True)) as conn:
            rows = [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}")]
    except sqlite3.Error as exc:
        return str(exc)
    return "ok" if rows == ["ok"] else "; ".join(rows[:10])


def _found(repo: Repository, database: str, report: Reporter,
           known: dict[str, SegmentHeader] | None = None) -> list[StoredSegment]:
    wanted, _what = selector(database)
    errors: list[str] = []
    found = [s for s in segments.listing(repo, errors=errors, known=known)
             if s.header.engine == names.ENGINE and wanted(s.header.stream)]
    for e in errors:
        report(e)
    return found


@dataclass(frozen=True)
class _Reach:
    stream: str  # the newest generation
    until_ns: int | None  # how far it can be restored (None: its latest moment)
    gap: str  # the piece it stops before ("" when none)
    problem: str


def _reach(found: list[StoredSegment], what: str) -> _Reach | None:
    """How far the newest generation can be restored: up to its first gap or missing piece,
    never past it (None: no copy of the database to start from)."""
    base = max((s.header for s in found if s.header.kind == "base"), key=lambda b: (b.time_ns, b.start),
               default=None)
    if base is None:
        return None
    chain = walk(found, base.stream, base.end, base.time_ns, None, what)
    if chain.stop is None:
        return _Reach(base.stream, None, "", "")
    until = chain.pieces[-1].header.time_ns if chain.pieces else base.time_ns
    return _Reach(base.stream, until, chain.stopped_at, chain.stop.message)


def _restore(repo: Repository, found: list[StoredSegment], database: str, what: str, dest: Path,
             report: Reporter) -> tuple[SqliteStandbyState, _Reach | None]:
    """The newest generation restored into the new file `dest`, as far as it goes; its state
    (not saved)."""
    reach = _reach(found, what)
    restored = restore_sqlite(repo, reach.stream if reach else database, dest,
                              reach.until_ns if reach else None, report=report)
    resume = restored.resume or Resume(0, "", "0" * 16)
    state = SqliteStandbyState(str(dest), what, restored.stream, restored.base_time_ns, resume.position,
                               resume.wal_header, resume.checksum, newest_ns=restored.point_ns,
                               since_ns=restored.since_ns, applied=restored.pieces,
                               transactions=restored.transactions, last_pass_ns=time.time_ns(),
                               gap=reach.gap if reach else "", problem=reach.problem if reach else "")
    if state.gap:
        report(_("the standby stops before the log piece {name}: {problem}").format(
            name=state.gap, problem=state.problem))
    return state, reach


def init(repo: Repository, database: str, target: str | os.PathLike[str],
         report: Reporter = quiet) -> SqliteStandbyState:
    """Restore the latest moment captured of `database` into the new file `target` (up to a
    gap, if its newest generation has one) and record where its log goes on."""
    dest = Path(os.path.abspath(target))
    for beside in (state_path(dest), _undo_path(dest)):
        if beside.exists():
            raise CoffreError(_("{path} exists: {file} is already a standby").format(path=beside, file=dest),
                              _("choose a new file name"))
    _wanted, what = selector(database)
    state, _reached = _restore(repo, _found(repo, database, report), database, what, dest, report)
    state.save()
    return state


# -- a pass's pages, in memory until they are all checked --


class _Overlay:
    """What a pass changes, applied in order as the file would take it: the latest content of
    each page written, the fewest pages the file had on the way (a commit can shrink it), the
    size after the last commit. `mark` and `back`: a piece that turns out not to follow is
    taken out again (what each page was before it is kept, once)."""

    def __init__(self, pages: int) -> None:
        self.pages: dict[int, bytes] = {}
        self.low = self.size = pages
        self.top = 0  # no page above it is in `pages`
        self._before: dict[int, bytes | None] = {}
        self._sizes = (self.low, self.size, self.top)

    def _keep(self, page: int) -> None:
        if page not in self._before:
            self._before[page] = self.pages.get(page)

    def write(self, page: int, data: bytes) -> None:
        self._keep(page)
        self.pages[page] = bytes(data)
        self.top = max(self.top, page)

    def resize(self, pages: int) -> None:
        self.low = min(self.low, pages)
        if pages < self.top:
            for p in [p for p in self.pages if p > pages]:
                self._keep(p)
                del self.pages[p]
            self.top = pages
        self.size = pages

    def mark(self) -> None:
        self._before, self._sizes = {}, (self.low, self.size, self.top)

    def back(self) -> None:
        for page, data in self._before.items():
            if data is None:
                self.pages.pop(page, None)
            else:
                self.pages[page] = data
        self.low, self.size, self.top = self._sizes
        self._before = {}


def _write_undo(target: Path, state: SqliteStandbyState, overlay: _Overlay, page_size: int) -> None:
    size = target.stat().st_size
    count = -(-size // page_size)
    keep = [p for p in range(1, count + 1) if p in overlay.pages or p > overlay.low]
    head = {"stream": state.stream, "position": state.position, "size": size, "page_size": page_size,
            "pages": keep}
    with open(target, "rb") as f:
        body = b"".join(os.pread(f.fileno(), page_size, (p - 1) * page_size).ljust(page_size, b"\0")
                        for p in keep)
    write_atomic(_undo_path(target), UNDO_MAGIC + json.dumps(head).encode() + b"\n" + body, 0o600)


def _play_undo(target: Path, state: SqliteStandbyState, report: Reporter) -> None:
    """Put the file back as it was before an unfinished pass; a journal left by a pass whose
    state was saved is only removed."""
    undo = _undo_path(target)
    try:
        data = undo.read_bytes()
    except FileNotFoundError:
        return
    line_end = data.find(b"\n", len(UNDO_MAGIC))
    if not data.startswith(UNDO_MAGIC) or line_end < 0:
        raise CoffreError(_("{file} cannot be read: {reason}").format(file=undo, reason="?"),
                          _("set the standby up again with 'coffre standby sqlite-init'"))
    head = json.loads(data[len(UNDO_MAGIC):line_end])
    if head["stream"] == state.stream and head["position"] == state.position:
        page_size, at = int(head["page_size"]), line_end + 1
        with open(target, "r+b") as f:
            os.ftruncate(f.fileno(), int(head["size"]))
            for p in head["pages"]:
                os.pwrite(f.fileno(), data[at:at + page_size], (int(p) - 1) * page_size)
                at += page_size
            os.ftruncate(f.fileno(), int(head["size"]))
            os.fsync(f.fileno())
        report(_("{file}: a pass was interrupted; the file was put back as it was before it").format(
            file=target))
    undo.unlink()
    posix.fsync_dir(target.parent)


def _write_pages(target: Path, overlay: _Overlay, page_size: int) -> None:
    with open(target, "r+b") as f:
        fd = f.fileno()
        if overlay.low * page_size < os.fstat(fd).st_size:
            os.ftruncate(fd, overlay.low * page_size)
        for page, data in sorted(overlay.pages.items()):
            os.pwrite(fd, data, (page - 1) * page_size)
        os.ftruncate(fd, overlay.size * page_size)
        os.fsync(fd)


def _recover(target: Path, state: SqliteStandbyState, report: Reporter) -> None:
    if state.rebuilding:
        new = Path(state.rebuilding)
        if new.exists():
            os.replace(new, target)
            posix.fsync_dir(target.parent)
        state.rebuilding = ""
        state.save()
    _play_undo(target, state, report)


def _rebuild(repo: Repository, found: list[StoredSegment], target: Path, state: SqliteStandbyState,
             base: SegmentHeader, report: Reporter) -> SqliteStandbyState:
    report(_("the capture of {database} started a new generation ({reason}): the standby is rebuilt "
             "from its first copy").format(database=state.database, reason=base.extra.get("reason", "?")))
    new = target.with_name(target.name + NEW_SUFFIX)
    for leftover in (new, Path(f"{new}-wal"), Path(f"{new}-shm"), Path(f"{new}-journal")):
        leftover.unlink(missing_ok=True)
    fresh, _reached = _restore(repo, [s for s in found if s.header.stream == base.stream], base.stream,
                               state.database, new, report)
    rebuilt = replace(fresh, target=state.target, rebuilds=state.rebuilds + 1, rebuilding=str(new))
    rebuilt.save()  # from here on, the rebuild is finished even if this process stops
    _recover(target, rebuilt, report)
    return rebuilt


def _locked(dest: Path, wait: bool = False) -> contextlib.AbstractContextManager[None]:
    """One command at a time on the standby (continuity/standby_lock.py)."""
    return held(dest.with_name(dest.name + ".coffre-standby.lock"), str(dest), wait)


def follow(repo: Repository, target: str | os.PathLike[str], report: Reporter = quiet,
           known: dict[str, SegmentHeader] | None = None,
           per_pass: int = PIECES_PER_PASS) -> SqliteStandbyState:
    """One pass: apply what the repository holds after the state's position, whole or not at
    all. `known`: segment headers read by earlier passes (objects never change)."""
    dest = Path(os.path.abspath(target))
    with _locked(dest):
        return _follow(repo, dest, report, known, per_pass)


def _follow(repo: Repository, dest: Path, report: Reporter, known: dict[str, SegmentHeader] | None,
            per_pass: int) -> SqliteStandbyState:
    state = SqliteStandbyState.load(dest)
    if state.promoted_ns:
        raise CoffreError(_("this standby was promoted: the pharmacy software uses it now"))
    _recover(dest, state, report)
    found = _found(repo, state.database, report, known)
    bases = [s.header for s in found if s.header.kind == "base"]
    newest = max(bases, key=lambda b: (b.time_ns, b.start), default=None)
    if newest is not None and newest.stream != state.stream and newest.time_ns > state.base_time_ns:
        state = _rebuild(repo, found, dest, state, newest, report)
        found = _found(repo, state.database, report, known)
    chain = walk(found, state.stream, state.position, state.newest_ns, None, state.database)
    pieces, stopped_at = chain.pieces[:per_pass], chain.stopped_at if len(chain.pieces) <= per_pass else ""
    problem = chain.stop.message if chain.stop is not None and stopped_at else ""
    with open(dest, "rb") as f:
        page_size = database_page_size(f.read(100))
    overlay = _Overlay(-(-dest.stat().st_size // page_size))
    applier = Applier(overlay, state.resume, page_size, dest.name)
    applied: list[StoredSegment] = []
    for piece in pieces:
        overlay.mark()
        transactions = applier.transactions
        try:
            applier.apply(piece.header, segments.load(repo, piece))
        except IntegrityError as exc:
            overlay.back()
            applier.transactions = transactions
            stopped_at, problem = piece.header.name, exc.message
            break
        applied.append(piece)
    if applied:
        _write_undo(dest, state, overlay, page_size)
        _write_pages(dest, overlay, page_size)
        verdict = check(dest, "quick_check")
        if verdict != "ok":
            _play_undo(dest, state, quiet)
            stopped_at = applied[0].header.name
            problem = _("the file failed PRAGMA quick_check after this pass ({result}); the pass was "
                        "undone").format(result=verdict)
        else:
            resume = applier.resume
            state.position, state.wal_header = resume.position, resume.wal_header
            state.checksum = resume.checksum
            state.newest_ns = applied[-1].header.time_ns
            state.since_ns = since_of(applied[-1])
            state.applied += len(applied)
            state.transactions += applier.transactions
            state.save()
            _undo_path(dest).unlink()
            posix.fsync_dir(dest.parent)
    behind = [s.header for s in found if s.header.stream == state.stream and s.header.kind == "log"
              and s.header.start >= state.position]
    state.behind_pieces, state.behind_bytes = len(behind), sum(h.size for h in behind)
    if stopped_at and stopped_at != state.gap:
        report(_("the standby stops before the log piece {name}: {problem}").format(
            name=stopped_at, problem=problem))
    state.gap, state.problem = stopped_at, problem
    state.last_pass_ns = time.time_ns()
    state.save()
    return state


@dataclass(frozen=True)
class SqlitePromoted:
    state: SqliteStandbyState
    integrity: str  # "ok" or what PRAGMA integrity_check found
    last_pass: str  # "" or why the last pass could not be made


def promote(repo: Repository | None, target: str | os.PathLike[str],
            report: Reporter = quiet) -> SqlitePromoted:
    """Make the standby the database the pharmacy software uses: a last pass (`repo` None: the
    repository cannot be reached), PRAGMA integrity_check, the state marked promoted."""
    dest = Path(os.path.abspath(target))
    with _locked(dest, wait=True):  # a pass in progress ends first
        state = SqliteStandbyState.load(dest)
        last_pass = ""
        if repo is not None and not state.promoted_ns:
            try:
                state = _follow(repo, dest, report, None, PIECES_PER_PASS)
            except CoffreError as exc:
                last_pass = exc.message
                report(_("the last pass failed ({reason}): promoting with what was applied").format(
                    reason=exc.message))
                state = SqliteStandbyState.load(dest)
        if not state.promoted_ns:
            _recover(dest, state, report)
        verdict = check(dest, "integrity_check")
        if verdict == "ok" and not state.promoted_ns:
            state.promoted_ns = time.time_ns()
            state.save()
    return SqlitePromoted(state, verdict, last_pass)


def lag_seconds(state: SqliteStandbyState, now_ns: int) -> float | None:
    return None if not state.newest_ns else (now_ns - state.newest_ns) / 1e9
