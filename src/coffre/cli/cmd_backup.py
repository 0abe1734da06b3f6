"""backup."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from coffre.cli.context import add_repo_options, load_index, locked, open_repo, refuse_empty, repo_location
from coffre.cli.output import emit_json, human_size, say, warn
from coffre.cli.watching import watch_storage
from coffre.core.errors import EXIT_PARTIAL, FormatError, UsageError
from coffre.core.i18n import _
from coffre.format.tree import validate_name
from coffre.ops.backup import Backup, BackupOptions
from coffre.ops.repair_config import ensure_config_copies
from coffre.ops.verify import Verifier
from coffre.repository.basecache import BaseCache
from coffre.repository.cache import RepoCache, cache_root, repo_cache_dir
from coffre.repository.damage import known_damage
from coffre.sources.databases.base import Database
from coffre.sources.databases.engines import source
from coffre.sources.files import Excluder


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("backup", help="back up files, or a stream, into a new snapshot")
    add_repo_options(p)
    p.add_argument("paths", nargs="*", help="files and directories to back up")
    p.add_argument("--tag", action="append", default=[], help="tag the snapshot (repeatable)")
    p.add_argument("--host", default="", help="host name recorded in the snapshot")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help=_("leave out what matches (repeatable; * stays within a folder, ** crosses "
                          "folders, a leading / anchors at the root, a name alone matches at any depth)"))
    p.add_argument("--exclude-file", action="append", default=[], metavar="FILE",
                   help=_("read exclude patterns from FILE, one a line (repeatable)"))
    p.add_argument("--one-file-system", action="store_true", help="do not cross mount points")
    p.add_argument("--force", action="store_true", help="read every file, ignoring the files cache")
    p.add_argument("--no-cache", action="store_true",
                   help="use no local cache (files cache; for remote repositories, delta bases)")
    p.add_argument("--stdin", action="store_true", help="back up standard input")
    p.add_argument("--stdin-filename", help="file name for --stdin / --stdin-from-command")
    p.add_argument("--stdin-from-command", action="store_true",
                   help="back up the output of the command given after --")
    p.add_argument("--postgres", action="append", default=[], metavar="DSN",
                   help="dump this live PostgreSQL database into the snapshot (repeatable; "
                   "password in PGPASSWORD or ~/.pgpass)")
    p.add_argument("--postgres-cluster", action="append", default=[], metavar="DSN",
                   help="a physical base backup of this whole PostgreSQL cluster (pg_basebackup; "
                   "needs REPLICATION; repeatable)")
    p.add_argument("--mysql", action="append", default=[], metavar="DSN",
                   help="dump this live MariaDB/MySQL database, mysql://USER@HOST/DB (repeatable; "
                   "password in MYSQL_PWD or ~/.my.cnf)")
    p.add_argument("--sqlite", action="append", default=[], metavar="PATH",
                   help="copy this live SQLite database with SQLite's backup API (repeatable)")
    p.add_argument("--verify", action="store_true",
                   help="after the backup, compare the snapshot with the files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_backup)


def cmd_backup(args: argparse.Namespace) -> int:
    refuse_empty_arguments(args)
    command: list[str] = []
    paths = list(args.paths)
    if args.stdin_from_command:
        command = paths
        paths = []
        if not command:
            raise UsageError("--stdin-from-command needs a command after --")
    if (args.stdin or args.stdin_from_command) and paths:
        raise UsageError("give either paths or --stdin, not both")
    if (args.stdin or args.stdin_from_command) and args.verify:
        raise UsageError("--verify compares files; it does not apply to --stdin")
    databases = database_sources(args)
    if not (paths or command or args.stdin or databases):
        args.command_parser.error(_("nothing to back up: give files or folders, --stdin, "
                                    "--stdin-from-command or a database (--postgres, --sqlite...)"))
    if (args.stdin or args.stdin_from_command) and databases:
        raise UsageError("back up databases and --stdin in separate snapshots")
    stdin_name = args.stdin_filename or ("stdin" if args.stdin or command else "")
    if stdin_name:
        try:
            validate_name(os.fsencode(stdin_name))
        except FormatError:
            raise UsageError(f"--stdin-filename {stdin_name!r}: give a plain file name, "
                             "without '/', '.' or '..'") from None
    excludes = list(args.exclude)
    for f in args.exclude_file:
        try:
            excludes += Excluder.from_file(f)
        except OSError as exc:
            raise UsageError(f"cannot read the exclude file {f}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"the exclude file {f} is not UTF-8 text") from None
    repo = open_repo(args)
    location = repo_location(args)
    opts = BackupOptions(
        paths=paths, tags=args.tag, host=args.host or socket.gethostname(), excludes=excludes,
        one_file_system=args.one_file_system, force_read=args.force, stdin_name=stdin_name,
        stdin=sys.stdin.buffer if args.stdin else None, stdin_command=command, databases=databases,
        # Coffre's own repository and cache are never backed up into themselves.
        skip_paths=[str(cache_root()), *([location] if "://" not in location else [])],
    )
    cache = None if args.no_cache or stdin_name else RepoCache(repo.config.id)
    with locked(repo, exclusive=False, command="backup") as lock:
        ensure_config_copies(repo, report=warn)
        load_index(repo)
        bases = None
        if repo.backend.remote and not args.no_cache:
            bases = BaseCache(repo_cache_dir(repo.config.id) / "bases", repo.crypter)
        result = Backup(repo, lock, opts, cache, report=warn, bases=bases,
                        damaged=known_damage(repo.config.id)).run()
        snap = result.snapshot
        differences: list[str] = []
        if args.verify:
            differences = Verifier(repo, read_repository=True).run(snap).differences
    if cache is not None:
        cache.close()
    watch_storage(repo, changed=True)  # the new snapshot is seen: its deletion would be noticed
    s = snap.summary
    problems = result.problems
    if args.json:
        emit_json({"snapshot": snap.id, "summary": s, "databases": [d.to_map() for d in snap.databases],
                   "errors": problems.errors,
                   "warnings": problems.warnings, "verify_differences": differences})
    else:
        for w in problems.warnings:
            warn(f"warning: {w}")
        for db in snap.databases:
            counted = f", {len(db.tables)} tables, {sum(db.tables.values())} rows" if db.tables else ""
            say(f"database {db.engine} {db.name}: {human_size(db.size)}{counted}")
        say(f"files: {s['files_new']} new, {s['files_changed']} changed, "
            f"{s['files_unmodified']} unmodified; {s['dirs']} directories")
        say(f"added to the repository: {human_size(s['data_added'])} "
            f"({human_size(s['data_added_stored'])} stored)")
        say(f"processed {human_size(s['bytes_total'])} in {s['duration_ns'] / 1e9:.1f} s")
        say(f"snapshot {snap.id[:8]} saved")
        if args.verify:
            for d in differences:
                warn(f"verify: {d}")
            say("verify: the snapshot matches the files" if not differences
                else f"verify: {len(differences)} difference(s) (files changed since they were read?)")
            if any("stored copy cannot be read" in d for d in differences):
                warn("hint: run 'coffre check': it records the damage, and the next backup stores "
                     "those files again")
        if problems.errors:
            warn(f"{len(problems.errors)} file(s) or folder(s) could not be read and were skipped:")
            for e in problems.errors:
                warn(f"  {e}")
    if problems.errors:
        return EXIT_PARTIAL
    return 1 if differences else 0




def refuse_empty_arguments(args: argparse.Namespace) -> None:
    """`coffre backup "$DIR"` with DIR unset must not back up the working directory: an empty
    path, file or database is a usage error before anything is opened."""
    if args.stdin_from_command:
        refuse_empty("the command after --", *args.paths[:1],
                     hint="give the command whose output to back up")
    else:
        refuse_empty("a path to back up", *args.paths,
                     hint="name the files and folders to back up; '.' is the current folder")
    refuse_empty("--exclude-file", *args.exclude_file, hint="give the file of exclude patterns")
    refuse_empty("--stdin-filename", args.stdin_filename, hint="give a plain file name, or leave it out")
    refuse_empty("--sqlite", *args.sqlite, hint="give the SQLite database file")
    for engine in ("postgres", "postgres-cluster", "mysql"):
        refuse_empty(f"--{engine}", *getattr(args, engine.replace("-", "_")),
                     hint="give the database to back up (a DSN)")


def database_sources(args: argparse.Namespace) -> list[Database]:
    """The databases named on the command line, in order."""
    return ([source("postgres", d) for d in args.postgres]
            + [source("postgres-cluster", d) for d in args.postgres_cluster]
            + [source("mysql", d) for d in args.mysql] + [source("sqlite", p) for p in args.sqlite])
