"""wal mysql: capture a MariaDB server's binary log into a spool (continuity/mysql_capture.py)."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType

from coffre.cli.output import human_size, say, warn
from coffre.continuity.mysql_capture import DEFAULT_WORK, REPLICA_ID, Capture
from coffre.continuity.spool import DEFAULT_LIMIT, Spool
from coffre.core.clock import SystemClock
from coffre.core.errors import UsageError
from coffre.core.i18n import _, ngettext
from coffre.core.sizes import parse_size
from coffre.sources.databases.mysql import Connection

WORK = DEFAULT_WORK


def register_mysql(words: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = words.add_parser("mysql", help=_("follow a MariaDB server's binary log and keep it in the spool "
                                         "(password in MYSQL_PWD)"))
    p.add_argument("--spool", required=True, metavar="DIR", help=_("the spool folder"))
    p.add_argument("--dsn", required=True, metavar="DSN",
                   help=_("the server, mysql://USER@HOST:PORT (an account with REPLICATION SLAVE and "
                          "BINLOG MONITOR)"))
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help=_("put what the server wrote into the spool every SECONDS (default 1)"))
    p.add_argument("--once", action="store_true",
                   help=_("capture up to the server's current end, then stop"))
    p.add_argument("--work", metavar="DIR",
                   help=_("the capture's own folder: its place in the log and the file being read "
                          "(default: {name} in the spool)").format(name=WORK))
    p.add_argument("--spool-limit", default="2GiB", metavar="SIZE",
                   help=_("when the spool holds this much, a new piece is dropped and a gap recorded "
                          "instead of filling the disk (default 2GiB)"))
    p.add_argument("--replica-id", type=int, default=REPLICA_ID, metavar="N",
                   help=_("the server id the reader registers with, unique among the server's replicas "
                          "(default {id})").format(id=REPLICA_ID))
    p.set_defaults(func=cmd_mysql)


def cmd_mysql(args: argparse.Namespace) -> int:
    if not args.interval > 0:
        raise UsageError(_("--interval must be a positive number of seconds"))
    if not 1 <= args.replica_id < 2**32:
        raise UsageError(_("--replica-id must be between 1 and 4294967295"))
    conn = Connection(args.dsn, database=False)
    limit = parse_size(args.spool_limit, "--spool-limit") if args.spool_limit else DEFAULT_LIMIT
    spool = Spool(args.spool, limit)
    work = Path(args.work) if args.work else Path(args.spool) / WORK
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    if not args.once:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        say(_("capturing the binary log of {server} into {folder}").format(
            server=conn.describe_server(), folder=spool.path))
    capture = Capture(conn, spool, work, SystemClock(), warn, replica_id=args.replica_id)
    done = capture.run(interval=args.interval, once=args.once, stop=stop)
    say(ngettext("captured {count} piece ({size})", "captured {count} pieces ({size})", done.pieces).format(
        count=done.pieces, size=human_size(done.bytes))
        + (_(", up to {place}").format(place=f"{capture.state.file}:{capture.state.offset}")
           if capture.state is not None else ""))
    for name in done.gaps:
        warn(_("gap recorded at {name}: point-in-time recovery across it is impossible; take a new "
               "backup of the databases").format(name=name))
    return 0
