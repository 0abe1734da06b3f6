"""snapshots, ls, diff, dump, stats."""

from __future__ import annotations

import argparse
import os
import stat
import sys

from coffre.cli.context import add_repo_options, load_index, open_repo, reading, refuse_empty, snapshots
from coffre.cli.output import emit_json, human_size, say, table, warn
from coffre.core.clock import format_ns, iso_ns
from coffre.core.errors import CoffreError
from coffre.core.i18n import _
from coffre.format.snapshot import Snapshot
from coffre.format.tree import Node
from coffre.ops.common import find_node, find_snapshot
from coffre.ops.databases import database_sizes, unusual_growth
from coffre.ops.inspect import diff_trees, iter_tree, repo_stats
from coffre.policy.timeline import future_of, future_warning


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("snapshots", help="list snapshots")
    add_repo_options(p)
    p.add_argument("--host", help=_("only snapshots of this host"))
    p.add_argument("--tag", action="append", default=[], help=_("only snapshots with this tag (repeatable)"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_snapshots)

    p = sub.add_parser("ls", help="list the files of a snapshot")
    add_repo_options(p)
    p.add_argument("snapshot", help=_("snapshot id prefix or 'latest'"))
    p.add_argument("path", nargs="?", default="/", help=_("the folder or file to list (default: all)"))
    p.add_argument("-l", "--long", action="store_true",
                   help=_("also show type and permissions, owner, group, size and time"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("diff", help="what changed between two snapshots")
    add_repo_options(p)
    p.add_argument("first", help=_("the older snapshot (id prefix or 'latest')"))
    p.add_argument("second", help=_("the newer snapshot"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("dump", help="write one file of a snapshot to standard output")
    add_repo_options(p)
    p.add_argument("snapshot", help=_("snapshot id prefix or 'latest'"))
    p.add_argument("path", help=_("the file to write out"))
    p.set_defaults(func=cmd_dump)

    p = sub.add_parser("stats", help="repository and snapshot sizes")
    add_repo_options(p)
    p.add_argument("snapshot", nargs="?", help=_("only this snapshot (default: all)"))
    p.add_argument("--databases", action="store_true",
                   help="each database's size across snapshots, and its growth")
    p.add_argument("--host", help="--databases: only this host's snapshots")
    p.add_argument("--json", action="store_true")
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
    rows = [[s.id[:8], format_ns(s.time_ns), s.hostname, ",".join(s.tags),
             human_size(s.summary.get("bytes_total", 0)), ", ".join(s.paths)] for s in snaps]
    say(table(rows, ["id", "time", "host", "tags", "size", "paths"]))
    say(f"{len(snaps)} snapshot(s)")
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


def cmd_ls(args: argparse.Namespace) -> int:
    refuse_empty("the path", args.path, hint="give a path in the snapshot; '/' is its root")
    repo = open_repo(args)
    load_index(repo)
    snap = find_snapshot(repo, args.snapshot, report=warn)
    want = args.path.strip("/")
    if want:
        node = find_node(repo, snap.tree, os.fsencode(want))
        if node is None:
            raise CoffreError(f"{args.path}: not in snapshot {snap.id[:8]}")
        items = [("/" + want, node)]
        if node.type == "dir" and node.subtree is not None:
            items += list(iter_tree(repo, node.subtree, "/" + want))
    else:
        items = list(iter_tree(repo, snap.tree))
    if args.json:
        emit_json({"snapshot": snap.id, "nodes": [node_json(p, n) for p, n in items]})
        return 0
    for path, n in items:
        if args.long:
            say(f"{_mode_string(n)} {n.user or n.uid:>8} {n.group or n.gid:>8} {n.size:>12} "
                f"{format_ns(n.mtime_ns)} {path}")
        else:
            say(path)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    load_index(repo)
    a = find_snapshot(repo, args.first, report=warn)
    b = find_snapshot(repo, args.second, report=warn)
    entries = list(diff_trees(repo, a.tree, b.tree))
    if args.json:
        emit_json({"first": a.id, "second": b.id,
                   "changes": [{"change": e.change, "path": e.path} for e in entries]})
        return 0
    say(f"comparing snapshot {a.id[:8]} to {b.id[:8]}:")
    for e in entries:
        say(f"{e.change}    {e.path}")
    counts = {c: sum(1 for e in entries if e.change == c) for c in "+-MUT"}
    say(f"added {counts['+']}, removed {counts['-']}, modified {counts['M']}, "
        f"metadata {counts['U']}, type changed {counts['T']}")
    return 0


def cmd_dump(args: argparse.Namespace) -> int:
    refuse_empty("the path", args.path, hint="give the path of a file in the snapshot")
    repo = open_repo(args)
    with reading(repo, "dump"):
        load_index(repo)
        snap = find_snapshot(repo, args.snapshot, report=warn)
        node = find_node(repo, snap.tree, os.fsencode(args.path.strip("/")))
        if node is None:
            raise CoffreError(f"{args.path}: not in snapshot {snap.id[:8]}")
        if node.type != "file":
            raise CoffreError(f"{args.path} is a {node.type}, not a file")
        out = sys.stdout.buffer
        for blob_id in node.content:
            out.write(repo.load_blob(blob_id))
        out.flush()
    return 0


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
    say(f"snapshots:               {st.snapshots}")
    say(f"files (all snapshots):   {st.files}")
    say(f"size to restore:         {human_size(st.restore_size)}")
    say(f"unique data:             {human_size(st.raw_size)} in {st.unique_blobs} blobs")
    say(f"stored (compressed):     {human_size(st.stored_size)}")
    say(f"repository packs:        {st.packs}, {human_size(st.pack_bytes)}")
    say(f"deduplication ratio:     {data['deduplication_ratio']}")
    say(f"compression ratio:       {data['compression_ratio']}")
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
        say("no snapshot holds a database")
        return 0
    for (engine, name), points in sizes.items():
        say(f"{engine} {name}")
        rows = []
        for before, p in zip([None, *points], points, strict=False):
            change = "" if before is None else _signed(p.size - before.size)
            rows.append([format_ns(p.time_ns), p.snapshot[:8], human_size(p.size), change, str(p.rows)])
        say(table(rows, ["time", "snapshot", "size", "change", "rows"]))
        first, last = points[0], points[-1]
        days = (last.time_ns - first.time_ns) / 86400e9
        if len(points) > 1 and days > 0:
            pct = 100 * (last.size - first.size) / first.size if first.size else 0.0
            say(f"growth: {_signed(last.size - first.size)} in {days:.1f} days ({pct:+.1f} %), "
                f"{_signed(int((last.size - first.size) / days * 30))} per 30 days")
        if unusual_growth(points):
            warn(f"warning: {engine} {name} grew much faster than usual since the previous backup")
        say("")
    return 0


def _signed(n: int) -> str:
    return ("+" if n >= 0 else "-") + human_size(abs(n))
