"""wal push, wal fetch (PostgreSQL's archive and restore commands), wal mysql (wal_mysql.py), wal ship,
wal list."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from coffre.cli import wal_push, wal_sqlite
from coffre.cli.context import add_repo_options, open_repo
from coffre.cli.output import emit_json, human_size, human_time, say, warn
from coffre.cli.passes import run_passes
from coffre.cli.wal_mysql import register_mysql
from coffre.continuity import pg_fetch, pg_push, shipper
from coffre.continuity.spool import Spool
from coffre.continuity.streams import summarize
from coffre.core.clock import SystemClock
from coffre.core.errors import CoffreError, StorageError
from coffre.core.i18n import _, ngettext
from coffre.repository import segments


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    wal = sub.add_parser("wal", help=_("continuous capture of database logs (point-in-time recovery)"))
    words = wal.add_subparsers(dest="wal_command", required=True, metavar=_("COMMAND"))

    p = words.add_parser("push", help=_("PostgreSQL's archive_command: keep a finished WAL file in the "
                                        "spool (no password needed)"))
    p.add_argument("--spool", required=True, metavar="DIR", help=_("the spool folder"))
    p.add_argument("--spool-limit", default="2GiB", metavar="SIZE",
                   help=_("when the spool holds this much, a new file is dropped and a gap recorded "
                          "instead of filling the disk (default 2GiB)"))
    p.add_argument("path", help=_("%%p: the file's path"))
    p.add_argument("name", help=_("%%f: the file's name"))
    p.set_defaults(func=cmd_push)

    p = words.add_parser("fetch", help=_("PostgreSQL's restore_command (exit 1: not found; 126: "
                                         "failure, recovery stops)"))
    add_repo_options(p)
    p.add_argument("--staging", metavar="DIR",
                   help=_("take the file from this staging folder instead of the repository"))
    p.add_argument("name", help=_("%%f: the file asked for"))
    p.add_argument("dest", help=_("%%p: where to write it"))
    p.set_defaults(func=cmd_fetch)

    register_mysql(words)

    p = words.add_parser("ship", help=_("send what waits in the spool to the repository"))
    add_repo_options(p)
    p.add_argument("--spool", required=True, action="append", metavar="DIR",
                   help=_("a spool folder (repeat for several)"))
    p.add_argument("--every", type=float, metavar="SECONDS",
                   help=_("keep shipping, looking every SECONDS (default: once)"))
    p.set_defaults(func=cmd_ship)

    wal_sqlite.register(words)

    p = words.add_parser("list", help=_("the captured log streams, their extent and their gaps"))
    add_repo_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)


def cmd_push(args: argparse.Namespace) -> int:
    return wal_push.push(args.spool, args.spool_limit, args.path, args.name)


def cmd_fetch(args: argparse.Namespace) -> int:
    dest = Path(args.dest)
    for attempt in range(3):
        try:
            if args.staging:
                return pg_fetch.fetch_staged(Path(args.staging), args.name, dest)
            stream = _stream_here()
            return pg_fetch.fetch_from_repository(open_repo(args, watch=False), stream, args.name, dest)
        except StorageError as exc:
            problem = exc.message
            if attempt < 2:
                threading.Event().wait(2.0 * (attempt + 1))  # a storage that hiccups
        except CoffreError as exc:
            problem = exc.message
            break
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}"
            break
    print(f"coffre wal fetch: {problem}", file=sys.stderr)
    return pg_fetch.FAILED


def _stream_here() -> str:
    """restore_command runs in the data folder: its cluster's stream."""
    system = pg_push.system_identifier(Path.cwd())
    if system is None:
        raise CoffreError(_("run from a PostgreSQL data folder (global/pg_control), as restore_command is"))
    return f"postgres:{system}"


def cmd_ship(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    spools = [Spool(p) for p in args.spool]
    clock = SystemClock()

    def one_pass() -> None:
        for spool in spools:
            try:
                done = shipper.ship(repo, spool, report=warn)
            except StorageError as exc:
                if not args.every:
                    raise
                warn(_("the repository cannot be reached ({reason}); the spool keeps the files").format(
                    reason=exc.message))
                continue
            if done.pieces and not args.every:
                say(ngettext("shipped {count} piece ({size}) from {folder}",
                             "shipped {count} pieces ({size}) from {folder}", done.pieces).format(
                                 count=done.pieces, size=human_size(done.bytes), folder=spool.path))
            for name in done.gaps:
                warn(_("gap recorded for {name}: point-in-time recovery across it is impossible; take a "
                       "new base backup").format(name=name))
            pg_push.forget_markers(spool, clock.now_ns() - pg_push.MARKER_DAYS * 86400 * 10**9)

    return run_passes(args.every, one_pass, retried=())


def cmd_list(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    errors: list[str] = []
    streams = summarize(segments.listing(repo, errors=errors))
    for e in errors:
        warn(e)
    if args.json:
        emit_json({"streams": [s.to_json() for s in streams], "errors": errors})
        return 1 if errors else 0
    if not streams:
        say(_("no log is captured in this repository"))
    for s in streams:
        count = ngettext("{n} piece", "{n} pieces", s.pieces).format(n=s.pieces)
        say(_("{stream} ({engine}): {count} from {first} to {last}, {size}, last captured {time}").format(
            stream=s.stream, engine=s.engine, count=count, first=s.first, last=s.last,
            size=human_size(s.bytes), time=human_time(s.last_ns)))
        for gap in s.gaps:
            say("  " + _("gap: {name}").format(name=gap))
    return 1 if errors or any(s.gaps for s in streams) else 0
