"""restore, verify."""

from __future__ import annotations

import argparse

from coffre.cli.context import add_repo_options, load_index, open_repo, reading, refuse_empty
from coffre.cli.output import emit_json, human_size, say, warn
from coffre.cli.progress import emit_summary, progress_for
from coffre.cli.watching import watch_storage
from coffre.core.errors import EXIT_FATAL, UsageError
from coffre.core.i18n import _, ngettext
from coffre.format.tree import Node
from coffre.ops.common import find_snapshot
from coffre.ops.overwrite import OVERWRITE
from coffre.ops.paths import resolve
from coffre.ops.restore import Restorer, RestoreStats, restore_options
from coffre.ops.verify import Verifier


def add_snapshot_filters(p: argparse.ArgumentParser) -> None:
    """--host and --path: which snapshot 'latest' is (as restic's)."""
    p.add_argument("--host", help=_("with 'latest': the newest snapshot of this host"))
    p.add_argument("--path", action="append", default=[], dest="snapshot_paths", metavar="PATH",
                   help=_("with 'latest': the newest snapshot that holds this path (repeatable)"))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("restore", help=_("restore a snapshot into a directory"))
    add_repo_options(p)
    p.add_argument("snapshot", metavar="SNAPSHOT[:PATH]",
                   help=_("snapshot id prefix or 'latest'; with ':PATH', only that folder's contents "
                          "(or that file) go into the target, without the path above them"))
    p.add_argument("--target", required=True, help=_("directory to restore into"))
    p.add_argument("--include", action="append", default=[], metavar="PATTERN",
                   help=_("restore only what matches (repeatable; see docs/patterns.md); a pattern "
                          "that matches nothing is an error"))
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help=_("leave out what matches (repeatable)"))
    p.add_argument("--overwrite", choices=OVERWRITE, default=None,
                   help=_("what to do with files already in the target: never (the default) leaves "
                          "them, if-changed replaces those that differ, always replaces them"))
    p.add_argument("--sync", action="store_true",
                   help=_("make the target match the snapshot: write only what changed (--overwrite "
                          "if-changed) and set the metadata of the rest again"))
    p.add_argument("--delete", action="store_true",
                   help=_("with --sync: also delete what the target holds and the snapshot does not "
                          "(only inside what is selected)"))
    p.add_argument("--verify", action="store_true", help=_("re-read what was written and compare"))
    p.add_argument("--devices", action="store_true",
                   help=_("also make the device nodes the snapshot holds (skipped by default)"))
    add_snapshot_filters(p)
    p.add_argument("--json", action="store_true", help=_("print the result as JSON"))
    p.set_defaults(func=cmd_restore)

    v = sub.add_parser("verify", help=_("compare a snapshot with the live files"))
    add_repo_options(v)
    v.add_argument("snapshot", help=_("snapshot id prefix or 'latest'"))
    v.add_argument("paths", nargs="*", help=_("limit the comparison to these paths"))
    v.add_argument("--json", action="store_true", help=_("print the result as JSON"))
    v.set_defaults(func=cmd_verify)


def split_ref(ref: str) -> tuple[str, str | None]:
    """'latest:/srv/officine/scans' -> ('latest', '/srv/officine/scans'); no ':' -> (ref, None)."""
    snapshot, colon, path = ref.partition(":")
    if not colon:
        return ref, None
    if not snapshot or not path:
        raise UsageError(_("{ref}: give SNAPSHOT:PATH, e.g. latest:/srv/officine/scans").format(ref=ref))
    return snapshot, path


def cmd_restore(args: argparse.Namespace) -> int:
    if not args.target:  # an unset variable: never the working directory
        raise UsageError(_("--target is empty"),
                         _("give the folder to restore into, e.g. --target /srv/restore"))
    ref, inside = split_ref(args.snapshot)
    # Before the password is asked: the combinations --sync and --delete refuse.
    restorer_options = restore_options(args.target, includes=args.include, excludes=args.exclude,
                                       verify=args.verify, devices=args.devices, overwrite=args.overwrite,
                                       sync=args.sync, delete=args.delete)
    restorer_options.processes = True  # this process does nothing else (ops/restoreprocs.py)
    overwrite = restorer_options.overwrite
    repo = open_repo(args, watch=False)  # watched once locked, its listings then loaded
    with reading(repo, "restore"):
        watch_storage(repo, then_load=True)
        load_index(repo)
        snap = find_snapshot(repo, ref, host=args.host, report=warn, paths=args.snapshot_paths, files=True)
        at, node = "", None
        if inside is not None:
            at, node = resolve(repo, snap, inside)
        with progress_for(args, _("restore")) as progress:
            restorer = Restorer(repo, restorer_options, report=warn, progress=progress)
            problems = restorer.run(snap, at, node)
    st = restorer.stats
    if args.json:
        emit_summary({"snapshot": snap.id, "path": at or "/", "files": st.files,
                      "files_failed": st.files_failed, "dirs": st.dirs, "bytes": st.bytes,
                      "verified": st.verified, "overwrite": overwrite, "skipped": st.skipped,
                      "unchanged": st.unchanged, "replaced": st.replaced, "deleted": st.deleted,
                      "errors": problems.errors, "warnings": problems.warnings})
    else:
        for w in problems.warnings:
            warn(_("warning: {message}").format(message=w))
        for e in problems.errors:
            warn(_("error: {message}").format(message=e))
        say(summary(snap.id, at, node, args.target, st))
        for line in left_as_they_were(st, overwrite):
            say(line)
        if args.verify:
            say(ngettext("verified {n} file", "verified {n} files", st.verified).format(n=st.verified)
                + ("" if not problems.errors else _(" (with errors)")))
    return EXIT_FATAL if problems.errors else 0


def summary(snap_id: str, at: str, node: Node | None, target: str, st: RestoreStats) -> str:
    what = (_("snapshot {id}").format(id=snap_id[:8]) if node is None
            else _("{path} of snapshot {id}").format(path=at, id=snap_id[:8]))
    line = _("restored {what} to {target}: {files}, {dirs}, {size}").format(
        what=what, target=target,
        files=ngettext("{n} file", "{n} files", st.files).format(n=st.files),
        dirs=ngettext("{n} directory", "{n} directories", st.dirs).format(n=st.dirs),
        size=human_size(st.bytes))
    if st.files_failed:
        line += "; " + ngettext("{n} file could not be restored", "{n} files could not be restored",
                                st.files_failed).format(n=st.files_failed)
    return line


def left_as_they_were(st: RestoreStats, overwrite: str) -> list[str]:
    """What was already in the target and left as it was, and the option that replaces it."""
    lines = []
    if st.skipped:
        lines.append(ngettext(
            "{n} existing file left as it was (--overwrite if-changed or always replaces it)",
            "{n} existing files left as they were (--overwrite if-changed or always replaces them)",
            st.skipped).format(n=st.skipped))
    if st.unchanged:
        lines.append(ngettext(
            "{n} file already as in the snapshot, left as it was",
            "{n} files already as in the snapshot, left as they were", st.unchanged).format(n=st.unchanged))
    if st.replaced:
        lines.append(ngettext("{n} existing file replaced", "{n} existing files replaced",
                              st.replaced).format(n=st.replaced))
    if st.deleted:
        lines.append(ngettext("{n} file or folder not in the snapshot deleted",
                              "{n} files and folders not in the snapshot deleted",
                              st.deleted).format(n=st.deleted))
    return lines


def cmd_verify(args: argparse.Namespace) -> int:
    refuse_empty("a path to verify", *args.paths)
    repo = open_repo(args)
    with reading(repo, "verify"):
        snap = find_snapshot(repo, args.snapshot, report=warn, files=True)
        result = Verifier(repo, read_repository=True).run(snap, args.paths)
    if args.json:
        emit_json({"snapshot": snap.id, "files_compared": result.files, "bytes_compared": result.bytes,
                   "differences": result.differences})
    else:
        for d in result.differences:
            say(d)
        differences = (_("no difference") if not result.differences else ngettext(
            "{n} difference", "{n} differences", len(result.differences)).format(n=len(result.differences)))
        say(ngettext("compared {n} file ({size}) with snapshot {id}: {differences}",
                     "compared {n} files ({size}) with snapshot {id}: {differences}", result.files).format(
            n=result.files, size=human_size(result.bytes), id=snap.id[:8], differences=differences))
    return 1 if result.differences else 0
