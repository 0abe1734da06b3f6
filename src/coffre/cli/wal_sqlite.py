"""`coffre wal sqlite`: follow a SQLite database's changes into a spool (continuous capture,
continuity/sqlite_monitor.py), and `coffre wal sqlite-restore`: bring one back as it was at a
moment. Registered under the `coffre wal` group (`register(subparsers)`).

The monitor needs no repository password: it only writes the spool; `coffre wal ship` sends
the spool to the repository. It runs in the foreground, pass after pass; SIGTERM or Ctrl-C
stops it after the current pass (exit status 0), never in the middle of one.
"""

from __future__ import annotations

import argparse
import signal
import threading
from datetime import datetime
from types import FrameType

from coffre.cli.context import add_repo_options, open_repo, reading, refuse_empty
from coffre.cli.output import human_size, human_time, say, warn
from coffre.continuity.spool import DEFAULT_LIMIT, Spool
from coffre.continuity.sqlite_monitor import CHECKPOINT_PAGES, DEFAULT_INTERVAL, SqliteMonitor
from coffre.continuity.sqlite_restore import restore_sqlite
from coffre.core.errors import UsageError
from coffre.core.i18n import _, ngettext
from coffre.core.sizes import parse_size
from coffre.policy.retention import parse_duration


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sqlite", help=_("follow a SQLite database's changes into a spool, so that any "
                                        "moment can be restored (continuous capture)"))
    p.add_argument("--spool", metavar="DIR", required=True,
                   help=_("the spool folder the pieces wait in for 'coffre wal ship'"))
    p.add_argument("--database", metavar="PATH", required=True,
                   help=_("the SQLite database file (in WAL mode)"))
    p.add_argument("--interval", metavar="SECONDS", type=float, default=DEFAULT_INTERVAL,
                   help=_("seconds between two passes: the most that is lost, and the precision of a "
                          "restore (default: 1)"))
    p.add_argument("--once", action="store_true", help=_("one pass, then exit"))
    p.add_argument("--spool-limit", metavar="SIZE",
                   help=_("the most the spool may hold before pieces are recorded as lost "
                          "(default: 2GiB)"))
    p.add_argument("--checkpoint-pages", metavar="N", type=int, default=CHECKPOINT_PAGES,
                   help=_("checkpoint (PASSIVE) once the log holds N pages; 0: never (default: 1000)"))
    p.add_argument("--base-every", metavar="DURATION", default="1d",
                   help=_("take a new whole copy this often, e.g. 12h, 1d (default: 1d)"))
    p.set_defaults(func=cmd_wal_sqlite)

    p = sub.add_parser("sqlite-restore", help=_("restore a continuously captured SQLite database as "
                                                "it was at a moment, into a new file"))
    add_repo_options(p)
    p.add_argument("database", help=_("the database's path when it was captured, or its stream "
                                      "(sqlite:ID or sqlite:ID:GENERATION)"))
    p.add_argument("target", help=_("the new file to write (never an existing database)"))
    p.add_argument("--until", metavar="WHEN", default="latest",
                   help=_("the moment, e.g. '2026-05-12 10:03:00' (local time), or 'latest' "
                          "(default)"))
    p.set_defaults(func=cmd_wal_sqlite_restore)


def _stop_on_signals(stop: threading.Event) -> dict[int, object]:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, object] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    return previous


def cmd_wal_sqlite(args: argparse.Namespace) -> int:
    refuse_empty("--spool", args.spool, hint=_("give the spool folder"))
    refuse_empty("--database", args.database, hint=_("give the database file"))
    if not args.interval > 0:
        raise UsageError(_("--interval must be more than 0 seconds"))
    if args.checkpoint_pages < 0:
        raise UsageError(_("--checkpoint-pages must be 0 or more"))
    try:
        base_every = parse_duration(args.base_every)
    except ValueError as exc:
        raise UsageError(_("--base-every {value}: {reason}").format(value=args.base_every,
                                                                   reason=exc)) from None
    limit = parse_size(args.spool_limit, "--spool-limit") if args.spool_limit is not None else DEFAULT_LIMIT
    spool = Spool(args.spool, limit=limit)
    stop = threading.Event()
    previous = _stop_on_signals(stop)
    try:
        with SqliteMonitor(args.database, spool, report=warn, checkpoint_pages=args.checkpoint_pages,
                           base_every_ns=base_every) as monitor:
            if args.once:
                result = monitor.step()
                say(_("{pieces}, {size} put in the spool; generation {generation}").format(
                    pieces=ngettext("{count} piece", "{count} pieces", result.pieces + result.base).format(
                        count=result.pieces + result.base),
                    size=human_size(result.bytes), generation=monitor.generation or _("none")))
                return 0
            say(_("following {path} into {spool}, a pass every {seconds} s; SIGTERM or Ctrl-C stops "
                  "after the current pass").format(path=monitor.path, spool=spool.path,
                                                   seconds=args.interval))
            monitor.run(args.interval, stop)
        say(_("stopped after a pass"))
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def parse_until(text: str) -> int | None:
    """'latest' (None) or an ISO 8601 moment (local time unless it says otherwise), in ns."""
    if text.strip().lower() == "latest":
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(_("--until {value}: give a moment such as '2026-05-12 10:03:00', or "
                           "'latest'").format(value=repr(text))) from None
    aware = moment.astimezone()
    return int(aware.replace(microsecond=0).timestamp()) * 1_000_000_000 + aware.microsecond * 1000


def cmd_wal_sqlite_restore(args: argparse.Namespace) -> int:
    refuse_empty("database", args.database, hint=_("give the database's path or stream"))
    refuse_empty("target", args.target, hint=_("give the new file to write"))
    until = parse_until(args.until)
    repo = open_repo(args)
    with reading(repo, "wal sqlite-restore"):
        result = restore_sqlite(repo, args.database, args.target, until, report=warn)
    transactions = ngettext("{count} transaction", "{count} transactions", result.transactions).format(
        count=result.transactions)
    say(_("restored into {target}: the state at {moment} ({transactions} replayed on the copy of "
          "{base}); PRAGMA integrity_check: ok").format(
              target=result.target, moment=human_time(result.point_ns), transactions=transactions,
              base=human_time(result.base_time_ns)))
    return 0
