"""The status store: every run of every job, the removable disks seen, and the state of each
continuous capture, in one SQLite file in the agent's state folder (`store_path`). The agent's
job and continuity threads write to it while `coffre status` (another process) reads it.

- Crash-safe: WAL journal with synchronous=FULL, every write one `BEGIN IMMEDIATE` transaction;
  a process killed mid-write leaves the rows committed before it, nothing half-written.
- Private: the folder is 0700, the file 0600 (the journal files take the file's rights).
- Versioned: `PRAGMA user_version` is the version of THIS module's tables (1: runs,
  sightings; 2: continuity, added to a version 1 file when it is opened).
  Other parts of the agent keep their own tables in the same file (CREATE TABLE IF NOT
  EXISTS); nothing here drops or alters a table it does not own, and they must not set
  user_version.
- Untrusted on read: steps, warnings, verified, drill, db_sizes and a continuity state are
  JSON text. A damaged
  value is replaced by its empty default and reported in `StatusStore.damage` (the run is
  still listed); a row whose essential columns are damaged is skipped and reported.
- One connection per store, guarded by a lock, so job threads may share a store; another
  process waits for a writer up to `BUSY_TIMEOUT` seconds.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coffre.agent.records import (
    OUTCOMES,
    TRIGGERS,
    ContinuityStatus,
    DiskSighting,
    FilesStatus,
    Gap,
    RunRecord,
    StandbyStatus,
    StepResult,
)
from coffre.core.errors import CoffreError
from coffre.core.i18n import N_, _
from coffre.core.private import narrow
from coffre.core.sqlite_wal import use_wal

FILE_NAME = "agent.sqlite"
SCHEMA_VERSION = 2
BUSY_TIMEOUT = 30.0  # seconds another process's write may keep us waiting
MIN_KEEP_DAYS = 400  # the promise: at least 400 days of history
GOOD = ("ok", "warning")  # a run that produced its snapshot (a warning: some files unreadable)
# Stored in English (the msgid) and translated where it is shown.
STALE_ERROR = N_("the agent stopped during the run")  # written before ABANDONED_ERROR; still shown
ABANDONED_ERROR = N_("the run stopped before its end: the agent or 'coffre run' running it was stopped, "
                     "or the machine")
SETTLED_ERRORS = (STALE_ERROR, ABANDONED_ERROR)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    target TEXT NOT NULL,
    trigger TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    outcome TEXT NOT NULL,
    slot REAL,
    snapshot TEXT,
    bytes_read INTEGER NOT NULL DEFAULT 0,
    bytes_sent INTEGER NOT NULL DEFAULT 0,
    files_total INTEGER NOT NULL DEFAULT 0,
    files_changed INTEGER NOT NULL DEFAULT 0,
    warnings TEXT NOT NULL DEFAULT '[]',
    steps TEXT NOT NULL DEFAULT '[]',
    verified TEXT NOT NULL DEFAULT '{}',
    drill TEXT,
    db_sizes TEXT NOT NULL DEFAULT '{}',
    disk TEXT,
    medium_used INTEGER,
    medium_total INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, started);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started);
CREATE INDEX IF NOT EXISTS runs_by_outcome ON runs (outcome);
CREATE TABLE IF NOT EXISTS sightings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    set_name TEXT NOT NULL,
    disk_id TEXT NOT NULL,
    disk_name TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sightings_by_set ON sightings (set_name, at);
CREATE TABLE IF NOT EXISTS continuity (
    name TEXT PRIMARY KEY,
    repository TEXT NOT NULL,
    updated REAL NOT NULL,
    state TEXT NOT NULL
);
"""

_COLUMNS = ("id", "job", "target", "trigger", "started", "ended", "outcome", "slot", "snapshot",
            "bytes_read", "bytes_sent", "files_total", "files_changed", "warnings", "steps", "verified",
            "drill", "db_sizes", "disk", "medium_used", "medium_total", "error")
# The statements below are built from these constant names only, never from data.
_SELECT = "SELECT " + ", ".join(_COLUMNS) + " FROM runs"  # noqa: S608
_UPDATE = "UPDATE runs SET " + ", ".join(f"{n} = ?" for n in _COLUMNS[1:]) + " WHERE id = ?"  # noqa: S608
_INSERT = f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"  # noqa: S608
_GOOD_MARKS = ", ".join("?" * len(GOOD))
# Each job's last good run: what prune keeps however old.
_PRUNE_RUNS = (
    "DELETE FROM runs WHERE started < ? AND outcome != 'running' AND id NOT IN ("  # noqa: S608
    f" SELECT (SELECT r.id FROM runs r WHERE r.job = j.job AND r.outcome IN ({_GOOD_MARKS})"
    "          ORDER BY r.started DESC, r.id DESC LIMIT 1)"
    " FROM (SELECT DISTINCT job FROM runs) j)")


class StatusStoreError(CoffreError):
    """The status store cannot be opened or read (not a database, unreadable, too new)."""


@dataclass(frozen=True)
class Damage:
    """Something in the store that could not be read: the run (None for a sighting), the
    column, and why. Shown by `coffre status`; the rest of the store stays usable."""

    run_id: int | None
    column: str
    reason: str


def store_path(state_dir: str | Path) -> Path:
    """The store's file in the agent's state folder (Config.agent.state_dir)."""
    return Path(state_dir) / FILE_NAME


class _Damaged(Exception):
    pass


class StatusStore:
    """The runs and disk sightings of the agent (see the module's docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.damage: list[Damage] = []  # what the reads so far could not make sense of
        self._lock = threading.RLock()
        try:
            # Created private; an existing folder is left as it is (a state_dir of /var/lib
            # or /tmp must never be narrowed under other programs' feet).
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Created 0600 when missing. An existing file is not opened here: closing a
            # descriptor of it would drop every POSIX lock this process holds on it, those of
            # another connection of the same process too (then a reader elsewhere may take
            # the database for unused, checkpoint and delete its WAL under that connection).
            try:
                flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
                fd = os.open(self.path, flags, 0o600)
                os.close(fd)
            except FileExistsError:
                pass
            narrow(self.path)
            # autocommit (isolation_level None): the transactions are explicit, below.
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                       check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from exc
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            use_wal(self._db, BUSY_TIMEOUT)
            self._db.execute("PRAGMA synchronous = FULL")
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error(exc) from exc
        except StatusStoreError:
            self._db.close()
            raise

    def _error(self, exc: Exception) -> StatusStoreError:
        if isinstance(exc, PermissionError):
            return StatusStoreError(
                _("cannot open the agent's status file {path}: permission denied").format(path=self.path),
                _("run the command as the user the agent runs as (often: sudo)"))
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        damaged = isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)
        return StatusStoreError(
            _("cannot read the agent's status file {path}: {reason}").format(path=self.path, reason=reason),
            _("if the file is damaged, move it aside: the agent starts a new history") if damaged else None)

    def _migrate(self) -> None:
        # Read first: a store already up to date opens without waiting for a writer.
        if self._version() == SCHEMA_VERSION:
            return
        with self._write() as db:
            version = self._version()
            if version > SCHEMA_VERSION:
                raise StatusStoreError(
                    _("the agent's status file {path} was written by a newer version of Coffre")
                    .format(path=self.path), _("update Coffre"))
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            if version < SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _version(self) -> int:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        return int(version)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE): a read that later wants to
        write could otherwise fail at once on another process's commit instead of waiting."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise self._error(exc) from exc

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StatusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------------

    def start_run(self, job: str, target: str, trigger: str, started: float,
                  slot: float | None = None) -> int:
        """Record a run that begins (outcome "running"); its id, for `finish_run`."""
        if trigger not in TRIGGERS:
            raise ValueError(f"unknown trigger {trigger!r}")
        with self._write() as db:
            cur = db.execute("INSERT INTO runs (job, target, trigger, started, outcome, slot) "
                             "VALUES (?, ?, ?, ?, 'running', ?)", (job, target, trigger, started, slot))
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, record: RunRecord) -> None:
        """Write the whole record of run `run_id` (its end, or progress while it runs). A row
        that is gone (pruned, or a store replaced meanwhile) is written again under its id."""
        if record.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {record.outcome!r}")
        if record.trigger not in TRIGGERS:
            raise ValueError(f"unknown trigger {record.trigger!r}")
        values = _row_values(record)
        with self._write() as db:
            if db.execute(_UPDATE, (*values, run_id)).rowcount == 0:
                db.execute(_INSERT, (run_id, *values))

    def running_jobs(self) -> list[str]:
        """The jobs with a run recorded as "running": going on, or left so by a process that
        died."""
        return [str(row[0]) for row in self._read(
            "SELECT DISTINCT job FROM runs WHERE outcome = 'running' ORDER BY job")]

    def running_ids(self, job: str) -> list[int]:
        """The ids of the runs of `job` recorded as "running"."""
        return [int(row[0]) for row in self._read(
            "SELECT id FROM runs WHERE job = ? AND outcome = 'running' ORDER BY id", (job,))]

    def settle_abandoned(self, run_ids: list[int], now: float) -> int:
        """These runs, if still "running", become "interrupted", ended `now`, with
        ABANDONED_ERROR. Give ONLY ids read by `running_ids` while holding their job's lock
        (agent/locks.py): a run and its steps hold it from before its row is written until
        after its end is, so a run still "running" then was left by a process that died
        (killed, crashed, the machine stopped) with no step of it left, and nothing can write
        it again. The number of runs settled."""
        if not run_ids:
            return 0
        marks = ", ".join("?" * len(run_ids))
        with self._write() as db:
            cur = db.execute(f"UPDATE runs SET outcome = 'interrupted', ended = MAX(started, ?), error = ? "  # noqa: S608
                             f"WHERE outcome = 'running' AND id IN ({marks})",
                             (now, ABANDONED_ERROR, *run_ids))
            return cur.rowcount

    def runs(self, job: str | None = None, since: float | None = None,
             limit: int | None = None) -> list[RunRecord]:
        """The runs (of `job`, started at or after `since`), oldest first; with `limit`, the
        latest `limit` of them."""
        where, params = _where(job, since)
        sql = f"{_SELECT}{where} ORDER BY started DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params = (*params, max(0, int(limit)))
        return self._records(self._read(sql, params))[::-1]

    def last_run_id(self, job: str) -> int:
        """The id of the latest run of `job` ever started, 0 if none: a mark that every later
        run of it passes (ids only grow)."""
        rows = self._read("SELECT MAX(id) FROM runs WHERE job = ?", (job,))
        return int(rows[0][0] or 0) if rows else 0

    def run_mark(self, job: str) -> int:
        """The mark a page notes to follow the next run of `job`: the id of its latest run, or
        the id before it if that run is still running (by this agent or a `coffre run`): the
        run in progress is the one to follow."""
        rows = self._read("SELECT id, outcome FROM runs WHERE job = ? ORDER BY id DESC LIMIT 1", (job,))
        if not rows:
            return 0
        run_id, outcome = int(rows[0][0]), rows[0][1]
        return run_id - 1 if outcome == "running" else run_id

    def first_run_after(self, job: str, run_id: int) -> RunRecord | None:
        """The first run of `job` started after run `run_id` (a mark from `run_mark`). A run
        still marked running that a later run of the job follows is passed over: runs of a
        job never overlap (its lock), so its process died without a word."""
        rows = self._read(f"{_SELECT} WHERE job = ? AND id > ? ORDER BY id LIMIT 20", (job, int(run_id)))
        records = self._records(rows)  # a damaged row is skipped: the next one answers
        for i, record in enumerate(records):
            if record.outcome != "running" or i == len(records) - 1:
                return record
        return None

    def run(self, run_id: int) -> RunRecord | None:
        """The run of that id (None: unknown, pruned, or damaged)."""
        records = self._records(self._read(f"{_SELECT} WHERE id = ?", (int(run_id),)))
        return records[0] if records else None

    def last_run(self, job: str, ok_only: bool = False) -> RunRecord | None:
        """The latest run of `job` (with `ok_only`, the latest that made its snapshot: outcome
        "ok" or "warning")."""
        sql = f"{_SELECT} WHERE job = ?"
        if ok_only:
            sql += f" AND outcome IN ({_GOOD_MARKS})"
        rows = self._read(sql + " ORDER BY started DESC, id DESC LIMIT 20",
                          (job, *GOOD) if ok_only else (job,))
        records = self._records(rows)  # a damaged row is skipped: the next one answers
        return records[0] if records else None

    def _records(self, rows: list[tuple[Any, ...]]) -> list[RunRecord]:
        out = []
        for row in rows:
            record = self._record(row)
            if record is not None:
                out.append(record)
        return out

    def _report(self, damage: Damage) -> None:
        if damage not in self.damage:  # read again, reported once
            self.damage.append(damage)

    def _record(self, row: tuple[Any, ...]) -> RunRecord | None:
        v = dict(zip(_COLUMNS, row, strict=True))
        run_id = v["id"]
        try:
            essentials = {
                "job": _text(v["job"]), "target": _text(v["target"]),
                "trigger": _choice(v["trigger"], TRIGGERS), "outcome": _choice(v["outcome"], OUTCOMES),
                "started": _instant(v["started"]), "ended": _opt(_instant, v["ended"]),
                "slot": _opt(_instant, v["slot"]), "snapshot": _opt(_text, v["snapshot"]),
                "bytes_read": _count(v["bytes_read"]), "bytes_sent": _count(v["bytes_sent"]),
                "files_total": _count(v["files_total"]), "files_changed": _count(v["files_changed"]),
                "disk": _opt(_text, v["disk"]), "error": _opt(_text, v["error"]),
            }
        except _Damaged as exc:
            self._report(Damage(run_id, "row", str(exc)))
            return None
        extra: dict[str, Any] = {}
        for column, parse in (("warnings", _warnings), ("steps", _steps), ("verified", _object),
                              ("drill", _drill), ("db_sizes", _sizes)):
            try:
                extra[column] = parse(_json(v[column]))
            except _Damaged as exc:
                self._report(Damage(run_id, column, str(exc)))
        try:
            if v["medium_used"] is not None or v["medium_total"] is not None:
                extra["medium"] = (_count(v["medium_used"]), _count(v["medium_total"]))
        except _Damaged as exc:
            self._report(Damage(run_id, "medium", str(exc)))
        return RunRecord(**essentials, **extra, run_id=run_id)

    # -- removable disks ----------------------------------------------------------------------

    def record_sighting(self, sighting: DiskSighting) -> None:
        with self._write() as db:
            db.execute("INSERT INTO sightings (set_name, disk_id, disk_name, at) VALUES (?, ?, ?, ?)",
                       (sighting.set_name, sighting.disk_id, sighting.disk_name, sighting.at))

    def sightings(self, set_name: str, since: float | None = None) -> list[DiskSighting]:
        """The disks of `set_name` seen (at or after `since`), oldest first."""
        sql = "SELECT id, set_name, disk_id, disk_name, at FROM sightings WHERE set_name = ?"
        params: tuple[Any, ...] = (set_name,)
        if since is not None:
            sql += " AND at >= ?"
            params = (*params, since)
        out = []
        for sid, name, disk_id, disk_name, at in self._read(sql + " ORDER BY at, id", params):
            try:
                out.append(DiskSighting(_text(name), _text(disk_id), _text(disk_name), _instant(at)))
            except _Damaged as exc:
                self._report(Damage(None, f"sightings:{sid}", str(exc)))
        return out

    # -- continuous capture -------------------------------------------------------------------

    def record_continuity(self, status: ContinuityStatus, at: float) -> None:
        """Keep the entry's state after a pass (one row per entry, replaced)."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO continuity (name, repository, updated, state)"
                       " VALUES (?, ?, ?, ?)",
                       (status.name, status.repository, at, _dump(_continuity_map(status))))

    def continuity(self) -> dict[str, ContinuityStatus]:
        """Every entry's last recorded state, by name; a damaged one is reported and left out."""
        out = {}
        rows = self._read("SELECT name, repository, state FROM continuity ORDER BY name")
        for name, repository, state in rows:
            try:
                out[_text(name)] = _continuity_status(_text(name), _text(repository), _json(state))
            except _Damaged as exc:
                self._report(Damage(None, f"continuity:{name}", str(exc)))
        return out

    # -- history ------------------------------------------------------------------------------

    def prune(self, now: float, keep_days: float = MIN_KEEP_DAYS) -> int:
        """Forget runs and sightings older than `keep_days` (never fewer than MIN_KEEP_DAYS),
        except each job's last successful run and each disk's last sighting (what the status
        shows, however old). Runs still going are kept. The number of rows deleted."""
        cutoff = now - max(float(keep_days), MIN_KEEP_DAYS) * 86400.0
        with self._write() as db:
            runs = db.execute(_PRUNE_RUNS, (cutoff, *GOOD)).rowcount
            seen = db.execute(
                "DELETE FROM sightings WHERE at < ? AND id NOT IN ("
                " SELECT (SELECT s.id FROM sightings s WHERE s.set_name = d.set_name"
                "         AND s.disk_id = d.disk_id ORDER BY s.at DESC, s.id DESC LIMIT 1)"
                " FROM (SELECT DISTINCT set_name, disk_id FROM sightings) d)", (cutoff,)).rowcount
            gone = db.execute("DELETE FROM continuity WHERE updated < ?", (cutoff,)).rowcount
        return runs + seen + gone


# -- reading and writing the columns ----------------------------------------------------------


def _where(job: str | None, since: float | None) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    if job is not None:
        clauses.append("job = ?")
        params.append(job)
    if since is not None:
        clauses.append("started >= ?")
        params.append(since)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _dump(value: Any) -> str:
    """JSON text; whatever a step's summary holds that JSON has no form for is kept as its text:
    recording a run never fails on its summary."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _row_values(r: RunRecord) -> tuple[Any, ...]:
    """The columns after `id`, in _COLUMNS order."""
    steps = [{"name": s.name, "target": s.target, "ok": s.ok, "exit_code": s.exit_code,
              "started": s.started, "ended": s.ended, "summary": s.summary, "error": s.error}
             for s in r.steps]
    medium = r.medium or (None, None)
    return (r.job, r.target, r.trigger, r.started, r.ended, r.outcome, r.slot, r.snapshot,
            r.bytes_read, r.bytes_sent, r.files_total, r.files_changed, _dump(list(r.warnings)),
            _dump(steps), _dump(r.verified), None if r.drill is None else _dump(r.drill),
            _dump(r.db_sizes), r.disk, medium[0], medium[1], r.error)


def _json(text: Any) -> Any:
    if text is None:
        return None
    if not isinstance(text, str):
        raise _Damaged(f"not text: {type(text).__name__}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _Damaged(f"not JSON: {exc}") from None


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise _Damaged(f"not text: {v!r:.40}")
    return v


def _choice(v: Any, allowed: tuple[str, ...]) -> str:
    if v not in allowed:
        raise _Damaged(f"unexpected value {v!r:.40}")
    return str(v)


def _instant(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise _Damaged(f"not an instant: {v!r:.40}")
    return float(v)


def _count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _Damaged(f"not a count: {v!r:.40}")
    return v


def _opt(parse: Any, v: Any) -> Any:
    return None if v is None else parse(v)


def _object(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _Damaged("not an object")
    return v


def _drill(v: Any) -> dict[str, Any] | None:
    return None if v is None else _object(v)


def _warnings(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(w, str) for w in v):
        raise _Damaged("not a list of texts")
    return tuple(v)


def _sizes(v: Any) -> dict[str, int]:
    d = _object(v)
    for size in d.values():
        _count(size)
    return d


def _continuity_map(c: ContinuityStatus) -> dict[str, Any]:
    out = {k: v for k, v in vars(c).items() if k not in ("name", "repository", "gaps", "standby", "files")}
    out["gaps"] = [vars(g) for g in c.gaps]
    out["standby"] = None if c.standby is None else vars(c.standby)
    out["files"] = None if c.files is None else {**vars(c.files), "errors": list(c.files.errors)}
    return out


def _opt_instant(d: dict[str, Any], key: str) -> float | None:
    v = d.get(key)
    return None if v is None else _instant(v)


def _continuity_status(name: str, repository: str, v: Any) -> ContinuityStatus:
    d = _object(v)
    gaps = []
    for g in d.get("gaps") or []:
        g = _object(g)
        gaps.append(Gap(_text(g.get("name")), _text(g.get("stream")), _ns(g.get("time_ns")),
                        _instant(g.get("at")), _ns(g.get("end", 0))))
    standby = None
    if d.get("standby") is not None:
        sb = _object(d["standby"])
        if not isinstance(sb.get("promoted", False), bool):
            raise _Damaged("promoted is not true or false")
        standby = StandbyStatus(
            newest_ns=_ns(sb.get("newest_ns", 0)), behind_pieces=_count(sb.get("behind_pieces", 0)),
            behind_bytes=_count(sb.get("behind_bytes", 0)), behind_since=_opt_instant(sb, "behind_since"),
            staged=_count(sb.get("staged", 0)), gap=_text(sb.get("gap", "")),
            gap_since=_opt_instant(sb, "gap_since"), promoted=sb.get("promoted", False),
            last_pass=_opt_instant(sb, "last_pass"), error=_opt(_text, sb.get("error")),
            error_since=_opt_instant(sb, "error_since"))
    files = None
    if d.get("files") is not None:
        f = _object(d["files"])
        files = FilesStatus(
            applied=_text(f.get("applied", "")), applied_ns=_ns(f.get("applied_ns", 0)),
            applied_at=_opt_instant(f, "applied_at"), newest=_text(f.get("newest", "")),
            newest_ns=_ns(f.get("newest_ns", 0)), pending_since=_opt_instant(f, "pending_since"),
            written=_count(f.get("written", 0)), unchanged=_count(f.get("unchanged", 0)),
            deleted=_count(f.get("deleted", 0)), failed=_count(f.get("failed", 0)),
            errors=_warnings(f.get("errors", [])), last_check=_opt_instant(f, "last_check"),
            error=_opt(_text, f.get("error")), error_since=_opt_instant(f, "error_since"))
    return ContinuityStatus(
        name=name, repository=repository, first_seen=_instant(d.get("first_seen")),
        last_pass=_opt_instant(d, "last_pass"), last_ok=_opt_instant(d, "last_ok"),
        pieces=_count(d.get("pieces", 0)), bytes=_count(d.get("bytes", 0)),
        last_shipped=_opt_instant(d, "last_shipped"), waiting=_count(d.get("waiting", 0)),
        waiting_bytes=_count(d.get("waiting_bytes", 0)), oldest_ns=_opt(_ns, d.get("oldest_ns")),
        error=_opt(_text, d.get("error")), error_since=_opt_instant(d, "error_since"),
        source_error=_opt(_text, d.get("source_error")),
        source_error_since=_opt_instant(d, "source_error_since"), gaps=tuple(gaps),
        gaps_total=_count(d.get("gaps_total", 0)), standby=standby, files=files)


def _ns(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63:
        raise _Damaged(f"not a capture time: {v!r:.40}")
    return v


def _steps(v: Any) -> tuple[StepResult, ...]:
    if not isinstance(v, list):
        raise _Damaged("not a list")
    out = []
    for s in v:
        if not isinstance(s, dict):
            raise _Damaged("a step is not an object")
        exit_code = s.get("exit_code")
        if isinstance(exit_code, bool) or not isinstance(exit_code, int) or not isinstance(s.get("ok"), bool):
            raise _Damaged("a step without its outcome")
        out.append(StepResult(
            name=_text(s.get("name")), target=_text(s.get("target")), ok=s["ok"], exit_code=exit_code,
            started=_instant(s.get("started")), ended=_instant(s.get("ended")),
            summary=_object(s.get("summary", {})), error=_opt(_text, s.get("error"))))
    return tuple(out)
