"""The `coffre` entry point: argument parsing, dispatch, and turning errors into exit codes."""

from __future__ import annotations

import argparse
import os
import sys

from coffre import __version__
from coffre.cli import (
    cmd_acknowledge,
    cmd_backup,
    cmd_browse,
    cmd_copy,
    cmd_database,
    cmd_demo,
    cmd_maintenance,
    cmd_repair,
    cmd_repo,
    cmd_restore,
)
from coffre.cli.entry import interrupted
from coffre.core.errors import EXIT_FATAL, CoffreError
from coffre.core.gil import shorten_switch_interval
from coffre.core.i18n import LANGUAGES, _, set_language
from coffre.core.memory import tune_allocator
from coffre.core.private import UMASK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coffre",
        description="Encrypted, deduplicated, verified backups for pharmacies.",
    )
    parser.add_argument("--version", action="version", version=f"coffre {__version__}")
    parser.add_argument("--lang", choices=LANGUAGES,
                        help=_("language of the messages (default: from LANG / LC_MESSAGES)"))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (cmd_repo, cmd_backup, cmd_browse, cmd_restore, cmd_database, cmd_copy, cmd_maintenance,
                   cmd_acknowledge, cmd_repair, cmd_demo):
        module.register(sub)
    return parser


def requested_language(argv: list[str]) -> str | None:
    """The value of `--lang` (as `--lang fr` or `--lang=fr`), looked for before parsing."""
    for i, arg in enumerate(argv):
        if arg == "--lang" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--lang="):
            return arg.removeprefix("--lang=")
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.umask(UMASK)  # caches, restored folders and files: private until given their own mode
    # `backup --stdin-from-command -- CMD ARGS`: everything after `--` is the command.
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    # File names that are not UTF-8 must never crash an output: escape what cannot be encoded.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    # Folders nest as deep as paths allow (PATH_MAX 4096: ~2000 levels); the walks recurse once
    # a level, and Python 3.11 calls between Python functions do not use the C stack.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))
    tune_allocator()
    shorten_switch_interval()
    lang = requested_language(argv)
    if lang in LANGUAGES:
        set_language(lang)  # before the parser is built: its help is translated
    parser = build_parser()
    args = parser.parse_args(argv)
    if extra:
        if getattr(args, "stdin_from_command", False):
            args.paths = extra
        else:
            args.paths = [*getattr(args, "paths", []), *extra]
    try:
        return int(args.func(args))
    except CoffreError as exc:
        print(f"coffre: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(_("hint: {hint}").format(hint=exc.hint), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (see entry.py), once every lock is released
        return interrupted(exc)
    except BrokenPipeError:
        # The reader went away (e.g. `coffre dump ... | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FATAL
