"""Point-in-time recovery of a PostgreSQL cluster: a base backup (a `--postgres-cluster`
snapshot), then the WAL stored since, replayed by PostgreSQL itself up to a chosen moment or
as far as it goes.

The pieces the recovery needs are planned first (pg_timeline.py): a gap on the way is refused
before anything is replayed, naming the missing file and the latest moment that can be
reached. They are then read from the repository, checked, and staged in a folder beside the
data folder; a PostgreSQL server started by Coffre (as the data folder's owner, on a socket of
its own, archiving nothing) replays them (restore_command copies from the staging folder) and opens the
database read-write. Coffre reports the last transaction replayed, shuts the server down
cleanly and leaves the data folder ready to start. Nothing is said to be restored that
PostgreSQL did not reach.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shlex
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coffre.continuity import pg_timeline, positions
from coffre.continuity.pg_fetch import write_beside
from coffre.continuity.pg_push import system_identifier
from coffre.core.errors import CoffreError
from coffre.core.human import human_time
from coffre.core.i18n import N_, _
from coffre.core.posix import Account
from coffre.core.progress import NULL_PROGRESS, Progress
from coffre.format.segment import SegmentHeader
from coffre.format.snapshot import DatabaseRecord, Snapshot
from coffre.ops.common import Reporter, quiet
from coffre.ops.databases import backup_end_ns, restore_database
from coffre.repository import segments
from coffre.repository.repo import Repository
from coffre.repository.segments import StoredSegment
from coffre.sources.databases.command import file_tail, service_account
from coffre.sources.databases.pgcluster import ClusterFolder
from coffre.sources.databases.pgdrill import local
from coffre.sources.databases.pglib import psycopg
from coffre.sources.databases.postgres import program
from coffre.sources.databases.throwaway import DrillFolder, Server

ENGINE = "postgres-cluster"
# Whatever the restored configuration says, the recovering server listens on its own socket
# only, archives nothing and loads no library; the data folder keeps its own settings for later.
RECOVERY_SETTINGS = {
    "listen_addresses": "", "port": "5432", "archive_mode": "off", "ssl": "off",
    "shared_preload_libraries": "", "session_preload_libraries": "", "local_preload_libraries": "",
    "hot_standby": "on", "recovery_target_timeline": "latest",
}
_NOT_REACHED = "recovery ended before configured recovery target was reached"
_LABEL_START = re.compile(r"^START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+)", re.M)
_LABEL_TIMELINE = re.compile(r"^START TIMELINE: (\d+)", re.M)


@dataclass
class Recovered:
    snapshot: Snapshot
    record: DatabaseRecord
    stream: str
    plan: pg_timeline.Plan
    staged_bytes: int
    last_transaction: str  # as PostgreSQL reports it ("" when no transaction was replayed)
    timeline: int


def bases(snaps: list[Snapshot]) -> list[tuple[Snapshot, DatabaseRecord]]:
    """Cluster base backups, oldest first."""
    return [(s, d) for s in snaps for d in s.databases if d.engine == ENGINE]


def choose_base(snaps: list[Snapshot], until_ns: int | None) -> tuple[Snapshot, DatabaseRecord]:
    found = bases(snaps)
    if not found:
        raise CoffreError(_("no snapshot holds a PostgreSQL cluster base backup"),
                          _("back up with --postgres-cluster, then the WAL makes any later moment "
                            "restorable"))
    if until_ns is None:
        return found[-1]
    before = [(s, d) for s, d in found if backup_end_ns(s) <= until_ns]
    if not before:
        first = found[0][0]
        raise CoffreError(_("the oldest base backup ended at {time}, after the moment asked for").format(
            time=human_time(backup_end_ns(first))), _("give a later --until"))
    return before[-1]


def backup_label(pgdata: Path) -> tuple[int, int]:
    """(start LSN, start timeline) from the restored base backup's backup_label."""
    try:
        text = (pgdata / "backup_label").read_text(errors="replace")
    except OSError as exc:
        raise CoffreError(_("the base backup has no readable backup_label ({reason})").format(
            reason=exc.strerror)) from None
    start, tli = _LABEL_START.search(text), _LABEL_TIMELINE.search(text)
    if not start or not tli:
        raise CoffreError(_("the base backup's backup_label does not say where its WAL starts"))
    return positions.parse_lsn(start.group(1)), int(tli.group(1))


def stream_pieces(repo: Repository, stream: str,
                  known: dict[str, SegmentHeader] | None = None) -> list[StoredSegment]:
    """The stream's stored pieces (`known`: headers already read, see segments.listing)."""
    return [s for s in segments.listing(repo, errors=[], known=known) if s.header.stream == stream]


def histories(repo: Repository, stored: list[StoredSegment]) -> dict[int, list[tuple[int, int]]]:
    out = {}
    for seg in stored:
        tli = positions.history_timeline(seg.header.name)
        if seg.header.kind == "history" and tli is not None and tli not in out:
            out[tli] = positions.parse_history(segments.load(repo, seg).decode("utf-8", "replace"))
    return out


def plan_for(repo: Repository, stream: str, pgdata: Path) -> tuple[pg_timeline.Plan, list[StoredSegment]]:
    stored = stream_pieces(repo, stream)
    start, tli = backup_label(pgdata)
    return pg_timeline.plan([s.header for s in stored], start, tli, histories(repo, stored)), stored


def gap_error(plan: pg_timeline.Plan) -> CoffreError:
    reached = human_time(plan.reached_ns) if plan.reached_ns else _("the end of the base backup")
    return CoffreError(
        _("the WAL file {name} is missing from the repository: the database can be restored up to "
          "about {time}, not later").format(name=plan.gap, time=reached),
        _("give an earlier --until, or restore a base backup taken after the gap"))


def short_error(plan: pg_timeline.Plan) -> CoffreError:
    reached = human_time(plan.reached_ns) if plan.reached_ns else _("the end of the base backup")
    return CoffreError(_("the WAL in the repository ends at about {time}, before the moment asked "
                         "for").format(time=reached), _("give an earlier --until, or --until latest"))


def stage(repo: Repository, plan: pg_timeline.Plan, stored: list[StoredSegment], folder: Path,
          account: Account | None, progress: Progress = NULL_PROGRESS) -> int:
    """The planned pieces, read and checked, as files of `folder` the server can read."""
    by_header = {id(s.header): s for s in stored}
    progress.phase(N_("staging the WAL"), files_total=len(plan.pieces), known=True)
    total = 0
    for header in plan.pieces:
        data = segments.load(repo, by_header[id(header)])
        write_beside(folder / header.name, data, account)
        total += len(data)
        progress.advance(1, len(data))
    return total


def target_text(until_ns: int) -> str:
    """A moment as recovery_target_time reads it (with its offset: never the server's zone)."""
    moment = dt.datetime.fromtimestamp(until_ns // 1_000_000_000, dt.UTC)
    micro = (until_ns % 1_000_000_000) // 1000
    return moment.replace(microsecond=micro).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def fetch_command(staging: Path) -> str:
    """restore_command from the staging folder, in plain /bin/sh (no Python, so the server's
    account needs nothing of Coffre's, and each file costs a `cp`): exit 1 only when the file
    is not staged, 126 when the copy fails (pg_fetch.py: recovery then stops)."""
    folder = shlex.quote(str(staging))
    return f'if [ -f {folder}/"%f" ]; then cp {folder}/"%f" "%p" || exit 126; else exit 1; fi'


def clean_env() -> dict[str, str]:
    """What the server and its restore_command see: nothing of Coffre's own environment (no
    secret, no log file of root's)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


class RecoveryServer:
    """PostgreSQL started on a restored data folder to replay the staged WAL."""

    def __init__(self, pgdata: Path, folder: DrillFolder, staging: Path, superuser: str,
                 settings: dict[str, str]) -> None:
        self.pgdata = pgdata
        self.sockets = folder.owned("run")
        self.superuser = superuser
        hba = folder.file("recovery_hba.conf", "local all all trust\n", 0o644)
        ident = folder.file("recovery_ident.conf", "", 0o644)
        conf = folder.file("recovery.conf", "", 0o644)
        values = {**RECOVERY_SETTINGS, "config_file": conf, "hba_file": hba, "ident_file": ident,
                  "unix_socket_directories": '"' + self.sockets.replace('"', '""') + '"',
                  "restore_command": fetch_command(staging), **settings}
        argv = [program("postgres"), "-D", str(pgdata)]
        for name, value in values.items():
            argv += ["-c", f"{name}={value}"]
        self.server = Server(argv, folder, _("PostgreSQL server"), env=clean_env())

    def query(self, statement: str) -> Any:
        with contextlib.closing(psycopg.connect(local(self.sockets, self.superuser, "postgres"),
                                                autocommit=True, connect_timeout=5)) as conn:
            cursor = conn.execute(statement)
            row = cursor.fetchone() if cursor.description else None
            return None if row is None else row[0]

    def alive(self) -> bool:
        return self.server.proc.poll() is None

    def log_tail(self) -> str:
        return file_tail(self.server.log)

    def wait(self, done: Callable[[], bool], what: str) -> None:
        """Until `done()`; CoffreError if the server stops first."""
        while True:
            if not self.alive():
                raise CoffreError(_("PostgreSQL stopped while {what}").format(what=what) + self.log_tail())
            with contextlib.suppress(psycopg.Error):
                if done():
                    return
            time.sleep(0.2)  # polling the server's progress

    def stop(self) -> None:
        """A clean (fast) shutdown: the folder is left consistent, with a checkpoint."""
        self.server.stop(signal.SIGINT)
        if self.server.proc.returncode != 0:
            raise CoffreError(_("PostgreSQL did not shut down cleanly after the recovery") + self.log_tail())


def recover(repo: Repository, snaps: list[Snapshot], pgdata: Path, until_ns: int | None,
            report: Reporter = quiet, progress: Progress = NULL_PROGRESS,
            account: Account | None = None) -> Recovered:
    """Restore the base backup chosen for `until_ns` (None: the latest moment stored) into
    the new folder `pgdata`, replay the WAL, and leave it ready to start. Nothing is left in
    `pgdata` when it fails."""
    account = account if account is not None else service_account("postgres")
    snap, record = choose_base(snaps, until_ns)
    target = ClusterFolder(str(pgdata), account)
    if not target.is_empty():
        raise CoffreError(_("{target} is not empty; nothing was changed").format(target=target.describe()),
                          target.replace_hint)
    made = not pgdata.exists()
    report(_("base backup: snapshot {id} of {time}").format(id=snap.id[:8], time=human_time(snap.time_ns)))
    folder: DrillFolder | None = None
    try:
        restore_database(repo, snap, record, target, report=report, progress=progress)
        system = system_identifier(pgdata)
        stream = f"postgres:{system}"
        plan, stored = plan_for(repo, stream, pgdata)
        if plan.gap and until_ns is None:
            raise gap_error(plan)
        folder = DrillFolder(".coffre-recovery-", str(pgdata.parent), account)
        staging = Path(folder.owned("wal"))
        staged = stage(repo, plan, stored, staging, account, progress)
        settings = {"recovery_target_action": "promote"}
        if until_ns is not None:
            settings["recovery_target_time"] = target_text(until_ns)
        (pgdata / "recovery.signal").touch()
        if account is not None:
            os.chown(pgdata / "recovery.signal", account.pw_uid, account.pw_gid)
        progress.phase(N_("replaying the WAL"))
        server = RecoveryServer(pgdata, folder, staging, record.extra.get("superuser", "postgres"), settings)
        try:
            try:
                server.wait(lambda: server.query("SELECT NOT pg_catalog.pg_is_in_recovery()") is True,
                            _("replaying the WAL"))
            except CoffreError as exc:
                if _NOT_REACHED in server.log_tail():
                    raise gap_error(plan) if plan.gap else short_error(plan) from None
                raise exc from None
            last = server.query("SELECT pg_catalog.pg_last_xact_replay_timestamp()::text") or ""
            server.query("CHECKPOINT")
            timeline = int(server.query("SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()"))
        finally:
            if server.alive():
                server.stop()
        return Recovered(snap, record, stream, plan, staged, str(last), timeline)
    except BaseException:
        if made:
            shutil.rmtree(pgdata, ignore_errors=True)
        else:
            for entry in os.scandir(pgdata) if pgdata.is_dir() else ():
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
        raise
    finally:
        if folder is not None:
            folder.remove()
