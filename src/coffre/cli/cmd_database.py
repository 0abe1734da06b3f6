"""restore-db, drill."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
from pathlib import Path

from coffre.cli.context import add_repo_options, load_index, open_repo, reading, refuse_empty
from coffre.cli.output import human_duration, human_number, human_size, human_time, say, warn
from coffre.cli.progress import emit_summary, progress_for
from coffre.continuity import mysql_restore, pg_recovery
from coffre.continuity.sqlite_restore import restore_sqlite
from coffre.core.errors import CoffreError, UsageError
from coffre.core.i18n import _, ngettext
from coffre.format.snapshot import Snapshot
from coffre.ops.common import find_snapshot
from coffre.ops.databases import drill, find_with_databases, pick, restore_database
from coffre.repository import segments
from coffre.repository.repo import Repository
from coffre.sources.databases.engines import drill_note, target, throwaway


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("restore-db", help=_("restore a database of a snapshot into an empty database"))
    add_repo_options(p)
    p.add_argument("snapshot", help=_("snapshot id, or 'latest' (the newest holding such a database)"))
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--postgres", metavar="DSN", help=_("PostgreSQL database to restore into "
                                                           "(created if it does not exist)"))
    where.add_argument("--mysql", metavar="DSN",
                       help=_("MariaDB/MySQL database to restore into, mysql://USER@HOST/DB (created "
                              "if it does not exist)"))
    where.add_argument("--sqlite", metavar="PATH", help=_("SQLite file to restore into"))
    where.add_argument("--pgdata", metavar="DIR",
                       help=_("new, empty folder to unpack a physical PostgreSQL cluster backup into "
                              "(then start a server on it)"))
    p.add_argument("--database", metavar="NAME",
                   help=_("which database of the snapshot, when it holds several of that engine"))
    p.add_argument("--force", action="store_true",
                   help=_("replace the tables of a database that is not empty"))
    p.add_argument("--no-owner", action="store_true",
                   help=_("PostgreSQL: do not restore owners and grants (roles missing on this server)"))
    p.add_argument("--until", metavar="MOMENT",
                   help=_("with --pgdata or --mysql: point-in-time recovery from the base backup and the "
                          "captured log (WAL, binary log), up to this moment ('2026-11-30 12:31:05', local "
                          "time) or 'latest'; give 'latest' as SNAPSHOT to choose the base backup by the "
                          "moment"))
    p.set_defaults(func=cmd_restore_db)

    p = sub.add_parser("drill", help=_("restore each database of a snapshot into a throwaway "
                                       "instance, check it, and report"))
    add_repo_options(p)
    p.add_argument("snapshot", nargs="?", default="latest",
                   help=_("snapshot id (default: the newest holding a database)"))
    p.add_argument("--work-dir", metavar="DIR",
                   help=_("where the throwaway instances live (default: the temporary folder)"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_drill)


def cmd_restore_db(args: argparse.Namespace) -> int:
    for option in ("postgres", "mysql", "sqlite", "pgdata"):
        refuse_empty(f"--{option}", getattr(args, option),
                     hint=_("give the database or folder to restore into"))
    refuse_empty("--database", args.database,
                 hint=_("give the name of a database of the snapshot, or leave it out"))
    engine, where = next((e, getattr(args, e)) for e in ("postgres", "mysql", "sqlite", "pgdata")
                         if getattr(args, e))
    engine = "postgres-cluster" if engine == "pgdata" else engine
    if args.no_owner and engine != "postgres":
        raise UsageError(_("--no-owner applies to --postgres only"))
    if args.until is not None:
        return _restore_until(args, engine, where)
    dest = target(engine, where, owners=not args.no_owner)
    repo = open_repo(args)
    with reading(repo, "restore-db"):
        load_index(repo)
        snap = find_with_databases(repo, args.snapshot, engine, report=warn)
        record = pick(snap, engine, args.database)
        say(_("restoring {engine} {name} of snapshot {snapshot} into {target}").format(
            engine=record.engine, name=record.name, snapshot=snap.id[:8], target=dest.describe()))
        with progress_for(args, _("restore-db")) as progress:
            restore_database(repo, snap, record, dest, force=args.force, report=warn, progress=progress)
    if engine == "postgres-cluster":
        say(_("unpacked into {folder}: start a PostgreSQL {major} server on it "
              "(pg_ctl -D {folder} start); its configuration files come from the data folder, or "
              "from /etc/postgresql on Debian (back that folder up with the files)").format(
                  folder=where, major=record.extra.get("major", "")))
    else:
        rows = sum(record.tables.values())
        say(_("restored: {tables}, {rows} at backup time").format(
            tables=ngettext("{count} table", "{count} tables", len(record.tables)).format(
                count=human_number(len(record.tables))),
            rows=ngettext("{count} row", "{count} rows", rows).format(count=human_number(rows))))
    return 0


def parse_until(text: str) -> int | None:
    """--until: None for 'latest', else the moment in ns (a date without offset is local time)."""
    text = text.strip()
    if text == "latest":
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(_("--until {text}: not a moment").format(text=repr(text)),
                         _("e.g. --until '2026-11-30 12:31:05' (local time) or --until latest")) from None
    if when.tzinfo is None:
        when = when.astimezone()
    return int(when.timestamp()) * 10**9 + when.microsecond * 1000


def _restore_until(args: argparse.Namespace, engine: str, where: str) -> int:
    """restore-db --pgdata DIR | --sqlite FILE | --mysql DSN --until MOMENT: point-in-time
    recovery (docs/continuity.md)."""
    if engine == "sqlite":
        return _restore_sqlite_until(args, where)
    if engine == "mysql":
        return _restore_mysql_until(args, where)
    if engine != "postgres-cluster":
        raise UsageError(_("--until needs --pgdata, --sqlite or --mysql (a database whose log is "
                           "captured continuously, docs/continuity.md)"))
    until = parse_until(args.until)
    repo = open_repo(args)
    with reading(repo, "restore-db"):
        snaps = _bases(args, repo)
        with progress_for(args, _("restore-db")) as progress:
            done = pg_recovery.recover(repo, snaps, Path(where), until, report=warn, progress=progress)
    files = len(done.plan.pieces)
    say(_("recovered into {folder} from the base backup {snapshot} and {count}: the last transaction "
          "replayed was committed at {time} (timeline {timeline})").format(
              folder=where, snapshot=done.snapshot.id[:8],
              count=ngettext("{n} WAL file", "{n} WAL files", files).format(n=files),
              time=done.last_transaction or _("(none: no transaction after the base backup)"),
              timeline=done.timeline))
    say(_("start a PostgreSQL {major} server on it (pg_ctl -D {folder} start); it is read-write, on a "
          "new timeline").format(major=done.record.extra.get("major", ""), folder=where))
    return 0


def _bases(args: argparse.Namespace, repo: Repository) -> list[Snapshot]:
    """The snapshots a point-in-time restore may start from: all ('latest': the newest before
    the moment is chosen) or the one named."""
    load_index(repo)
    if args.snapshot != "latest":
        return [find_snapshot(repo, args.snapshot, report=warn)]
    return repo.snapshots(errors=[])


def _restore_sqlite_until(args: argparse.Namespace, where: str) -> int:
    """restore-db --sqlite FILE --until MOMENT: the captured database (--database, or the only
    one captured) as it was at the moment, into the new file FILE."""
    until = parse_until(args.until)
    repo = open_repo(args)
    with reading(repo, "restore-db"):
        database = args.database or _only_sqlite_database(repo)
        done = restore_sqlite(repo, database, where, until, report=warn)
    say(_("restored {database} into {target} as it was at {moment}: {count} replayed on the copy of "
          "{base}").format(database=database, target=done.target, moment=human_time(done.point_ns),
                           count=ngettext("{n} transaction", "{n} transactions", done.transactions).format(
                               n=human_number(done.transactions)), base=human_time(done.base_time_ns)))
    return 0


def _only_sqlite_database(repo: Repository) -> str:
    captured = sorted({s.header.extra.get("database", "") for s in segments.listing(repo, errors=[])
                       if s.header.engine == "sqlite"} - {""})
    if len(captured) == 1:
        return captured[0]
    if not captured:
        raise CoffreError(_("no SQLite database is captured continuously in this repository"),
                          _("run 'coffre wal sqlite' and 'coffre wal ship' (docs/continuity.md)"))
    raise UsageError(_("several SQLite databases are captured: choose one with --database"),
                     ", ".join(captured))


def _restore_mysql_until(args: argparse.Namespace, dsn: str) -> int:
    """restore-db --mysql DSN --until MOMENT: a dump, then the binary log captured since."""
    until = parse_until(args.until)
    repo = open_repo(args)
    with reading(repo, "restore-db"):
        snaps = _bases(args, repo)
        with progress_for(args, _("restore-db")) as progress:
            done = mysql_restore.recover(repo, snaps, dsn, until, database=args.database, force=args.force,
                                         report=warn, progress=progress)
    replayed = done.replayed
    say(_("restored {name} from the dump of snapshot {snapshot} and the binary log from {start} ({files}): "
          "{count}, the last one begun at {time}").format(
              name=done.record.name, snapshot=done.snapshot.id[:8], start=done.start,
              files=ngettext("{n} file", "{n} files", len(done.files)).format(n=len(done.files)),
              count=ngettext("{n} transaction replayed", "{n} transactions replayed",
                             replayed.transactions).format(n=human_number(replayed.transactions)),
              time=human_time(replayed.last_ns) if replayed.last_ns
              else _("(none: no change after the dump)")))
    return 0


UNSAFE_IN_WORK_DIR = "'\"\\$`\n\r"


def cmd_drill(args: argparse.Namespace) -> int:
    refuse_empty("--work-dir", args.work_dir,
                 hint=_("give a folder, or leave --work-dir out for the temporary one"))
    if args.work_dir and not os.path.isdir(args.work_dir):
        raise UsageError(_("--work-dir {folder}: no such folder").format(folder=args.work_dir))
    work = os.path.abspath(args.work_dir or tempfile.gettempdir())
    if any(c in work for c in UNSAFE_IN_WORK_DIR):
        # The throwaway servers' settings name their folder in quotes, and mariadb-install-db
        # is a shell script. (PostgreSQL is started without pg_ctl, which hands the folder to
        # /bin/sh, where $(...) and `...` would run.)
        raise UsageError(_("{folder}: choose a work folder without quotes, backslashes, '$', '`' or "
                           "line breaks (--work-dir, or TMPDIR)").format(folder=repr(work)))
    repo = open_repo(args)
    with reading(repo, "drill"):
        load_index(repo)
        snap = find_with_databases(repo, args.snapshot, report=warn)
        note = drill_note(d.engine for d in snap.databases)
        if note:
            warn(note)
        with progress_for(args, _("drill")) as progress:
            results = drill(repo, snap, lambda engine: throwaway(engine, args.work_dir), report=warn,
                            progress=progress)
    ok = all(r.ok for r in results)
    if args.json:
        emit_summary({"snapshot": snap.id, "time_ns": snap.time_ns, "ok": ok, "databases": [
            {"engine": r.record.engine, "name": r.record.name, "size": r.record.size, "ok": r.ok,
             "seconds": round(r.seconds, 3),
             "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in r.checks]}
            for r in results]})
    else:
        say(_("drill of snapshot {snapshot}:").format(snapshot=snap.id[:8]))
        for r in results:
            say("  {verdict}  {engine} {name} ({size}, {duration})".format(
                verdict=_("PASS") if r.ok else _("FAIL"), engine=r.record.engine, name=r.record.name,
                size=human_size(r.record.size), duration=human_duration(r.seconds)))
            for c in r.checks:
                say("        {verdict} {check}: {detail}".format(
                    verdict=_("ok  ") if c.ok else _("FAIL"), check=_(c.name), detail=c.detail))
        say(_("drill passed: every database restores and checks out") if ok
            else _("drill FAILED: see above"))
    return 0 if ok else 1
