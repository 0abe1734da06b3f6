"""restore, verify."""

from __future__ import annotations

import argparse

from coffre.cli.context import add_repo_options, load_index, locked, open_repo
from coffre.cli.output import emit_json, human_size, say, warn
from coffre.core.errors import EXIT_FATAL
from coffre.ops.common import find_snapshot
from coffre.ops.restore import RestoreOptions, Restorer
from coffre.ops.verify import Verifier


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("restore", help="restore a snapshot into a directory")
    add_repo_options(p)
    p.add_argument("snapshot", help="snapshot id prefix or 'latest'")
    p.add_argument("--target", required=True, help="directory to restore into")
    p.add_argument("--include", action="append", default=[], metavar="PATTERN")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN")
    p.add_argument("--verify", action="store_true", help="re-read what was written and compare")
    p.add_argument("--host", help="with 'latest': the latest snapshot of this host")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_restore)

    v = sub.add_parser("verify", help="compare a snapshot with the live files")
    add_repo_options(v)
    v.add_argument("snapshot")
    v.add_argument("paths", nargs="*", help="limit the comparison to these paths")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_verify)


def cmd_restore(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    with locked(repo, exclusive=False, command="restore"):
        load_index(repo)
        snap = find_snapshot(repo, args.snapshot, host=args.host, report=warn)
        restorer = Restorer(repo, RestoreOptions(target=args.target, includes=args.include,
                                                 excludes=args.exclude, verify=args.verify),
                            report=warn)
        problems = restorer.run(snap)
    st = restorer.stats
    if args.json:
        emit_json({"snapshot": snap.id, "files": st.files, "dirs": st.dirs, "bytes": st.bytes,
                   "verified": st.verified, "errors": problems.errors, "warnings": problems.warnings})
    else:
        for w in problems.warnings:
            warn(f"warning: {w}")
        for e in problems.errors:
            warn(f"error: {e}")
        say(f"restored snapshot {snap.id[:8]} to {args.target}: {st.files} files, "
            f"{st.dirs} directories, {human_size(st.bytes)}")
        if args.verify:
            say(f"verified {st.verified} files" + ("" if not problems.errors else " (with errors)"))
    return EXIT_FATAL if problems.errors else 0


def cmd_verify(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    with locked(repo, exclusive=False, command="verify"):
        snap = find_snapshot(repo, args.snapshot, report=warn)
        result = Verifier(repo).run(snap, args.paths)
    if args.json:
        emit_json({"snapshot": snap.id, "files_compared": result.files, "bytes_compared": result.bytes,
                   "differences": result.differences})
    else:
        for d in result.differences:
            say(d)
        say(f"compared {result.files} files ({human_size(result.bytes)}) with snapshot {snap.id[:8]}: "
            + ("no difference" if not result.differences else f"{len(result.differences)} difference(s)"))
    return 1 if result.differences else 0
