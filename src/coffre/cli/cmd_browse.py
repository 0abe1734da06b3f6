"""snapshots, ls, diff, dump, find, stats."""

from __future__ import annotations

import argparse
import os
import stat
import sys

from coffre.cli.cmd_restore import add_snapshot_filters
from coffre.cli.context import add_repo_options, load_index, open_repo, reading, refuse_empty, snapshots
from coffre.cli.output import emit_json, human_number, human_size, human_time, say, table, warn
from coffre.core.clock import format_ns, iso_ns
from coffre.core.errors import CoffreError
from coffre.core.i18n import _, ngettext
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node
from coffre.ops.common import find_node, find_snapshot, holds_paths
from coffre.ops.databases import database_sizes, unusual_growth
from coffre.ops.find import Finder, Version
from coffre.ops.inspect import diff_nodes, diff_trees, iter_tree, repo_stats
from coffre.ops.paths import resolve
from coffre.policy.timeline import future_of, future_warning
from coffre.repository.repo import Repository


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("snapshots", help=_("list snapshots"))
    add_repo_options(p)
    p.add_argument("--host", help=_("only this host's snapshots"))
    p.add_argument("--tag", action="append", default=[], help=_("only snapshots with this tag (repeatable)"))
    p.add_argument("--json", action="store_true", help=_("print the result as JSON"))
    p.set_defaults(func=cmd_snapshots)

    p = sub.add_parser("ls", help=_("list the files of a snapshot"))
    add_repo_options(p)
    p.add_argument("snapshot", help=_("snapshot id prefix or 'latest'"))
    p.add_argument("path", nargs="?", default="/",
                   help=_("a folder or file: absolute, or relative to the snapshot's sources"))
    p.add_argument("-l", "--long", action="store_true", help=_("show type, mode, owner, size and time"))
    add_snapshot_filters(p)
    p.add_argument("--json", action="store_true", help=_("print the result as JSON"))
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("diff", help=_("what changed between two snapshots"))
    add_repo_options(p)
    p.add_argument("first", help=_("snapshot id prefix or 'latest'"))
    p.add_argument("second", help=_("snapshot id prefix or 'latest'"))
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help=_("only under these paths (absolute, or relative to the snapshots' sources)"))
    add_snapshot_filters(p)
    p.add_argument("--json", action="store_true", help=_("print the result as JSON"))
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("dump", help=_("write one file of a snapshot to standard output"))
    add_repo_options(p)
    p.add_argument("snapshot", help=_("snapshot id prefix or 'latest'"))
    p.add_argument("path", help=_("the file: absolute, or relative to the snapshot's sources"))
    add_snapshot_filters(p)
    p.set_defaults(func=cmd_dump)

    p = sub.add_parser("find", help=_("find the versions of files across snapshots"))
    add_repo_options(p)
    p.add_argument("patterns", nargs="+", metavar="PATTERN",
                   help=_("a file name or path pattern (see docs/patterns.md): 'ordonnance*.jpg', "
                          "'scans/2025/03/*'"))
    p.add_argument("-i", "--ignore-case", action="store_true", help=_("ignore upper and lower case"))
    p.add_argument("--snapshot", "-s", action="append", default=[], dest="snapshot_ids", metavar="ID",
                   help=_("search only this snapshot (id prefix or 'latest'; repeatable)"))
    p.add_argument("--host", help=_("search only this host's snapshots"))
    p.add_argument("--path", action="append", default=[], dest="snapshot_paths", metavar="PATH",
                   help=_("search only the snapshots that hold this path (repeatable)"))
    p.add_argument("--json", action="store_true", help=_("print the result as JSON"))
    p.set_defaults(func=cmd_find)

    p = sub.add_parser("stats", help=_("repository and snapshot sizes"))
    add_repo_options(p)
    p.add_argument("snapshot", nargs="?", help=_("only this snapshot (id prefix or 'latest')"))
    p.add_argument("--databases", action="store_true",
                   help=_("each database's size across snapshots, and its growth"))
    p.add_argument("--host", help=_("--databases: only this host's snapshots"))
    p.add_argument("--json", action="store_true", help=_("print the result as JSON"))
    p.set_defaults(func=cmd_stats)


def snapshot_json(s: Snapshot) -> dict[str, object]:
    return {"id": s.id, "short_id": s.id[:8], "time": iso_ns(s.time_ns), "hostname": s.hostname,
            "username": s.username, "paths": s.paths, "tags": s.tags, "tree": s.tree.hex(),
            "summary": s.summary, "program": s.program, "parent": s.parent,
            "original": s.original, "databases": [d.to_map() for d in s.databases]}


def cmd_snapshots(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    snaps = [s for s in snapshots(repo)
             if (not args.host or s.hostname == args.host)
             and all(t in s.tags for t in args.tag)]
    now = repo.clock.now_ns()
    future = future_of(snaps, now)
    if future:
        warn(future_warning(future, now, total=len(snaps)))
    if args.json:
        emit_json([snapshot_json(s) for s in snaps])
        return 0
    rows = [[s.id[:8], human_time(s.time_ns), s.hostname, ",".join(s.tags),
             human_size(s.summary.get("bytes_total", 0)), ", ".join(s.paths)] for s in snaps]
    say(table(rows, [_("id"), _("time"), _("host"), _("tags"), _("size"), _("paths")]))
    say(ngettext("{n} snapshot", "{n} snapshots", len(snaps)).format(n=len(snaps)))
    return 0


def _mode_string(node: Node) -> str:
    kinds = {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "file": stat.S_IFREG, "fifo": stat.S_IFIFO,
             "chardev": stat.S_IFCHR, "blockdev": stat.S_IFBLK, "socket": stat.S_IFSOCK}
    return stat.filemode(kinds[node.type] | node.mode)


def node_json(path: str, n: Node) -> dict[str, object]:
    out: dict[str, object] = {
        "path": path, "name": os.fsdecode(n.name), "type": n.type, "mode": n.mode, "uid": n.uid,
        "gid": n.gid, "user": n.user, "group": n.group, "size": n.size,
        "mtime": iso_ns(n.mtime_ns),
    }
    if n.type == "symlink":
        out["target"] = os.fsdecode(n.target)
    return out


def _pick(repo: Repository, ref: str, args: argparse.Namespace) -> Snapshot:
    """The snapshot a command that reads files names ('latest' as --host and --path say)."""
    return find_snapshot(repo, ref, host=args.host, report=warn, paths=args.snapshot_paths, files=True)


def _pick_with(repo: Repository, args: argparse.Namespace, path: str) -> tuple[Snapshot, str, Node | None]:
    """The snapshot (as _pick) and the path in it. A file of standard input ('base.sql') or a
    database dump may be in a snapshot of its own, which 'latest' (the newest snapshot of
    files) passes over: when the path is not in it, the newest snapshot that recorded the
    path's first name (`--stdin-filename`, '@databases') is tried."""
    snap: Snapshot | None = None
    try:
        snap = _pick(repo, args.snapshot, args)
        return (snap, *resolve(repo, snap, path))
    except CoffreError:
        if args.snapshot != "latest" or args.snapshot_paths:
            raise
        top = path.strip("/").split("/")[0]
        try:
            other = find_snapshot(repo, "latest", host=args.host, named=top) if top else snap
        except CoffreError:
            other = snap
        if snap is None or other is None or other.id == snap.id:
            raise
        return (other, *resolve(repo, other, path))


def cmd_ls(args: argparse.Namespace) -> int:
    refuse_empty("the path", args.path, hint=_("give a path in the snapshot; '/' is its root"))
    repo = open_repo(args)
    load_index(repo)
    snap, at, node = _pick_with(repo, args, args.path)
    if node is None:
        items = list(iter_tree(repo, snap.tree))
    else:
        items = [(at, node)]
        if node.type == "dir" and node.subtree is not None:
            items += list(iter_tree(repo, node.subtree, at))
    if args.json:
        emit_json({"snapshot": snap.id, "nodes": [node_json(p, n) for p, n in items]})
        return 0
    for path, n in items:
        if args.long:
            size = human_size(n.size) if n.type == "file" else ""
            say(f"{_mode_string(n)} {n.user or n.uid:>8} {n.group or n.gid:>8} {size:>10} "
                f"{format_ns(n.mtime_ns)} {path}")
        else:
            say(path)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    load_index(repo)
    a = _pick(repo, args.first, args)
    b = _pick(repo, args.second, args)
    if args.paths:
        entries = []
        for wanted in args.paths:
            at = _resolve_in_either(repo, a, b, wanted)
            x, y = find_node(repo, a.tree, os.fsencode(at)), find_node(repo, b.tree, os.fsencode(at))
            entries += list(diff_nodes(repo, x, y, at))
    else:
        entries = list(diff_trees(repo, a.tree, b.tree))
    if args.json:
        emit_json({"first": a.id, "second": b.id,
                   "changes": [{"change": e.change, "path": e.path} for e in entries]})
        return 0
    say(_("comparing snapshot {first} to {second}:").format(first=a.id[:8], second=b.id[:8]))
    for e in entries:
        say(f"{e.change}    {e.path}")
    counts = {c: sum(1 for e in entries if e.change == c) for c in "+-MUT"}
    say(_("added {added}, removed {removed}, modified {modified}, metadata {metadata}, "
          "type changed {type}").format(added=counts["+"], removed=counts["-"], modified=counts["M"],
                                        metadata=counts["U"], type=counts["T"]))
    return 0


def _resolve_in_either(repo: Repository, a: Snapshot, b: Snapshot, wanted: str) -> str:
    """A path of diff: where it is in the first snapshot, else in the second."""
    try:
        return resolve(repo, a, wanted)[0]
    except CoffreError:
        return resolve(repo, b, wanted)[0]


def cmd_dump(args: argparse.Namespace) -> int:
    refuse_empty("the path", args.path, hint=_("give the path of a file in the snapshot"))
    repo = open_repo(args)
    with reading(repo, "dump"):
        load_index(repo)
        node = _pick_with(repo, args, args.path)[2]
        if node is None:
            raise CoffreError(_("{path} is the snapshot's root, not a file").format(path=args.path))
        if node.type != "file":
            raise CoffreError(_("{path} is a {kind}, not a file").format(
                path=args.path, kind=kind_name(node.type)))
        out = sys.stdout.buffer
        for blob_id in node.content:
            out.write(repo.load_blob(blob_id))
        out.flush()
    return 0


def cmd_find(args: argparse.Namespace) -> int:
    for pattern in args.patterns:
        refuse_empty("the pattern", pattern, hint=_("give a file name or a path pattern"))
    repo = open_repo(args)
    load_index(repo)
    if args.snapshot_ids:
        snaps = list({s.id: s for s in (_pick(repo, ref, args) for ref in args.snapshot_ids)}.values())
    else:
        snaps = snapshots(repo)
        if args.host:
            snaps = [s for s in snaps if s.hostname == args.host]
        if args.snapshot_paths:
            wanted = [os.path.normpath(os.path.abspath(p)) for p in args.snapshot_paths]
            snaps = [s for s in snaps if holds_paths(s, wanted)]
    result = Finder(repo, args.patterns, ignore_case=args.ignore_case).run(snaps)
    for e in result.errors:
        warn(_("error: {message}").format(message=e))
    if args.json:
        emit_json({"snapshots_searched": result.searched, "folders_read": result.trees_read, "matches": [
            {"path": path, "versions": [
                {**version_json(v.node), "snapshots": [
                    {"id": s.id, "short_id": s.id[:8], "time": iso_ns(s.time_ns), "hostname": s.hostname}
                    for s in v.snapshots]}
                for v in versions]}
            for path, versions in result.matches.items()]})
        return 1 if result.errors else 0
    for path, versions in result.matches.items():
        say(path)
        for v in versions:
            say("    " + describe_version(v))
    files = len(result.matches)
    held = len({s.id for vs in result.matches.values() for v in vs for s in v.snapshots})
    say(_("{versions} in {snapshots} ({searched} searched)").format(
        versions=ngettext("{n} version of {files}", "{n} versions of {files}", result.versions).format(
            n=result.versions, files=ngettext("{n} path", "{n} paths", files).format(n=files)),
        snapshots=ngettext("{n} snapshot", "{n} snapshots", held).format(n=held),
        searched=result.searched))
    if result.matches:
        say(_("to restore one: coffre restore ID:PATH --target FOLDER"))
    return 1 if result.errors else 0


def kind_name(kind: str) -> str:
    """A node's type as a person names it."""
    names = {"dir": _("folder"), "symlink": _("symbolic link"), "fifo": _("named pipe"),
             "chardev": _("character device"), "blockdev": _("block device"), "socket": _("socket"),
             "file": _("file")}
    return names.get(kind, kind)


def version_json(n: Node) -> dict[str, object]:
    return {"type": n.type, "size": n.size, "mtime": iso_ns(n.mtime_ns)}


def describe_version(v: Version) -> str:
    n = v.node
    what = _("modified {time}").format(time=human_time(n.mtime_ns))
    what += ", " + (human_size(n.size) if n.type == "file" else kind_name(n.type))
    first, last = v.snapshots[0], v.snapshots[-1]
    if first is last:
        return _("{what}: in snapshot {id} of {time}").format(
            what=what, id=first.id[:8], time=human_time(first.time_ns))
    return _("{what}: in {n} snapshots, from {first} of {first_time} to {last} of {last_time}").format(
        what=what, n=len(v.snapshots), first=first.id[:8], first_time=human_time(first.time_ns),
        last=last.id[:8], last_time=human_time(last.time_ns))


def cmd_stats(args: argparse.Namespace) -> int:
    if args.databases:
        return database_stats(args)
    repo = open_repo(args)
    load_index(repo)
    snaps = [find_snapshot(repo, args.snapshot, report=warn)] if args.snapshot else snapshots(repo)
    st = repo_stats(repo, snaps)
    data = {"snapshots": st.snapshots, "files": st.files, "restore_size": st.restore_size,
            "unique_blobs": st.unique_blobs, "raw_size": st.raw_size, "stored_size": st.stored_size,
            "packs": st.packs, "repository_size": st.pack_bytes,
            "compression_ratio": round(st.raw_size / st.stored_size, 3) if st.stored_size else 0,
            "deduplication_ratio": round(st.restore_size / st.raw_size, 3) if st.raw_size else 0}
    if args.json:
        emit_json(data)
        return 0
    rows = [
        (_("snapshots:"), str(st.snapshots)),
        (_("files (all snapshots):"), str(st.files)),
        (_("size to restore:"), human_size(st.restore_size)),
        (_("unique data:"), _("{size} in {n} blobs").format(size=human_size(st.raw_size), n=st.unique_blobs)),
        (_("stored (compressed):"), human_size(st.stored_size)),
        (_("repository packs:"), f"{st.packs}, {human_size(st.pack_bytes)}"),
        (_("deduplication ratio:"), human_number(data["deduplication_ratio"], 3)),
        (_("compression ratio:"), human_number(data["compression_ratio"], 3)),
    ]
    width = max(len(label) for label, _v in rows) + 1
    for label, value in rows:
        say(f"{label:<{width}}{value}")
    return 0


def database_stats(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    snaps = [find_snapshot(repo, args.snapshot, report=warn)] if args.snapshot else snapshots(repo)
    if args.host:
        snaps = [s for s in snaps if s.hostname == args.host]
    sizes = database_sizes(snaps)
    if args.json:
        emit_json({"databases": [
            {"engine": engine, "name": name, "unusual_growth": unusual_growth(points),
             "sizes": [{"snapshot": p.snapshot, "time": iso_ns(p.time_ns), "size": p.size, "rows": p.rows}
                       for p in points]}
            for (engine, name), points in sizes.items()]})
        return 0
    if not sizes:
        say(_("no snapshot holds a database"))
        return 0
    for (engine, name), points in sizes.items():
        say(f"{engine} {name}")
        rows = []
        for before, p in zip([None, *points], points, strict=False):
            change = "" if before is None else _signed(p.size - before.size)
            rows.append([human_time(p.time_ns), p.snapshot[:8], human_size(p.size), change, str(p.rows)])
        say(table(rows, [_("time"), _("snapshot"), _("size"), _("change"), _("rows")]))
        first, last = points[0], points[-1]
        days = (last.time_ns - first.time_ns) / 86400e9
        if len(points) > 1 and days > 0:
            pct = 100 * (last.size - first.size) / first.size if first.size else 0.0
            say(_("growth: {change} in {days} days ({percent} %), {monthly} per 30 days").format(
                change=_signed(last.size - first.size), days=f"{days:.1f}", percent=f"{pct:+.1f}",
                monthly=_signed(int((last.size - first.size) / days * 30))))
        if unusual_growth(points):
            warn(_("warning: {engine} {name} grew much faster than usual since the previous backup").format(
                engine=engine, name=name))
        say("")
    return 0


def _signed(n: int) -> str:
    return ("+" if n >= 0 else "-") + human_size(abs(n))
