"""`coffre copy`: snapshots from one repository to another (3-2-1)."""

from __future__ import annotations

import argparse
import os

from coffre.cli.context import (
    add_repo_options,
    in_file,
    load_index,
    locked,
    open_repo_at,
    password,
    reading,
    refuse_empty,
    source_password,
)
from coffre.cli.output import human_number, human_size, say, warn
from coffre.cli.progress import emit_summary, progress_for
from coffre.cli.watching import watch_storage
from coffre.core.errors import UsageError
from coffre.core.i18n import _, ngettext
from coffre.ops.common import find_snapshot
from coffre.ops.copy import Copier, SegmentsCopied, copy_segments


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("copy", help=_("copy snapshots to another repository, sending only what it lacks"))
    add_repo_options(p)
    p.add_argument("--from", dest="source", metavar="REPO",
                   help=_("the repository to copy from (or COFFRE_FROM_REPOSITORY)"))
    p.add_argument("--to", dest="target", metavar="REPO",
                   help=_("the repository to copy to (or --repo, COFFRE_REPOSITORY)"))
    p.add_argument("--from-password-file", metavar="FILE",
                   help=_("password of the source (or COFFRE_FROM_PASSWORD_FILE, "
                          "COFFRE_FROM_PASSWORD_COMMAND)"))
    p.add_argument("snapshots", nargs="*", metavar="SNAPSHOT",
                   help=_("snapshot ids or 'latest' (default: every snapshot)"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_copy)


def cmd_copy(args: argparse.Namespace) -> int:
    refuse_empty("--from", args.source, hint=_("give the source repository's path or URL"))
    refuse_empty("--to", args.target, hint=_("give the destination repository's path or URL"))
    refuse_empty("--repo", args.repo, hint=_("give the destination repository's path or URL"))
    source = args.source or os.environ.get("COFFRE_FROM_REPOSITORY")
    target = args.target or args.repo or os.environ.get("COFFRE_REPOSITORY")
    if not source or not target:
        raise UsageError(_("copy needs a source and a destination"), _("use --from REPO_A --to REPO_B"))
    if _same_place(source, target):
        raise UsageError(_("the source and the destination are the same repository"))
    src = open_repo_at(source, lambda: source_password(args), args,
                       ahead=in_file(args, "from_password_file", "COFFRE_FROM_PASSWORD"))
    dst = open_repo_at(target, lambda: password(args, prompt=_("Password of the destination repository: ")),
                       args, ahead=in_file(args, "password_file", "COFFRE_PASSWORD"))
    if src.config.id == dst.config.id:
        raise UsageError(_("the source and the destination are the same repository"))
    with reading(src, "copy"), locked(dst, exclusive=False, command="copy") as lock:
        load_index(src)
        load_index(dst)
        snaps = ([find_snapshot(src, ref, report=warn) for ref in args.snapshots] if args.snapshots
                 else src.snapshots(errors=[]))
        with progress_for(args, _("copy")) as progress:
            result = Copier(src, dst, lock, report=warn, progress=progress).run(snaps)
        logs = copy_segments(src, dst, report=warn) if not args.snapshots else SegmentsCopied()
    watch_storage(dst, changed=True)
    if args.json:
        emit_summary({"copied": [{"source": a.id, "copy": b.id} for a, b in result.copied],
                   "skipped": [s.id for s in result.skipped], "blobs_added": result.blobs_added,
                   "bytes_added": result.bytes_added, "shared_keys": result.shared_keys,
                   "log_pieces_added": logs.pieces, "log_bytes_added": logs.bytes})
        return 0
    for a, b in result.copied:
        say(_("snapshot {source} copied as {copy}").format(source=a.id[:8], copy=b.id[:8]))
    if result.skipped:
        say(ngettext("{count} snapshot already in the destination",
                     "{count} snapshots already in the destination",
                     len(result.skipped)).format(count=len(result.skipped)))
    copied = ngettext("{count} snapshot copied", "{count} snapshots copied",
                      len(result.copied)).format(count=len(result.copied))
    pieces = ngettext("{count} new piece", "{count} new pieces",
                      result.blobs_added).format(count=human_number(result.blobs_added))
    say(_("{copied}, {size} sent ({pieces})").format(
        copied=copied, size=human_size(result.bytes_added), pieces=pieces))
    if logs.pieces:
        say(ngettext("{count} captured log piece copied ({size})",
                     "{count} captured log pieces copied ({size})", logs.pieces).format(
                         count=human_number(logs.pieces), size=human_size(logs.bytes)))
    if not result.shared_keys and result.copied:
        say(_("note: the repositories do not share keys, so every copied file was read from the source; "
              "a destination made with 'init --copy-chunking-from' avoids that"))
    return 0


def _same_place(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)
