"""backup."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from coffre.cli.context import add_repo_options, load_index, locked, open_repo, refuse_empty, repo_location
from coffre.cli.output import human_number, human_size, say, warn
from coffre.cli.progress import emit_summary, progress_for
from coffre.cli.watching import note_saved, watch_storage
from coffre.core.errors import EXIT_PARTIAL, FormatError, UsageError
from coffre.core.i18n import _, ngettext
from coffre.core.progress import NULL_PROGRESS
from coffre.format.snapshot import DatabaseRecord
from coffre.format.tree import validate_name
from coffre.ops.backup import Backup, BackupOptions, BackupResult, raw_files_left_out, skipped_paths
from coffre.ops.repair_config import ensure_config_copies
from coffre.ops.verify import Verifier, VerifyResult
from coffre.repository.basecache import BaseCache
from coffre.repository.cache import RepoCache, cache_root, repo_cache_dir
from coffre.repository.damage import known_damage
from coffre.sources.databases.base import Database
from coffre.sources.databases.engines import source
from coffre.sources.files import Excluder
from coffre.sources.scan import Scanner, start_scanner


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("backup", help=_("back up files, or a stream, into a new snapshot"))
    add_repo_options(p)
    p.add_argument("paths", nargs="*", help=_("files and directories to back up"))
    p.add_argument("--tag", action="append", default=[], help=_("tag the snapshot (repeatable)"))
    p.add_argument("--host", default="", help=_("host name recorded in the snapshot"))
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help=_("leave out what matches PATTERN (repeatable): '*.tmp' any file so named, "
                          "'/srv/officine/cache' that folder, '**' any depth (docs/patterns.md)"))
    p.add_argument("--exclude-file", action="append", default=[], metavar="FILE",
                   help=_("read exclude patterns from FILE, one a line ('#' starts a comment)"))
    p.add_argument("--one-file-system", action="store_true", help=_("do not cross mount points"))
    p.add_argument("--force", action="store_true", help=_("read every file, ignoring the files cache"))
    p.add_argument("--no-cache", action="store_true",
                   help=_("use no local cache (files cache; for remote repositories, delta bases)"))
    p.add_argument("--stdin", action="store_true", help=_("back up standard input"))
    p.add_argument("--stdin-filename", help=_("file name for --stdin / --stdin-from-command"))
    p.add_argument("--stdin-from-command", action="store_true",
                   help=_("back up the output of the command given after --"))
    p.add_argument("--postgres", action="append", default=[], metavar="DSN",
                   help=_("dump this live PostgreSQL database into the snapshot (repeatable; "
                          "password in PGPASSWORD or ~/.pgpass)"))
    p.add_argument("--postgres-cluster", action="append", default=[], metavar="DSN",
                   help=_("a physical base backup of this whole PostgreSQL cluster (pg_basebackup; "
                          "needs REPLICATION; repeatable)"))
    p.add_argument("--mysql", action="append", default=[], metavar="DSN",
                   help=_("dump this live MariaDB/MySQL database, mysql://USER@HOST/DB (repeatable; "
                          "password in MYSQL_PWD or ~/.my.cnf)"))
    p.add_argument("--sqlite", action="append", default=[], metavar="PATH",
                   help=_("copy this live SQLite database with SQLite's backup API (repeatable)"))
    p.add_argument("--also-raw", action="store_true",
                   help=_("also store the raw files of the databases captured above when they lie "
                          "under a backed-up path (left out by default: the dump is the "
                          "consistent copy)"))
    p.add_argument("--verify", action="store_true",
                   help=_("after the backup, compare the snapshot with the files"))
    p.add_argument("--json", action="store_true", help=_("print the result as JSON"))
    p.set_defaults(func=cmd_backup)


def cmd_backup(args: argparse.Namespace) -> int:
    refuse_empty_arguments(args)
    command: list[str] = []
    paths = list(args.paths)
    if args.stdin_from_command:
        command = paths
        paths = []
        if not command:
            raise UsageError(_("--stdin-from-command needs a command after --"))
    if (args.stdin or args.stdin_from_command) and paths:
        raise UsageError(_("give either paths or --stdin, not both"))
    if (args.stdin or args.stdin_from_command) and args.verify:
        raise UsageError(_("--verify compares files; it does not apply to --stdin"))
    databases = database_sources(args)
    if not (paths or command or args.stdin or databases):
        args.command_parser.error(_("nothing to back up: give files or folders, --stdin, "
                                    "--stdin-from-command or a database (--postgres, --sqlite...)"))
    if (args.stdin or args.stdin_from_command) and databases:
        raise UsageError(_("back up databases and --stdin in separate snapshots"))
    stdin_name = args.stdin_filename or ("stdin" if args.stdin or command else "")
    if stdin_name:
        try:
            validate_name(os.fsencode(stdin_name))
        except FormatError:
            raise UsageError(_("--stdin-filename {name!r}: give a plain file name, "
                               "without '/', '.' or '..'").format(name=stdin_name)) from None
    excludes = list(args.exclude)
    for f in args.exclude_file:
        try:
            excludes += Excluder.from_file(f)
        except OSError as exc:
            raise UsageError(_("cannot read the exclude file {file}: {reason}").format(
                file=f, reason=exc.strerror)) from None
        except UnicodeDecodeError:
            raise UsageError(_("the exclude file {file} is not UTF-8 text").format(file=f)) from None
    patterns = Excluder(excludes).patterns  # a pattern it refuses is a usage error before anything is opened
    location = repo_location(args)
    skip_paths = [str(cache_root()), *([location] if "://" not in location else [])]
    # The walk's scanner starts now, so that the disk's metadata is read while the repository
    # opens (a cold start spends ~0.5 s there; longer off site); the backup takes it over.
    sources = sorted({os.path.abspath(p) for p in paths})
    skip = skipped_paths(skip_paths)
    for _db, inside in raw_files_left_out(databases, sources, args.also_raw):
        skip |= skipped_paths(inside)
    scanner = start_scanner([os.fsencode(s) for s in sources], NULL_PROGRESS, patterns, skip,
                            args.one_file_system)
    try:
        return _backup(args, paths, excludes, skip_paths, databases, command, stdin_name, scanner)
    finally:
        if scanner is not None:
            scanner.stop()


def _backup(args: argparse.Namespace, paths: list[str], excludes: list[str], skip_paths: list[str],
            databases: list[Database], command: list[str], stdin_name: str,
            scanner: Scanner | None) -> int:
    repo = open_repo(args, watch=False)  # watched once locked, its listings then loaded
    opts = BackupOptions(
        paths=paths, tags=args.tag, host=args.host or socket.gethostname(), excludes=excludes,
        one_file_system=args.one_file_system, force_read=args.force, stdin_name=stdin_name,
        stdin=sys.stdin.buffer if args.stdin else None, stdin_command=command, databases=databases,
        # Coffre's own repository and cache are never backed up into themselves.
        skip_paths=skip_paths,
        also_raw=args.also_raw,
    )
    cache = None if args.no_cache or stdin_name else RepoCache(repo.config.id)
    with locked(repo, exclusive=False, command="backup") as lock:
        watch_storage(repo, then_load=True)
        ensure_config_copies(repo, report=warn)
        load_index(repo)
        bases = None
        if repo.backend.remote and not args.no_cache:
            bases = BaseCache(repo_cache_dir(repo.config.id) / "bases", repo.crypter)
        with progress_for(args, _("backup")) as progress:
            result = Backup(repo, lock, opts, cache, report=warn, bases=bases,
                            damaged=known_damage(repo.config.id), progress=progress,
                            scanner=scanner).run()
        snap = result.snapshot
        verified = VerifyResult()
        if args.verify:
            verified = Verifier(repo, read_repository=True).run(snap)
        differences = verified.differences
    if cache is not None:
        cache.close()
    note_saved(repo, snap.id, snap.hostname, snap.time_ns)  # its deletion would be noticed
    problems = result.problems
    if args.json:
        emit_summary({"snapshot": snap.id, "summary": snap.summary,
                      "databases": [d.to_map() for d in snap.databases],
                      "left_out": [{"database": lo.database, "paths": lo.paths} for lo in result.left_out],
                      "errors": problems.errors,
                      "warnings": problems.warnings, "verify_differences": differences})
    else:
        say_summary(result)
        if args.verify:
            say_verify(verified)
        if problems.errors:
            warn(ngettext("{count} file or folder could not be read and was skipped:",
                          "{count} files or folders could not be read and were skipped:",
                          len(problems.errors)).format(count=len(problems.errors)))
            for e in problems.errors:
                warn(f"  {e}")
    if problems.errors:
        return EXIT_PARTIAL
    return 1 if differences else 0


def say_summary(result: BackupResult) -> None:
    """What the backup went through and what crossed the link: the files new, changed and
    unchanged; the bytes read (unchanged files are not read again) out of the total; the bytes
    sent to the repository once deduplicated, compressed and encrypted."""
    snap = result.snapshot
    s = snap.summary
    for w in result.problems.warnings:
        warn(_("warning: {message}").format(message=w))
    for db in snap.databases:
        say(database_line(db))
    if s["files_new"] + s["files_changed"] + s["files_unmodified"] or s["dirs"]:
        say(files_line(s))
    say(transfer_line(s))
    say(_("snapshot {id} saved").format(id=snap.id[:8]))


def database_line(db: DatabaseRecord) -> str:
    if not db.tables:
        return _("database {engine} {name}: {size}").format(
            engine=db.engine, name=db.name, size=human_size(db.size))
    rows = sum(db.tables.values())
    counted = _("{tables}, {rows}").format(
        tables=ngettext("{count} table", "{count} tables", len(db.tables)).format(
            count=human_number(len(db.tables))),
        rows=ngettext("{count} row", "{count} rows", rows).format(count=human_number(rows)))
    return _("database {engine} {name}: {size}, {counted}").format(
        engine=db.engine, name=db.name, size=human_size(db.size), counted=counted)


def files_line(s: dict[str, int]) -> str:
    """files: 3 new, 2 changed, 1,204 unchanged; 37 folders"""
    new, changed, unchanged, folders = (s["files_new"], s["files_changed"], s["files_unmodified"], s["dirs"])
    return _("files: {new}, {changed}, {unchanged}; {folders}").format(
        new=ngettext("{count} new", "{count} new", new).format(count=human_number(new)),
        changed=ngettext("{count} changed", "{count} changed", changed).format(count=human_number(changed)),
        unchanged=ngettext("{count} unchanged", "{count} unchanged", unchanged).format(
            count=human_number(unchanged)),
        folders=ngettext("{count} folder", "{count} folders", folders).format(count=human_number(folders)))


def transfer_line(s: dict[str, int]) -> str:
    """read 42.7 MiB of 1.2 GiB, 271 KiB sent to the repository, in 12.3 s"""
    read = s["bytes_read"]
    values = {
        "read": human_size(read), "total": human_size(s["bytes_total"]),
        "sent": human_size(s["data_added_stored"]),
        "seconds": human_number(s["duration_ns"] / 1e9, 1, keep_zeros=True)}
    if read < s["bytes_total"]:
        return _("read {read} of {total}, {sent} sent to the repository, in {seconds} s").format(**values)
    return _("read {read}, {sent} sent to the repository, in {seconds} s").format(**values)


def say_verify(verified: VerifyResult) -> None:
    differences = verified.differences
    for d in differences:
        warn(_("verify: {difference}").format(difference=d))
    if not differences:
        say(_("verify: the snapshot matches the files"))
    else:
        say(ngettext("verify: {count} difference (files changed since they were read?)",
                     "verify: {count} differences (files changed since they were read?)",
                     len(differences)).format(count=len(differences)))
    if verified.unreadable:
        warn(_("hint: run 'coffre check': it records the damage, and the next backup stores "
               "those files again"))


def refuse_empty_arguments(args: argparse.Namespace) -> None:
    """`coffre backup "$DIR"` with DIR unset must not back up the working directory: an empty
    path, file or database is a usage error before anything is opened."""
    if args.stdin_from_command:
        refuse_empty(_("the command after --"), *args.paths[:1],
                     hint=_("give the command whose output to back up"))
    else:
        refuse_empty(_("a path to back up"), *args.paths,
                     hint=_("name the files and folders to back up; '.' is the current folder"))
    refuse_empty("--exclude-file", *args.exclude_file, hint=_("give the file of exclude patterns"))
    refuse_empty("--stdin-filename", args.stdin_filename, hint=_("give a plain file name, or leave it out"))
    refuse_empty("--sqlite", *args.sqlite, hint=_("give the SQLite database file"))
    for engine in ("postgres", "postgres-cluster", "mysql"):
        refuse_empty(f"--{engine}", *getattr(args, engine.replace("-", "_")),
                     hint=_("give the database to back up (a DSN)"))


def database_sources(args: argparse.Namespace) -> list[Database]:
    """The databases named on the command line, in order."""
    return ([source("postgres", d) for d in args.postgres]
            + [source("postgres-cluster", d) for d in args.postgres_cluster]
            + [source("mysql", d) for d in args.mysql] + [source("sqlite", p) for p in args.sqlite])
