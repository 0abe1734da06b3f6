"""A warm standby MariaDB database, fed only from the repository: the latest dump, then the
binary log captured since (`coffre wal mysql`), replayed pass after pass with the restore's
own replay (mysql_restore.py), ready to take over in minutes.

- `init`: mysql_restore.recover into the empty standby database, up to the latest piece
  stored; the place reached (the end of the last whole transaction) is recorded twice: in
  the standby database's table `coffre_standby_position` and in the state file.
- `follow` (each pass): the pieces of the stream from the start of the file holding that
  place are joined (a gap or a missing piece stops the chain there: reported, never
  skipped), read back and checked, and `mariadb-binlog --start-position=<offset>` replays the
  first file from that place, then each next file whole, into the sandboxed client. Both exit
  statuses and the transaction count are checked as the restore does.
- `promote`: a last pass (unless offline), the position table dropped, CHECK TABLE on every
  table, the state marked promoted.

Exactly once. Each transaction replayed carries, just before its COMMIT, an UPDATE of the
position table to the place where it ends: the data and the place commit together or not at
all (InnoDB). A pass starts from the later of the table's place and the state file's: a crash
at any moment replays neither twice nor skips any. The state file is written after the pass
(atomically); if it is lost to a crash, the table still says where the standby is. Limits:
statements that commit on their own (DDL, tables outside InnoDB) move the table in a separate
step: a crash in the instant between the statement and the next transaction makes the next
pass replay it again, which the server refuses (e.g. "table exists"): the pass stops, says so,
and the standby is set up again with `init`; it never goes on silently.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from coffre.continuity import mysql_chain, mysql_restore
from coffre.continuity.mysql_restore import EVENT_LINE
from coffre.continuity.standby_lock import held
from coffre.core.errors import CoffreError
from coffre.core.files import write_atomic
from coffre.core.i18n import _
from coffre.core.progress import NULL_PROGRESS, Progress
from coffre.format.segment import SegmentHeader
from coffre.format.snapshot import Snapshot
from coffre.ops.common import Reporter, quiet
from coffre.repository import segments
from coffre.repository.mark import state_root
from coffre.repository.repo import Repository
from coffre.sources.databases import binlog
from coffre.sources.databases.base import Check
from coffre.sources.databases.mysql import MysqlTarget

TABLE = "coffre_standby_position"
FOLDER = "mysql-standby"
_CREATE = ("CREATE TABLE {table} (id TINYINT PRIMARY KEY, log_file VARCHAR(255) NOT NULL, "
           "log_offset BIGINT NOT NULL) ENGINE=InnoDB; INSERT INTO {table} VALUES (1, '', 0); ")


@dataclass
class MysqlStandbyState:
    dsn: str  # the standby database
    database: str  # the original database (the dump's), whose transactions are replayed
    stream: str
    base_snapshot: str
    file: str  # where the next pass starts: the end of the last whole transaction replayed
    offset: int
    transactions: int = 0  # of `database`, replayed by the passes (after init)
    newest_ns: int = 0  # capture time of the newest piece applied whole
    last_pass_ns: int = 0
    behind_pieces: int = 0  # stored but not applied (a gap stops the replay)
    behind_bytes: int = 0  # their bytes
    gap: str = ""
    error: str = ""  # why the last pass failed ("" if it did not)
    promoted_ns: int = 0
    passes: int = 0

    @property
    def position(self) -> int:
        return binlog.position(self.file, self.offset)

    def place(self) -> str:
        return f"{self.file}:{self.offset}"

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=1).encode(), 0o600)

    @classmethod
    def load(cls, path: Path) -> MysqlStandbyState:
        try:
            raw = json.loads(path.read_text())
            state = cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
            state.position  # noqa: B018  (checks the place)
            return state
        except FileNotFoundError:
            raise CoffreError(_("{file} is not a MariaDB standby's state (no such file)").format(file=path),
                              _("set it up with 'coffre standby mysql-init'")) from None
        except (ValueError, TypeError, KeyError, CoffreError) as exc:
            raise CoffreError(_("{file} cannot be read: {reason}").format(file=path, reason=exc)) from None


def default_state(dsn: str) -> Path:
    """The state of the standby database of `dsn` when --state is not given."""
    return state_root() / FOLDER / (MysqlTarget.from_dsn(dsn).conn.database + ".json")


def _locked(path: Path, wait: bool = False) -> contextlib.AbstractContextManager[None]:
    """One command at a time on a standby (continuity/standby_lock.py)."""
    return held(path.with_name(path.name + ".lock"), str(path), wait)


def _table(target: MysqlTarget) -> str:
    return f"{_ident(target.conn.database)}.{_ident(TABLE)}"


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _set_place(target: MysqlTarget, file: str, offset: int) -> str:
    return (f"UPDATE {_table(target)} SET log_file = {_literal(file)}, "  # noqa: S608
            f"log_offset = {int(offset)} WHERE id = 1")


def _table_place(target: MysqlTarget) -> int | None:
    rows = target.conn.query(f"SELECT log_file, log_offset FROM {_table(target)} WHERE id = 1",  # noqa: S608
                             _("reading the standby's position"))
    if not rows or len(rows[0]) != 2 or not binlog.is_name(rows[0][0]) or not rows[0][1].isdigit():
        return None
    return binlog.position(rows[0][0], int(rows[0][1]))


def _pieces(repo: Repository, stream: str, report: Reporter,
            known: dict[str, SegmentHeader] | None) -> list[segments.StoredSegment]:
    errors: list[str] = []
    stored = [s for s in segments.listing(repo, errors=errors, known=known) if s.header.stream == stream]
    for e in errors:
        report(e)
    return stored


def _account(state: MysqlStandbyState, headers: list[SegmentHeader], settled: int) -> None:
    """Lag figures after a pass that reached `settled`."""
    applied = [h.time_ns for h in headers if h.kind == "log" and h.end <= settled]
    state.newest_ns = max([state.newest_ns, *applied])
    behind = [h for h in headers if h.kind == "log" and h.size and h.end > settled]
    state.behind_pieces, state.behind_bytes = len(behind), sum(h.size for h in behind)


def init(repo: Repository, snaps: list[Snapshot], dsn: str, state_path: Path, database: str | None = None,
         report: Reporter = quiet, progress: Progress = NULL_PROGRESS) -> MysqlStandbyState:
    """Restore the latest dump and the log up to the latest piece into the empty database of
    `dsn`, and record where the replay stands."""
    if state_path.exists():
        raise CoffreError(_("{file} already holds a standby's state; nothing was changed").format(
            file=state_path), _("give another --state, or remove it if that standby is gone"))
    with _locked(state_path):
        done = mysql_restore.recover(repo, snaps, dsn, None, database, report=report, progress=progress)
        target = MysqlTarget.from_dsn(dsn)
        file, offset = mysql_chain.file_names(link.header for link in done.chain.links).get(
            binlog.split(done.settled)[0], ""), binlog.split(done.settled)[1]
        target.conn.query(_CREATE.format(table=_table(target)) + _set_place(target, file, offset),
                          _("recording the standby's position"))
        state = MysqlStandbyState(dsn, done.record.name, done.stream, done.snapshot.id, file, offset)
        _account(state, [link.header for link in done.chain.links], done.settled)
        state.last_pass_ns = time.time_ns()
        state.save(state_path)
        return state


class _Marks:
    """Adds, before the COMMIT of each transaction mariadb-binlog prints, the UPDATE of the
    position table to where that transaction ends in `file`."""

    def __init__(self, target: MysqlTarget, file: str) -> None:
        self.target, self.file = target, file
        self._rest = b""
        self._pending: int | None = None  # the end of the XID event just printed

    def feed(self, data: bytes) -> bytes:
        buf = self._rest + data
        cut = buf.rfind(b"\n") + 1
        self._rest, body = buf[cut:], buf[:cut]
        if self._pending is None and b"\tXid = " not in body:
            return body
        out: list[bytes] = []
        for line in body.splitlines(keepends=True):
            if self._pending is not None and line.startswith(b"COMMIT"):
                out.append(_set_place(self.target, self.file, self._pending).encode() + b";\n")
                self._pending = None
            elif line.startswith(b"#") and b"\tXid = " in line:
                m = EVENT_LINE.match(line)
                if m is not None:
                    self._pending = int(m.group(3))
            out.append(line)
        return b"".join(out)

    def end(self) -> bytes:
        rest, self._rest = self._rest, b""
        return rest


def follow(repo: Repository, state_path: Path, report: Reporter = quiet,
           known: dict[str, SegmentHeader] | None = None, work_dir: str | None = None) -> MysqlStandbyState:
    """One pass: replay what the repository holds beyond the standby's place."""
    with _locked(state_path):
        return _follow(repo, state_path, report, known, work_dir)


def _follow(repo: Repository, state_path: Path, report: Reporter,
            known: dict[str, SegmentHeader] | None, work_dir: str | None) -> MysqlStandbyState:
    state = MysqlStandbyState.load(state_path)
    if state.promoted_ns:
        raise CoffreError(_("this standby was promoted: it is the primary now"))
    target = MysqlTarget.from_dsn(state.dsn)
    in_table = _table_place(target)
    if in_table is None:
        raise CoffreError(_("{target} has no standby position (table {table})").format(
            target=target.describe(), table=TABLE), _("set it up again with 'coffre standby mysql-init'"))
    stored = _pieces(repo, state.stream, report, known)
    headers = [s.header for s in stored]
    if in_table > state.position:  # a pass was cut after some transactions committed
        names = mysql_chain.file_names(headers)
        seq, state.offset = binlog.split(in_table)
        state.file = names.get(seq, state.file)
    start = state.position
    chain = mysql_chain.follow(headers, binlog.file_start(start))
    gap = chain.missing if chain.missing else ""
    state.passes += 1
    state.last_pass_ns = time.time_ns()
    if chain.end < start:  # what comes before the place in its file is gone
        gap = gap or mysql_chain.name_at(chain.end, mysql_chain.file_names(headers))
    settled = start
    if chain.end > start:
        try:
            settled = _replay(repo, state, target, chain, {id(s.header): s for s in stored}, start, work_dir)
        except CoffreError as exc:
            state.error = exc.message
            state.save(state_path)
            raise
    if gap and gap != state.gap:
        report(_("the binary log piece {name} is missing from the repository: the standby cannot go past "
                 "it; set it up again from a dump taken after the gap").format(name=gap))
    state.gap = gap
    state.error = ""
    _account(state, headers, settled)
    state.save(state_path)
    return state


def _replay(repo: Repository, state: MysqlStandbyState, target: MysqlTarget, chain: mysql_chain.Chain,
            stored: dict[int, segments.StoredSegment], start: int, work_dir: str | None) -> int:
    """Replay the chain from `start`; the place reached (recorded in the table and the state)."""
    folder = Path(tempfile.mkdtemp(prefix="coffre-standby-", dir=work_dir))
    try:
        files, _size = mysql_restore.stage(repo, chain, stored, folder)
        offset = binlog.split(start)[1]
        plan = mysql_restore.survey(folder, files, offset, state.database, None)
        if plan.settled <= start:
            return start
        last_seq, last_offset = binlog.split(plan.settled)
        client = target.client()
        replayed = 0
        for i, name in enumerate(files):
            seq = binlog.sequence(name)
            if seq > last_seq:
                break
            first, size = offset if i == 0 else 0, (folder / name).stat().st_size
            if first >= size:
                continue
            bounds = [f"--stop-position={last_offset}"] if seq == last_seq and last_offset < size else []
            argv = mysql_restore.binlog_argv([name], state.database, target.conn.database, first, *bounds)
            done, _warnings = mysql_restore.replay(
                argv, client, folder, target.conn.env,
                _("replaying the binary log into the standby {target}").format(target=target.describe()),
                _Marks(target, name))
            replayed += done.transactions
        if replayed != plan.transactions:
            raise CoffreError(_("the log holds {expected} transactions of {name} from {place}, but "
                                "{replayed} were replayed: the standby is not what the primary was").format(
                                    expected=plan.transactions, name=state.database, place=state.place(),
                                    replayed=replayed),
                              _("set the standby up again with 'coffre standby mysql-init'"))
        file = next(n for n in files if binlog.sequence(n) == last_seq)
        target.conn.query(_set_place(target, file, last_offset), _("recording the standby's position"))
        state.file, state.offset = file, last_offset
        state.transactions += replayed
        return plan.settled
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Promoted:
    state: MysqlStandbyState
    check: Check
    tables: int
    rows: int
    connect: str


def promote(repo: Repository | None, state_path: Path, report: Reporter = quiet) -> Promoted:
    """Make the standby database the one the counter software uses. `repo` None: the
    repository cannot be reached (no last pass; what was replayed stays)."""
    with _locked(state_path, wait=True):  # a pass in progress ends first
        if repo is not None:
            try:
                _follow(repo, state_path, report, None, None)
            except CoffreError as exc:
                report(_("the last pass failed ({reason}): promoting with what was replayed").format(
                    reason=exc.message))
        state = MysqlStandbyState.load(state_path)
        target = MysqlTarget.from_dsn(state.dsn)
        if not state.promoted_ns:
            target.conn.query(f"DROP TABLE IF EXISTS {_table(target)}", _("removing the standby's position"))
        check = target.integrity()
        counts = target.row_counts()
        state.promoted_ns = time.time_ns()
        state.save(state_path)
    return Promoted(state, check, len(counts), sum(counts.values()), target.describe())


def lag_seconds(state: MysqlStandbyState, now_ns: int) -> float | None:
    """How far behind: since the newest piece applied was captured when pieces wait; since the
    last pass (which applied everything stored) otherwise."""
    if state.behind_pieces or state.gap:
        return None if not state.newest_ns else (now_ns - state.newest_ns) / 1e9
    return None if not state.last_pass_ns else (now_ns - state.last_pass_ns) / 1e9
