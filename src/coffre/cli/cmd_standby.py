"""standby init, follow, status, promote: the warm standby (continuity/standby.py)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from coffre.cli import standby_mysql, standby_sqlite
from coffre.cli.context import add_repo_options, load_index, open_repo, reading
from coffre.cli.output import emit_json, human_duration, human_size, say, warn
from coffre.cli.passes import run_passes
from coffre.cli.progress import progress_for
from coffre.continuity import standby
from coffre.core.errors import CoffreError
from coffre.core.i18n import _, ngettext
from coffre.format.segment import SegmentHeader

DEFAULT_MAX_LAG = 300.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("standby", help=_("a warm standby PostgreSQL fed from the repository"))
    words = p.add_subparsers(dest="standby_command", required=True, metavar=_("COMMAND"))

    w = words.add_parser("init", help=_("unpack the latest base backup into a new data folder, in standby"))
    add_repo_options(w)
    w.add_argument("--pgdata", required=True, metavar="DIR", help=_("the new data folder"))
    w.set_defaults(func=cmd_init)

    w = words.add_parser("follow", help=_("stage the WAL stored since the last pass (once, or --every)"))
    add_repo_options(w)
    w.add_argument("--pgdata", required=True, metavar="DIR", help=_("the standby's data folder"))
    w.add_argument("--every", type=float, metavar="SECONDS", help=_("keep following"))
    w.set_defaults(func=cmd_follow)

    w = words.add_parser("status", help=_("how far behind the standby is (exit 1 beyond --max-lag)"))
    w.add_argument("--pgdata", required=True, metavar="DIR", help=_("the standby's data folder"))
    w.add_argument("--max-lag", type=float, default=DEFAULT_MAX_LAG, metavar="SECONDS",
                   help=_("alert beyond this many seconds behind (default 300)"))
    w.add_argument("--json", action="store_true")
    w.set_defaults(func=cmd_status)

    w = words.add_parser("promote", help=_("make the standby the primary, check it, say where to connect"))
    add_repo_options(w)
    w.add_argument("--pgdata", required=True, metavar="DIR", help=_("the standby's data folder"))
    w.add_argument("--socket", default="/var/run/postgresql", metavar="DIR",
                   help=_("the standby server's socket folder (default /var/run/postgresql)"))
    w.add_argument("--port", type=int, default=5432, help=_("the standby server's port (default 5432)"))
    w.add_argument("--user", default="postgres", help=_("a superuser of the cluster (default postgres)"))
    w.add_argument("--offline", action="store_true",
                   help=_("the repository cannot be reached: promote with what was staged"))
    w.add_argument("--json", action="store_true")
    w.set_defaults(func=cmd_promote)
    standby_sqlite.register(words)
    standby_mysql.register(words)


def cmd_init(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    with reading(repo, "standby init"):
        load_index(repo)
        with progress_for(args, _("standby init")) as progress:
            state = standby.init(repo, repo.snapshots(errors=[]), Path(args.pgdata), report=warn,
                                 progress=progress)
        state = standby.follow(repo, Path(args.pgdata), report=warn)
    say(_("standby ready in {folder} from the base backup {snapshot}, {count} WAL files staged; start "
          "PostgreSQL on it (it stays in recovery), and run 'coffre standby follow --every 10'").format(
              folder=args.pgdata, snapshot=state.base_snapshot[:8], count=state.staged_count))
    return 0


def cmd_follow(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    known: dict[str, SegmentHeader] = {}

    def one_pass() -> None:
        with reading(repo, "standby follow"):
            state = standby.follow(repo, Path(args.pgdata), report=warn, known=known)
        if not args.every:
            _say_state(state)

    return run_passes(args.every, one_pass)


def _say_state(state: standby.StandbyState) -> None:
    lag = standby.lag_seconds(state, time.time_ns())
    say(_("standby of {stream}: {count} WAL files staged, the newest captured {lag} ago{gap}").format(
        stream=state.stream, count=state.staged_count, lag=human_duration(lag) if lag is not None else "?",
        gap=(_("; stopped at the gap {name}").format(name=state.gap) if state.gap else "")))
    if state.behind_pieces:
        say(ngettext("{count} WAL file ({size}) stored but not staged yet",
                     "{count} WAL files ({size}) stored but not staged yet", state.behind_pieces).format(
                         count=state.behind_pieces, size=human_size(state.behind_bytes)))


def cmd_status(args: argparse.Namespace) -> int:
    state = standby.StandbyState.load(standby.state_folder(Path(args.pgdata)))
    lag = standby.lag_seconds(state, time.time_ns())
    late = state.gap != "" or lag is None or lag > args.max_lag
    if args.json:
        emit_json({"stream": state.stream, "behind_seconds": lag, "behind_pieces": state.behind_pieces,
                   "behind_bytes": state.behind_bytes,
                   "staged": state.staged_count, "gap": state.gap, "last_pass_ns": state.last_pass_ns,
                   "promoted": bool(state.promoted_ns), "late": late})
    else:
        _say_state(state)
        if late:
            warn(_("the standby is behind: check that the primary's capture and 'coffre standby follow' run"))
    return 1 if late and not state.promoted_ns else 0


def cmd_promote(args: argparse.Namespace) -> int:
    repo = None
    if not args.offline:
        try:
            repo = open_repo(args)
        except CoffreError as exc:
            warn(_("the repository cannot be opened ({reason}): promoting with what was staged").format(
                reason=exc.message))
    done = standby.promote(repo, Path(args.pgdata), args.socket, args.port, args.user, report=warn)
    ok = all(c[1] for c in done.checks)
    if args.json:
        emit_json({"ok": ok, "last_transaction": done.last_transaction, "timeline": done.timeline,
                   "checks": [{"name": n, "ok": o, "detail": d} for n, o, d in done.checks],
                   "databases": done.databases, "connect": done.connect})
        return 0 if ok else 1
    say(_("promoted: PostgreSQL accepts writes on timeline {timeline}; the last transaction replayed was "
          "committed at {time}").format(timeline=done.timeline, time=done.last_transaction or "?"))
    for name, passed, detail in done.checks:
        say("  {verdict} {check}: {detail}".format(verdict=_("ok  ") if passed else _("FAIL"), check=name,
                                                  detail=detail))
    say(_("point the counter software at {where}, databases: {names}").format(
        where=done.connect, names=", ".join(done.databases)))
    return 0 if ok else 1
