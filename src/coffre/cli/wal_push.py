"""`coffre wal push` without the rest of the command line: PostgreSQL runs it for every WAL
file (thousands a day), so it imports only what it needs (about 60 ms instead of 300). The
full parser still describes it (`coffre wal push --help`, cmd_wal.py) and runs it when any
other option is given."""

from __future__ import annotations

import sys
from pathlib import Path

from coffre.continuity import pg_push
from coffre.continuity.spool import DEFAULT_LIMIT, Spool
from coffre.core.clock import SystemClock
from coffre.core.errors import CoffreError
from coffre.core.i18n import _
from coffre.core.sizes import parse_size


def parse(argv: list[str]) -> tuple[str, str, str, str] | None:
    """(spool, limit, path, name) for the plain form `--spool DIR [--spool-limit SIZE] PATH
    NAME`, else None (then the full parser takes it)."""
    spool, limit, rest = "", "", []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--spool", "--spool-limit") and i + 1 < len(argv):
            if arg == "--spool":
                spool = argv[i + 1]
            else:
                limit = argv[i + 1]
            i += 2
            continue
        if arg.startswith("-"):
            return None
        rest.append(arg)
        i += 1
    if not spool or len(rest) != 2:
        return None
    return spool, limit, rest[0], rest[1]


def push(spool: str, limit: str, path: str, name: str) -> int:
    """Exit 0 once the file is durable in the spool (or a gap recorded when it is full); any
    failure is exit 1: above 125 PostgreSQL would restart its archiver instead of retrying."""
    try:
        size = parse_size(limit, "--spool-limit") if limit else DEFAULT_LIMIT
        done = pg_push.push(Spool(spool, size), Path(path), name, SystemClock())
    except CoffreError as exc:
        print(f"coffre wal push: {exc.message}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"coffre wal push: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not done.kept:
        print(_("coffre wal push: the spool {folder} is full: {name} is not kept and a gap is recorded; "
                "take a new base backup once the repository is reachable").format(folder=spool, name=name),
              file=sys.stderr)
    return 0
