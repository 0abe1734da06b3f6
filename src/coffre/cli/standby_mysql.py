"""standby mysql-init, mysql-follow, mysql-status, mysql-promote: a warm standby MariaDB
database fed from the repository (continuity/mysql_standby.py)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from coffre.cli.context import add_repo_options, load_index, open_repo, reading
from coffre.cli.output import emit_json, human_duration, say, warn
from coffre.cli.passes import run_passes
from coffre.cli.progress import progress_for
from coffre.continuity import mysql_standby
from coffre.core.errors import CoffreError, UsageError
from coffre.core.i18n import _, ngettext
from coffre.format.segment import SegmentHeader

DEFAULT_MAX_LAG = 300.0


def register(words: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def where(w: argparse.ArgumentParser, dsn_required: bool) -> None:
        w.add_argument("--dsn", required=dsn_required, metavar="DSN",
                       help=_("the standby database, mysql://USER@HOST:PORT/DB (password in MYSQL_PWD)"))
        w.add_argument("--state", metavar="FILE",
                       help=_("the standby's state file (default: mysql-standby/DB.json in Coffre's state "
                              "folder, /var/lib/coffre for root)"))

    w = words.add_parser("mysql-init", help=_("restore the latest MariaDB dump and its binary log into an "
                                              "empty standby database"))
    add_repo_options(w)
    where(w, True)
    w.add_argument("--database", metavar="NAME", help=_("the backed-up database, when the snapshots hold "
                                                        "several"))
    w.set_defaults(func=cmd_init)

    w = words.add_parser("mysql-follow", help=_("replay the binary log stored since the last pass (once, or "
                                                "--every)"))
    add_repo_options(w)
    where(w, False)
    w.add_argument("--every", type=float, metavar="SECONDS", help=_("keep following"))
    w.set_defaults(func=cmd_follow)

    w = words.add_parser("mysql-status", help=_("how far behind the MariaDB standby is (exit 1 when behind "
                                                "or at a gap)"))
    where(w, False)
    w.add_argument("--max-lag", type=float, default=DEFAULT_MAX_LAG, metavar="SECONDS",
                   help=_("alert beyond this many seconds behind (default 300)"))
    w.add_argument("--json", action="store_true")
    w.set_defaults(func=cmd_status)

    w = words.add_parser("mysql-promote", help=_("a last pass, check every table, say where to connect"))
    add_repo_options(w)
    where(w, False)
    w.add_argument("--offline", action="store_true",
                   help=_("the repository cannot be reached: promote with what was replayed"))
    w.add_argument("--json", action="store_true")
    w.set_defaults(func=cmd_promote)


def _state_path(args: argparse.Namespace) -> Path:
    if args.state:
        return Path(args.state)
    if args.dsn:
        return mysql_standby.default_state(args.dsn)
    raise UsageError(_("give --state FILE or --dsn"))


def _checked(args: argparse.Namespace) -> Path:
    """The state file, and the --dsn given, if any, is the standby's."""
    path = _state_path(args)
    if args.dsn:
        state = mysql_standby.MysqlStandbyState.load(path)
        if state.dsn != args.dsn:
            raise UsageError(_("{file} is the standby of {dsn}, not of --dsn").format(
                file=path, dsn=state.dsn))
    return path


def cmd_init(args: argparse.Namespace) -> int:
    path = _state_path(args)
    repo = open_repo(args)
    with reading(repo, "standby mysql-init"):
        load_index(repo)
        with progress_for(args, _("standby mysql-init")) as progress:
            state = mysql_standby.init(repo, repo.snapshots(errors=[]), args.dsn, path, args.database,
                                       report=warn, progress=progress)
    say(_("standby ready from the dump {snapshot}, replayed up to {place} of the binary log; state in "
          "{file}; run 'coffre standby mysql-follow --state {file} --every 10'").format(
              snapshot=state.base_snapshot[:8], place=state.place(), file=path))
    return 0


def cmd_follow(args: argparse.Namespace) -> int:
    path = _checked(args)
    repo = open_repo(args)
    known: dict[str, SegmentHeader] = {}

    def one_pass() -> None:
        with reading(repo, "standby mysql-follow"):
            state = mysql_standby.follow(repo, path, report=warn, known=known)
        if not args.every:
            _say_state(state)

    return run_passes(args.every, one_pass, retried=(CoffreError,))


def _say_state(state: mysql_standby.MysqlStandbyState) -> None:
    lag = mysql_standby.lag_seconds(state, time.time_ns())
    say(_("MariaDB standby of {database}: at {place} of the binary log, {count}, behind by "
          "{lag}{gap}").format(
        database=state.database, place=state.place(),
        count=ngettext("{n} piece waiting", "{n} pieces waiting", state.behind_pieces).format(
            n=state.behind_pieces),
        lag=human_duration(lag) if lag is not None else "?",
        gap=(_("; stopped at the gap {name}").format(name=state.gap) if state.gap else "")))
    if state.error:
        warn(_("the last pass failed: {reason}").format(reason=state.error))


def cmd_status(args: argparse.Namespace) -> int:
    state = mysql_standby.MysqlStandbyState.load(_state_path(args))
    lag = mysql_standby.lag_seconds(state, time.time_ns())
    late = bool(state.gap or state.error) or lag is None or lag > args.max_lag
    if args.json:
        emit_json({"database": state.database, "stream": state.stream, "position": state.place(),
                   "behind_seconds": lag, "behind_pieces": state.behind_pieces,
                   "behind_bytes": state.behind_bytes, "newest_ns": state.newest_ns,
                   "gap": state.gap, "error": state.error, "transactions": state.transactions,
                   "last_pass_ns": state.last_pass_ns, "promoted": bool(state.promoted_ns), "late": late})
    else:
        _say_state(state)
        if late and not state.promoted_ns:
            warn(_("the standby is behind: check that the primary's capture, 'coffre wal ship' and "
                   "'coffre standby mysql-follow' run"))
    return 1 if late and not state.promoted_ns else 0


def cmd_promote(args: argparse.Namespace) -> int:
    path = _checked(args)
    repo = None
    if not args.offline:
        try:
            repo = open_repo(args)
        except CoffreError as exc:
            warn(_("the repository cannot be opened ({reason}): promoting with what was replayed").format(
                reason=exc.message))
    if repo is not None:
        with reading(repo, "standby mysql-promote"):
            done = mysql_standby.promote(repo, path, report=warn)
    else:
        done = mysql_standby.promote(None, path, report=warn)
    state = done.state
    if args.json:
        emit_json({"ok": done.check.ok, "check": done.check.detail, "position": state.place(),
                   "newest_ns": state.newest_ns, "gap": state.gap, "tables": done.tables, "rows": done.rows,
                   "connect": done.connect})
        return 0 if done.check.ok else 1
    say(_("promoted: the standby holds the binary log up to {place}").format(place=state.place()))
    say("  {verdict} {check}: {detail}".format(verdict=_("ok  ") if done.check.ok else _("FAIL"),
                                              check=done.check.name, detail=done.check.detail))
    say(_("point the counter software at {where}").format(where=done.connect))
    return 0 if done.check.ok else 1
