"""The warm standby: a second machine keeps a PostgreSQL cluster in recovery, fed only from
the repository (so it also follows from an off-site copy), ready to take over in minutes.

- `init`: the latest base backup is unpacked into a new data folder, told to stay in standby
  (standby.signal) and to take its WAL from a staging folder beside it
  (postgresql.auto.conf: restore_command, archive_cleanup_command), which the follower fills.
  The pharmacy's provider then starts the server as usual (pg_ctlcluster, systemd).
- `follow` (each pass): the WAL stored since the last pass is read, checked, and staged in
  chain order; the lag is written to the state file (seconds since the newest piece staged
  was captured, pieces and bytes). A gap stops the staging there and is reported: the standby
  never skips one.
- `promote`: a last pass, then PostgreSQL is asked to promote (it replays every staged file
  first), opens read-write on a new timeline, is checked (every table of every database read) and
  the staging settings are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from coffre.continuity import pg_timeline
from coffre.continuity.pg_fetch import write_beside
from coffre.continuity.pg_push import system_identifier
from coffre.continuity.pg_recovery import backup_label, choose_base, fetch_command, histories, stream_pieces
from coffre.continuity.standby_lock import held
from coffre.core.errors import CoffreError
from coffre.core.files import write_atomic
from coffre.core.i18n import _, ngettext
from coffre.core.posix import Account
from coffre.core.progress import NULL_PROGRESS, Progress
from coffre.format.segment import SegmentHeader
from coffre.format.snapshot import Snapshot
from coffre.ops.common import Reporter, quiet
from coffre.ops.databases import restore_database
from coffre.repository import segments
from coffre.repository.repo import Repository
from coffre.sources.databases.command import service_account
from coffre.sources.databases.pgcluster import ClusterFolder
from coffre.sources.databases.pglib import make_conninfo, psycopg
from coffre.sources.databases.postgres import PostgresTarget, program

STATE = "standby.json"
STAGING = "wal"
LOCK = "standby.lock"  # one command at a time (continuity/standby_lock.py)
MARK = "# Coffre standby (coffre standby init); removed by coffre standby promote"
_AMCHECK_INSTALLED = "SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'amcheck'"
KEEP_NAMES = 1_000  # staged names remembered (for history files; logs go by position)


@dataclass
class StandbyState:
    pgdata: str
    stream: str
    start_lsn: int
    start_timeline: int
    base_snapshot: str
    staged: list[str] = field(default_factory=list)  # the latest names staged (history files all)
    staged_count: int = 0
    staged_through: int = -1  # start of the last log piece staged: the next pass goes on after it
    newest_ns: int = 0  # capture time of the newest piece staged
    last_pass_ns: int = 0
    behind_pieces: int = 0  # stored but not staged (a gap stops the staging)
    behind_bytes: int = 0  # their WAL bytes
    gap: str = ""
    promoted_ns: int = 0

    def save(self, folder: Path) -> None:
        write_atomic(folder / STATE, json.dumps(asdict(self), indent=1).encode(), 0o600)

    @classmethod
    def load(cls, folder: Path) -> StandbyState:
        try:
            raw = json.loads((folder / STATE).read_text())
            return cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
        except FileNotFoundError:
            raise CoffreError(_("{folder} is not a standby's folder (no {state})").format(
                folder=folder, state=STATE), _("set it up with 'coffre standby init'")) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise CoffreError(_("{file} cannot be read: {reason}").format(
                file=folder / STATE, reason=exc)) from None


def state_folder(pgdata: Path) -> Path:
    return pgdata.with_name(pgdata.name + ".coffre-standby")


def _conf_value(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def init(repo: Repository, snaps: list[Snapshot], pgdata: Path, report: Reporter = quiet,
         progress: Progress = NULL_PROGRESS, account: Account | None = None) -> StandbyState:
    account = account if account is not None else service_account("postgres")
    snap, record = choose_base(snaps, None)
    target = ClusterFolder(str(pgdata), account)
    folder = state_folder(pgdata)
    if not target.is_empty() or folder.exists():
        raise CoffreError(_("{target} is not empty; nothing was changed").format(
            target=target.describe() if not target.is_empty() else folder), target.replace_hint)
    restore_database(repo, snap, record, target, report=report, progress=progress)
    folder.mkdir(mode=0o711)
    folder.chmod(0o711)  # whatever the umask: the server's account passes through to its staging
    staging = folder / STAGING
    staging.mkdir(mode=0o700)
    if account is not None:
        os.chown(staging, account.pw_uid, account.pw_gid)
    start, tli = backup_label(pgdata)
    state = StandbyState(str(pgdata), f"postgres:{system_identifier(pgdata)}", start, tli, snap.id)
    settings = {
        "restore_command": fetch_command(staging),
        "archive_cleanup_command": " ".join(
            [shlex.quote(program("pg_archivecleanup")), shlex.quote(str(staging)), "%r"]),
        "recovery_target_timeline": "latest",
    }
    auto = pgdata / "postgresql.auto.conf"
    text = auto.read_text() if auto.exists() else ""
    text += "\n" + MARK + "\n" + "".join(f"{k} = {_conf_value(v)}\n" for k, v in settings.items())
    _write_owned(auto, text.encode(), account)
    _write_owned(pgdata / "standby.signal", b"", account)
    state.save(folder)
    return state


def _write_owned(path: Path, data: bytes, account: Account | None) -> None:
    write_atomic(path, data, 0o600)
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def follow(repo: Repository, pgdata: Path, report: Reporter = quiet,
           account: Account | None = None, known: dict[str, SegmentHeader] | None = None) -> StandbyState:
    """One pass: stage what the repository holds beyond what was staged. `known`: the headers
    read by earlier passes (objects never change), so a pass reads only the new ones."""
    folder = state_folder(pgdata)
    if not folder.is_dir():
        StandbyState.load(folder)  # says it is not a standby's folder
    with _locked(pgdata):
        return _follow(repo, pgdata, report, account, known)


def _locked(pgdata: Path, wait: bool = False) -> contextlib.AbstractContextManager[None]:
    """One command at a time on the standby (continuity/standby_lock.py)."""
    return held(state_folder(pgdata) / LOCK, str(pgdata), wait)


def _follow(repo: Repository, pgdata: Path, report: Reporter, account: Account | None,
            known: dict[str, SegmentHeader] | None) -> StandbyState:
    account = account if account is not None else service_account("postgres")
    folder = state_folder(pgdata)
    state = StandbyState.load(folder)
    if state.promoted_ns:
        raise CoffreError(_("this standby was promoted: it is the primary now"))
    stored = stream_pieces(repo, state.stream, known)
    plan = pg_timeline.plan([s.header for s in stored], state.start_lsn, state.start_timeline,
                            histories(repo, stored))
    by_header = {id(s.header): s for s in stored}
    # The plan runs in replay order: a log piece at or before the last one staged was staged
    # (and may since have been cleaned up by PostgreSQL's archive_cleanup_command).
    done = set(state.staged)
    fresh = [h for h in plan.pieces
             if (h.start > state.staged_through if h.kind == "log" else h.name not in done)]
    for header in fresh:
        write_beside(folder / STAGING / header.name, segments.load(repo, by_header[id(header)]), account)
        if header.kind == "log":
            state.newest_ns = max(state.newest_ns, header.time_ns)
            state.staged_through = header.start
        state.staged.append(header.name)
        state.staged_count += 1
    state.staged = state.staged[-KEEP_NAMES:]
    behind = [s for s in stored if s.header.kind == "log" and s.header.start > state.staged_through]
    state.behind_pieces, state.behind_bytes = len(behind), sum(s.header.size for s in behind)
    if plan.gap and plan.gap != state.gap:
        report(_("the WAL file {name} is missing from the repository: the standby cannot go past it; "
                 "set it up again from a newer base backup").format(name=plan.gap))
    state.gap = plan.gap
    state.last_pass_ns = time.time_ns()
    state.save(folder)
    return state


@dataclass
class Promoted:
    state: StandbyState
    last_transaction: str
    timeline: int
    checks: list[tuple[str, bool, str]]
    databases: list[str]
    connect: str


def _connect(sockets: str, port: int, user: str) -> psycopg.Connection[Any]:
    return psycopg.connect(make_conninfo(host=sockets, port=str(port), user=user, dbname="postgres"),
                           autocommit=True, connect_timeout=10)


def promote(repo: Repository | None, pgdata: Path, sockets: str, port: int, user: str,
            report: Reporter = quiet, account: Account | None = None, check: bool = True) -> Promoted:
    """Turn the standby into the primary. `repo` None: the repository cannot be reached (the
    last pass is skipped; what was staged is replayed). A pass in progress ends first."""
    with _locked(pgdata, wait=True):
        return _promote(repo, pgdata, sockets, port, user, report, account, check)


def _promote(repo: Repository | None, pgdata: Path, sockets: str, port: int, user: str,
             report: Reporter, account: Account | None, check: bool) -> Promoted:
    if repo is not None:
        try:
            _follow(repo, pgdata, report, account, None)
        except CoffreError as exc:
            report(_("the last pass failed ({reason}): promoting with what was staged").format(
                reason=exc.message))
    folder = state_folder(pgdata)
    state = StandbyState.load(folder)
    try:
        with contextlib.closing(_connect(sockets, port, user)) as conn:
            if conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone() == (True,):
                row = conn.execute("SELECT pg_catalog.pg_promote(true, 600)").fetchone()
                if row != (True,):
                    raise CoffreError(_("PostgreSQL did not finish its promotion in 10 minutes"))
            last = conn.execute("SELECT pg_catalog.pg_last_xact_replay_timestamp()::text").fetchone()
            conn.execute("ALTER SYSTEM RESET restore_command")
            conn.execute("ALTER SYSTEM RESET archive_cleanup_command")
            conn.execute("SELECT pg_catalog.pg_reload_conf()")
            conn.execute("CHECKPOINT")
            timeline = conn.execute("SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()").fetchone()
            databases = [str(r[0]) for r in conn.execute(
                "SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate "
                "ORDER BY datname")]
    except psycopg.Error as exc:
        raise CoffreError(_("cannot reach the standby's PostgreSQL on {socket} port {port}: {reason}").format(
            socket=sockets, port=port, reason=" ".join(str(exc).split()))) from None
    checks = _checks(sockets, port, user, databases) if check else []
    state.promoted_ns = time.time_ns()
    state.save(folder)
    return Promoted(state, str(last[0]) if last and last[0] else "", int(timeline[0]) if timeline else 0,
                    checks, databases, _where(port))


def _checks(sockets: str, port: int, user: str, databases: list[str]) -> list[tuple[str, bool, str]]:
    """What can be checked on the new primary without changing it: every table of every
    database read whole (row counts); pg_amcheck where the amcheck extension is installed
    (Coffre does not install it into the pharmacy's databases)."""
    checks = []
    for db in databases:
        dsn = make_conninfo(host=sockets, port=str(port), user=user, dbname=db)
        try:
            counts = PostgresTarget(dsn).row_counts()
        except CoffreError as exc:
            checks.append((_("{database}: every table read").format(database=db), False, exc.message))
            continue
        tables = ngettext("{n} table", "{n} tables", len(counts)).format(n=len(counts))
        rows = ngettext("{n} row", "{n} rows", sum(counts.values())).format(n=sum(counts.values()))
        checks.append((_("{database}: every table read").format(database=db), True, f"{tables}, {rows}"))
        try:
            with contextlib.closing(psycopg.connect(dsn, autocommit=True)) as conn:
                has = conn.execute(_AMCHECK_INSTALLED).fetchone()
        except psycopg.Error:
            has = None
        if has:
            check = PostgresTarget(dsn).integrity()
            checks.append((f"{db}: {_(check.name)}", check.ok, check.detail))
    return checks


def _where(port: int) -> str:
    """What the counter software must now connect to."""
    host = socket.gethostname()
    addresses: list[str] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5,
                             check=False).stdout
        addresses = [a for a in out.split() if re.fullmatch(r"[0-9.]+", a)]
    return _("host {host} ({addresses}), port {port}").format(
        host=host, addresses=", ".join(addresses) or "?", port=port)


def lag_seconds(state: StandbyState, now_ns: int) -> float | None:
    return None if not state.newest_ns else (now_ns - state.newest_ns) / 1e9
