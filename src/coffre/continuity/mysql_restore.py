"""Point-in-time recovery of a MariaDB database: the newest dump taken before the moment (a
`--mysql` snapshot that recorded its place in the binary log), then the binary log captured
since (`coffre wal mysql`), replayed by `mariadb-binlog` into the `mariadb` client up to the
moment or as far as it goes.

Everything is checked before the database is touched: the pieces from the start of the dump's
binary log file on are joined (mysql_chain.py), read back from the repository (each checked
against its hash) and written as the server's files in a private folder; a break in them
before the moment (a recorded gap, or a piece missing from the repository) is refused, naming
the missing piece. Then the dump is restored as `restore-db` does, and
`mariadb-binlog --start-position=<the dump's> --stop-datetime=<the moment> --database=<the
dump's database> [--rewrite-db=<it>-><the target>] FILES... | mariadb --batch --sandbox`
replays the transactions of that database alone. Success is said only when both programs
exited with 0 (the client in batch mode stops at the first statement the server refuses), and
when the log reached the moment if the plan said it would.

Precision: the log stamps each event with the second its statement began. The replay stops at
the first event stamped at or after the second that holds the moment: what was committed
before that second is restored; what began in it or later is not. A transaction cut by the
stop is rolled back whole (mariadb-binlog ends its output with ROLLBACK).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from coffre.continuity import mysql_chain
from coffre.continuity.mysql_chain import Chain
from coffre.core.errors import CoffreError
from coffre.core.human import human_time
from coffre.core.i18n import N_, _
from coffre.core.progress import NULL_PROGRESS, Progress
from coffre.format.snapshot import DatabaseRecord, Snapshot
from coffre.ops.common import Reporter, quiet
from coffre.ops.databases import backup_end_ns, restore_database
from coffre.repository import segments
from coffre.repository.repo import Repository
from coffre.repository.segments import StoredSegment
from coffre.sources.databases import binlog
from coffre.sources.databases.command import ERROR_TAIL, exit_reason, find_program
from coffre.sources.databases.mysql import MysqlTarget

ENGINE = "mysql"
NOT_REACHED = "Did not reach stop datetime"
# The comment mariadb-binlog writes before each event it prints (in the zone TZ says: UTC).
EVENT_LINE = re.compile(rb"^#(\d{6}) +(\d{1,2}:\d\d:\d\d) server id \d+ +end_log_pos (\d+) ")
_CHUNK = 1 << 20


@dataclass
class Replayed:
    transactions: int = 0  # transactions that changed the database
    last_ns: int = 0  # when the last of them began (its events' stamp; 0: none)
    events_ns: int = 0  # the stamp of the last event replayed


@dataclass
class Recovered:
    snapshot: Snapshot
    record: DatabaseRecord
    stream: str
    chain: Chain
    files: list[str]
    staged_bytes: int
    replayed: Replayed
    start: str  # FILE:OFFSET where the replay began (the dump's place)
    settled: int  # where the last whole transaction replayed ends (binlog.position)


def bases(snaps: list[Snapshot], name: str | None) -> list[tuple[Snapshot, DatabaseRecord]]:
    """Dumps that recorded their place in a binary log, oldest first."""
    return [(s, d) for s in snaps for d in s.databases
            if d.engine == ENGINE and d.extra.get("stream") and d.extra.get("stream_from", "").isdigit()
            and (name is None or name in (d.name, d.file))]


def choose_base(snaps: list[Snapshot], until_ns: int | None,
                name: str | None) -> tuple[Snapshot, DatabaseRecord]:
    found = bases(snaps, name)
    if not found:
        raise CoffreError(_("no snapshot holds a MariaDB dump that recorded its place in the binary log"),
                          _("turn binary logging on (log_bin), run `coffre wal mysql`, then back up with "
                            "--mysql"))
    names = {d.name for _s, d in found}
    if name is None and len(names) > 1:
        raise CoffreError(_("the snapshots hold several MariaDB databases"),
                          _("choose one with --database: {names}").format(names=", ".join(sorted(names))))
    if until_ns is None:
        return found[-1]
    before = [(s, d) for s, d in found if backup_end_ns(s) <= until_ns]
    if not before:
        raise CoffreError(_("the oldest usable dump ended at {time}, after the moment asked for").format(
            time=human_time(backup_end_ns(found[0][0]))), _("give a later --until"))
    return before[-1]


def stop_second(until_ns: int) -> int:
    """The second the replay stops at (the log's stamps are whole seconds)."""
    return until_ns // 1_000_000_000


def datetime_text(seconds: int) -> str:
    """--stop-datetime as mariadb-binlog reads it when TZ=UTC."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def gap_error(chain: Chain, reached_ns: int) -> CoffreError:
    reached = human_time(reached_ns) if reached_ns else _("the dump's moment")
    why = _(" (recorded by the capture: {reason})").format(reason=chain.reason) if chain.reason else ""
    return CoffreError(
        _("the binary log piece {name} is missing from the repository{why}: the database can be restored "
          "up to about {time}, not later").format(name=chain.missing, why=why, time=reached),
        _("give an earlier --until, or restore a dump taken after the gap"))


def stage(repo: Repository, chain: Chain, stored: dict[int, StoredSegment], folder: Path,
          progress: Progress = NULL_PROGRESS) -> tuple[list[str], int]:
    """The chain's pieces, read and checked, written as the server's files in `folder`: their
    names in order, and the bytes written."""
    progress.phase(N_("reading the binary log"), files_total=len(chain.links), known=True)
    files: list[str] = []
    total = 0
    out = None
    try:
        for link in chain.links:
            h = link.header
            name = h.extra.get("file", "")
            if not binlog.is_name(name) or binlog.file_start(h.start) != binlog.position(name, 0):
                raise CoffreError(_("segment {name}: its header does not name its binary log file").format(
                    name=h.name))
            if not files or files[-1] != name:
                if out is not None:
                    out.close()
                files.append(name)
                out = open(folder / name, "xb")  # noqa: SIM115  (closed when the next file begins)
            data = segments.load(repo, stored[id(h)]) if h.size else b""
            assert out is not None
            out.write(data[link.skip:])
            total += len(data) - link.skip
            progress.advance(1, len(data))
    finally:
        if out is not None:
            out.close()
    return files, total


@dataclass
class Survey:
    stop: binlog.Event | None  # the first event stamped at or after the stop (None: none stored)
    transactions: int  # transactions before it that change the database (row events)
    settled: int = 0  # where the last whole transaction before it ends (binlog.position)


def survey(folder: Path, files: list[str], offset: int, database: str, second: int | None) -> Survey:
    """What the replay must do, read from the staged files from `offset` of the first one on:
    where it stops (the first event stamped at or after `second`), and how many transactions
    that change `database` it applies before (each ends with its XID, or a COMMIT statement
    for tables outside InnoDB). The replay's own count is compared with it. `settled`: the end
    of the last event outside any transaction (a transaction cut by the end of the files is
    not replayed: mariadb-binlog rolls it back; the next replay starts from there)."""
    wanted = database.encode()
    count, touched = 0, False
    settled = binlog.position(files[0], offset) if files else 0
    inside = 0  # 0: between transactions; 1: in BEGIN ... COMMIT/XID; 2: one standalone statement
    for i, name in enumerate(files):
        with open(folder / name, "rb") as f:
            at = offset if i == 0 else len(binlog.MAGIC)
            while True:
                f.seek(at)
                head = f.read(binlog.HEADER.size)
                if len(head) < binlog.HEADER.size:
                    break
                stamp, kind, _server, length, log_pos, _flags = binlog.HEADER.unpack(head)
                if length < binlog.HEADER.size:
                    raise CoffreError(_("{file}: impossible event at offset {offset}").format(
                        file=name, offset=at))
                if second is not None and stamp >= second:
                    return Survey(binlog.Event(at, length, kind, stamp, log_pos), count, settled)
                body = length - binlog.HEADER.size
                text = b""
                if kind == binlog.QUERY_EVENT:
                    text = binlog.query_text(f.read(min(body, 4096)))
                elif kind == binlog.GTID_EVENT:
                    inside = 2 if binlog.gtid_standalone(f.read(min(body, 16))) else 1
                if kind == binlog.TABLE_MAP_EVENT:
                    f.seek(at + binlog.HEADER.size)
                    touched |= binlog.table_map_database(f.read(min(body, 512))) == wanted
                elif touched and (kind == binlog.XID_EVENT or text.startswith(b"COMMIT")):
                    count += 1
                    touched = False
                if kind == binlog.XID_EVENT or text.startswith((b"COMMIT", b"ROLLBACK")) or (
                        kind == binlog.QUERY_EVENT and inside == 2):
                    inside = 0
                elif text.startswith(b"BEGIN"):
                    inside = 1
                at += length
                if not inside:
                    settled = binlog.position(name, at)
    return Survey(None, count, settled)


class _Watch:
    """Reads the replayed text as it passes: counts the database's transactions, notes when."""

    def __init__(self) -> None:
        self.done = Replayed()
        self._line = b""
        self._stamp = 0
        self._changes = False  # the open transaction changed a table of the database

    def feed(self, data: bytes) -> None:
        lines = (self._line + data).split(b"\n")
        self._line = lines.pop()[:4096]
        for line in lines:
            if line.startswith(b"#"):
                m = EVENT_LINE.match(line)
                if m is None:
                    continue
                day, clock = m.group(1).decode(), m.group(2).decode()
                when = dt.datetime.strptime(f"20{day} {clock}", "%Y%m%d %H:%M:%S").replace(tzinfo=dt.UTC)
                self._stamp = int(when.timestamp()) * 1_000_000_000
                self.done.events_ns = self._stamp
                if b"\tTable_map: " in line:
                    self._changes = True
                elif b"\tXid = " in line and self._changes:
                    self.done.transactions += 1
                    self.done.last_ns = self._stamp
                    self._changes = False
            elif line.startswith(b"COMMIT") and self._changes:
                self.done.transactions += 1
                self.done.last_ns = self._stamp
                self._changes = False


class Edit(Protocol):
    """Changes the replayed text on its way to the client (the standby adds its position)."""

    def feed(self, data: bytes) -> bytes: ...

    def end(self) -> bytes: ...


def binlog_argv(files: list[str], origin: str, dest: str, start: int, *bounds: str) -> list[str]:
    """mariadb-binlog printing the transactions of `origin` from `start` in the first of
    `files` (0: its beginning), under the name `dest`."""
    if "->" in origin or "->" in dest:
        raise CoffreError(_("a database name holding '->' cannot be replayed under another name"))
    return [find_program("mariadb-binlog", "mysqlbinlog"), "--no-defaults",
            *([f"--start-position={start}"] if start else []), *bounds,
            f"--database={origin}", *([f"--rewrite-db={origin}->{dest}"] if dest != origin else []), *files]


def replay(argv_log: list[str], argv_client: list[str], folder: Path, client_env: dict[str, str] | None,
           what: str, edit: Edit | None = None) -> tuple[Replayed, str]:
    """mariadb-binlog | mariadb: what was replayed, and mariadb-binlog's warnings."""
    log_err, client_out = folder / "binlog.err", folder / "client.out"
    log_env = {k: v for k, v in os.environ.items() if k != "MYSQL_PWD"} | {"TZ": "UTC"}
    watch = _Watch()
    with open(log_err, "wb") as err, open(client_out, "wb") as out:
        try:
            reader = subprocess.Popen(argv_log, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                      env=log_env, cwd=folder)
        except OSError as exc:
            raise CoffreError(_("cannot run {program}: {reason}").format(
                program=argv_log[0], reason=exc.strerror)) from None
        try:
            client = subprocess.Popen(argv_client, stdin=subprocess.PIPE, stdout=out,
                                      stderr=subprocess.STDOUT, env=client_env)
        except OSError as exc:
            reader.kill()
            reader.wait()
            raise CoffreError(_("cannot run {program}: {reason}").format(
                program=argv_client[0], reason=exc.strerror)) from None
        assert reader.stdout is not None and client.stdin is not None
        stopped_reading = False
        try:
            for data in iter(lambda: reader.stdout.read(_CHUNK), b""):  # type: ignore[union-attr]
                watch.feed(data)
                client.stdin.write(edit.feed(data) if edit is not None else data)
            if edit is not None:
                client.stdin.write(edit.end())
            client.stdin.close()
        except BrokenPipeError:
            stopped_reading = True
        except BaseException:
            reader.kill()
            client.kill()
            reader.wait()
            client.wait()
            raise
        finally:
            if stopped_reading:
                reader.kill()
        log_status, client_status = reader.wait(), client.wait()
    warnings = _tail(log_err)
    if client_status != 0 or stopped_reading:
        raise CoffreError(_("{what}: the client {reason}; the database holds the dump and only part of the "
                            "log").format(what=what, reason=exit_reason(client_status or 1))
                          + _tail(client_out, "\n"),
                          _("restore again into an empty database once the cause is fixed"))
    if log_status != 0:
        raise CoffreError(_("{what}: mariadb-binlog {reason}; the database holds the dump and only part of "
                            "the log").format(what=what, reason=exit_reason(log_status)) + "\n" + warnings)
    return watch.done, warnings


def _tail(path: Path, before: str = "") -> str:
    try:
        text = path.read_bytes()[-ERROR_TAIL:].decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return before + text if text else ""


def recover(repo: Repository, snaps: list[Snapshot], dsn: str, until_ns: int | None,
            database: str | None = None, force: bool = False, report: Reporter = quiet,
            progress: Progress = NULL_PROGRESS, work_dir: str | None = None) -> Recovered:
    """Restore the dump chosen for `until_ns` (None: the latest moment captured) into the
    database of `dsn`, then replay the binary log up to that moment."""
    snap, record = choose_base(snaps, until_ns, database)
    target = MysqlTarget.from_dsn(dsn)
    stream, start = record.extra["stream"], int(record.extra["stream_from"])
    origin, dest = record.name, target.conn.database
    binlog_argv([], origin, dest, 0)  # names checked before anything is touched
    client = target.client()  # its sandbox checked before anything is touched
    if not force and not target.is_empty():
        raise CoffreError(_("{target} is not empty; nothing was changed").format(target=target.describe()),
                          target.replace_hint)
    report(_("dump: snapshot {id} of {time}, at {place} in the binary log").format(
        id=snap.id[:8], time=human_time(snap.time_ns),
        place=f"{record.extra.get('binlog_file', '')}:{record.extra.get('binlog_position', '')}"))
    errors: list[str] = []
    stored = [s for s in segments.listing(repo, errors=errors) if s.header.stream == stream]
    for e in errors:
        report(e)
    headers = [s.header for s in stored]
    chain = mysql_chain.follow(headers, binlog.file_start(start))
    if not chain.links:
        name = chain.missing or mysql_chain.name_at(binlog.file_start(start), mysql_chain.file_names(headers))
        raise CoffreError(_("the binary log piece {name} is missing from the repository: no log follows the "
                            "dump").format(name=name),
                          _("run `coffre wal mysql` and `coffre wal ship` before the backups"))
    if chain.end < start or (chain.missing and until_ns is None):
        raise gap_error(chain, _reached(chain, start))
    folder = Path(tempfile.mkdtemp(prefix="coffre-binlog-", dir=work_dir))
    try:
        files, staged = stage(repo, chain, {id(s.header): s for s in stored}, folder, progress)
        offset = binlog.split(start)[1]
        expect_stop = False
        plan = survey(folder, files, offset, origin, None if until_ns is None else stop_second(until_ns))
        if until_ns is not None:
            expect_stop = plan.stop is not None
            if plan.stop is None:
                if chain.missing:
                    raise gap_error(chain, _reached(chain, start))
                captured = max(h.time_ns for h in headers)
                if captured < until_ns:
                    raise CoffreError(
                        _("the binary log in the repository ends at about {time}, before the moment asked "
                          "for").format(time=human_time(captured)),
                        _("give an earlier --until, or --until latest"))
        report(_("restoring the dump into {target}").format(target=target.describe()))
        restore_database(repo, snap, record, target, force=force, report=report, progress=progress)
        progress.phase(N_("replaying the binary log"))
        stop_at = [] if until_ns is None else [f"--stop-datetime={datetime_text(stop_second(until_ns))}"]
        argv = binlog_argv(files, origin, dest, offset, *stop_at)
        done, warnings = replay(argv, client, folder, target.conn.env,
                                _("replaying the binary log into {target}").format(target=target.describe()))
        if expect_stop and NOT_REACHED in warnings:
            raise CoffreError(_("mariadb-binlog ended before the moment asked for, although the log "
                                "holds it; the database holds the dump and the log up to its end")
                              + "\n" + warnings)
        if done.transactions != plan.transactions:
            raise CoffreError(_("the log holds {expected} transactions of {name} up to the moment, but "
                                "{replayed} were replayed: the restored database is not what it was").format(
                                    expected=plan.transactions, name=origin, replayed=done.transactions),
                              _("restore again into an empty database; keep this one for investigation"))
        return Recovered(snap, record, stream, chain, files, staged, done,
                         f"{record.extra.get('binlog_file', '')}:{offset}", plan.settled)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _reached(chain: Chain, start: int) -> int:
    """About when the last piece before the break was captured (0: not past the dump)."""
    past = [link.header.time_ns for link in chain.links if link.header.end > start]
    return max(past, default=0)

