"""restore, verify."""

from __future__ import annotations

import argparse

from coffre.cli.context import add_repo_options, load_index, open_repo, reading, refuse_empty
from coffre.cli.output import emit_json, human_size, say, warn
from coffre.core.errors import EXIT_FATAL, UsageError
from coffre.core.i18n import _
from coffre.ops.common import find_snapshot
from coffre.ops.restore import RestoreOptions, Restorer
from coffre.ops.verify import Verifier


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("restore", help="restore a snapshot into a directory")
    add_repo_options(p)
    p.add_argument("snapshot", help="snapshot id prefix or 'latest'")
    p.add_argument("--target", required=True, help="directory to restore into")
    p.add_argument("--include", action="append", default=[], metavar="PATTERN",
                   help=_("restore only what matches (repeatable; same patterns as backup's --exclude)"))
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help=_("do not restore what matches (repeatable)"))
    p.add_argument("--verify", action="store_true", help="re-read what was written and compare")
    p.add_argument("--devices", action="store_true",
                   help="also make the device nodes the snapshot holds (skipped by default)")
    p.add_argument("--host", help="with 'latest': the latest snapshot of this host")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_restore)

    v = sub.add_parser("verify", help="compare a snapshot with the live files")
    add_repo_options(v)
    v.add_argument("snapshot", help=_("snapshot id prefix or 'latest'"))
    v.add_argument("paths", nargs="*", help="limit the comparison to these paths")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_verify)


def cmd_restore(args: argparse.Namespace) -> int:
    if not args.target:  # an unset variable: never the working directory
        raise UsageError("--target is empty", "give the folder to restore into, e.g. --target /srv/restore")
    repo = open_repo(args)
    with reading(repo, "restore"):
        load_index(repo)
        snap = find_snapshot(repo, args.snapshot, host=args.host, report=warn)
        restorer = Restorer(repo, RestoreOptions(target=args.target, includes=args.include,
                                                 excludes=args.exclude, verify=args.verify,
                                                 devices=args.devices),
                            report=warn)
        problems = restorer.run(snap)
    st = restorer.stats
    if args.json:
        emit_json({"snapshot": snap.id, "files": st.files, "files_failed": st.files_failed,
                   "dirs": st.dirs, "bytes": st.bytes, "verified": st.verified,
                   "errors": problems.errors, "warnings": problems.warnings})
    else:
        for w in problems.warnings:
            warn(f"warning: {w}")
        for e in problems.errors:
            warn(f"error: {e}")
        say(f"restored snapshot {snap.id[:8]} to {args.target}: {st.files} files, "
            f"{st.dirs} directories, {human_size(st.bytes)}"
            + (f"; {st.files_failed} files could not be restored" if st.files_failed else ""))
        if args.verify:
            say(f"verified {st.verified} files" + ("" if not problems.errors else " (with errors)"))
    return EXIT_FATAL if problems.errors else 0


def cmd_verify(args: argparse.Namespace) -> int:
    refuse_empty("a path to verify", *args.paths)
    repo = open_repo(args)
    with reading(repo, "verify"):
        snap = find_snapshot(repo, args.snapshot, report=warn)
        result = Verifier(repo, read_repository=True).run(snap, args.paths)
    if args.json:
        emit_json({"snapshot": snap.id, "files_compared": result.files, "bytes_compared": result.bytes,
                   "differences": result.differences})
    else:
        for d in result.differences:
            say(d)
        say(f"compared {result.files} files ({human_size(result.bytes)}) with snapshot {snap.id[:8]}: "
            + ("no difference" if not result.differences else f"{len(result.differences)} difference(s)"))
    return 1 if result.differences else 0
