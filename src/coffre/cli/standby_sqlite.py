"""standby sqlite-init, sqlite-follow, sqlite-status, sqlite-promote: the warm standby of a
continuously captured SQLite database (continuity/sqlite_standby.py). Registered under the
`coffre standby` group (`register(subparsers)`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from coffre.cli.context import add_repo_options, open_repo, reading, refuse_empty
from coffre.cli.output import emit_json, human_duration, human_time, say, warn
from coffre.cli.passes import run_passes
from coffre.continuity import sqlite_standby
from coffre.continuity.sqlite_standby import SqliteStandbyState
from coffre.core.errors import CoffreError, UsageError
from coffre.core.i18n import _, ngettext
from coffre.format.segment import SegmentHeader

DEFAULT_MAX_LAG = 300.0


def register(words: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    w = words.add_parser("sqlite-init", help=_("restore the latest moment of a continuously captured "
                                               "SQLite database into a new file, kept as a standby"))
    add_repo_options(w)
    w.add_argument("--database", required=True, metavar="PATH",
                   help=_("the database's path when it was captured, or its stream"))
    w.add_argument("--target", required=True, metavar="FILE", help=_("the new file"))
    w.set_defaults(func=cmd_init)

    w = words.add_parser("sqlite-follow", help=_("apply to the SQLite standby what was stored since the last "
                                                 "pass (once, or --every)"))
    add_repo_options(w)
    w.add_argument("--target", required=True, metavar="FILE", help=_("the standby file"))
    w.add_argument("--every", type=float, metavar="SECONDS", help=_("keep following"))
    w.set_defaults(func=cmd_follow)

    w = words.add_parser("sqlite-status", help=_("how far behind the SQLite standby is (exit 1 beyond "
                                                 "--max-lag or at a gap)"))
    w.add_argument("--target", required=True, metavar="FILE", help=_("the standby file"))
    w.add_argument("--max-lag", type=float, default=DEFAULT_MAX_LAG, metavar="SECONDS",
                   help=_("alert beyond this many seconds behind (default 300)"))
    w.add_argument("--json", action="store_true")
    w.set_defaults(func=cmd_status)

    w = words.add_parser("sqlite-promote", help=_("a last pass, PRAGMA integrity_check, and the SQLite "
                                                  "standby is the pharmacy's database"))
    add_repo_options(w)
    w.add_argument("--target", required=True, metavar="FILE", help=_("the standby file"))
    w.add_argument("--offline", action="store_true",
                   help=_("the repository cannot be reached: promote with what was applied"))
    w.add_argument("--json", action="store_true")
    w.set_defaults(func=cmd_promote)


def cmd_init(args: argparse.Namespace) -> int:
    refuse_empty("--database", args.database, hint=_("give the database's path or stream"))
    refuse_empty("--target", args.target, hint=_("give the new file to write"))
    repo = open_repo(args)
    with reading(repo, "standby sqlite-init"):
        state = sqlite_standby.init(repo, args.database, args.target, report=warn)
    say(_("standby ready in {file}: the state at {moment}; run 'coffre standby sqlite-follow --target "
          "{file} --every 10' and never open the file before 'coffre standby sqlite-promote'").format(
              file=state.target, moment=human_time(state.newest_ns)))
    return 0


def cmd_follow(args: argparse.Namespace) -> int:
    if args.every is not None and not args.every > 0:
        raise UsageError(_("--every must be more than 0 seconds"))
    repo = open_repo(args)
    known: dict[str, SegmentHeader] = {}

    def one_pass() -> None:
        with reading(repo, "standby sqlite-follow"):
            before = SqliteStandbyState.load(Path(args.target).absolute())
            state = sqlite_standby.follow(repo, args.target, report=warn, known=known)
        if not args.every:
            done = state.transactions - before.transactions if state.stream == before.stream else None
            _say_state(state, done)

    return run_passes(args.every, one_pass)


def _say_state(state: SqliteStandbyState, done: int | None = None) -> None:
    lag = sqlite_standby.lag_seconds(state, time.time_ns())
    applied = ""
    if done is not None:
        applied = ngettext("{count} transaction applied; ", "{count} transactions applied; ", done).format(
            count=done)
    say(_("standby {file} of {stream}: {applied}the newest piece applied was captured {lag} ago{gap}").format(
        file=state.target, stream=state.stream, applied=applied,
        lag=human_duration(lag) if lag is not None else "?",
        gap=(_("; stopped before the piece {name}: {problem}").format(name=state.gap, problem=state.problem)
             if state.gap else "")))


def cmd_status(args: argparse.Namespace) -> int:
    state = SqliteStandbyState.load(Path(args.target).absolute())
    lag = sqlite_standby.lag_seconds(state, time.time_ns())
    late = state.gap != "" or state.behind_pieces > 0 or lag is None or lag > args.max_lag
    if args.json:
        emit_json({"target": state.target, "stream": state.stream, "behind_seconds": lag,
                   "behind_pieces": state.behind_pieces, "behind_bytes": state.behind_bytes,
                   "applied": state.applied, "gap": state.gap,
                   "problem": state.problem, "newest_ns": state.newest_ns, "last_pass_ns": state.last_pass_ns,
                   "rebuilds": state.rebuilds, "promoted": bool(state.promoted_ns), "late": late})
    else:
        _say_state(state)
        if late and not state.promoted_ns:
            warn(_("the standby is behind: check that the capture, 'coffre wal ship' and 'coffre standby "
                   "sqlite-follow' run"))
    return 1 if late and not state.promoted_ns else 0


def cmd_promote(args: argparse.Namespace) -> int:
    repo = None
    if not args.offline:
        try:
            repo = open_repo(args)
        except CoffreError as exc:
            warn(_("the repository cannot be opened ({reason}): promoting with what was applied").format(
                reason=exc.message))
    if repo is not None:
        with reading(repo, "standby sqlite-promote"):
            done = sqlite_standby.promote(repo, args.target, report=warn)
    else:
        done = sqlite_standby.promote(None, args.target, report=warn)
    ok = done.integrity == "ok"
    if args.json:
        emit_json({"ok": ok, "integrity_check": done.integrity, "target": done.state.target,
                   "newest_ns": done.state.newest_ns, "last_pass": done.last_pass, "gap": done.state.gap})
        return 0 if ok else 1
    if not ok:
        warn(_("{file} fails PRAGMA integrity_check: {result}; it was not promoted").format(
            file=done.state.target, result=done.integrity))
        return 1
    say(_("promoted: {file} holds every transaction captured up to {moment}; PRAGMA integrity_check: "
          "ok").format(file=done.state.target, moment=human_time(done.state.newest_ns)))
    say(_("point the pharmacy software at {file}").format(file=done.state.target))
    return 0
