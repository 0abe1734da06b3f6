"""The `coffre` entry point: argument parsing, dispatch, and turning errors into exit codes."""

from __future__ import annotations

import argparse
import os
import sys
import time

from coffre.cli.entry import interrupted
from coffre.cli.logfile import Output
from coffre.cli.parser import build_parser, named_command
from coffre.cli.preload import early_option
from coffre.core.errors import EXIT_FATAL, CoffreError
from coffre.core.gil import shorten_switch_interval
from coffre.core.i18n import LANGUAGES, _, set_language
from coffre.core.memory import tune_allocator, tune_collector
from coffre.core.private import UMASK

# Commands whose standard output reports what they did (said again by the exit status):
# --quiet silences it. The others print what they were asked to show, which --quiet keeps.
REPORTS = frozenset({
    "init", "backup", "restore", "copy", "forget", "prune", "unlock", "acknowledge", "restore-db",
    "demo", "key add", "key remove", "key passwd", "repair index", "repair config",
})


def command_name(args: argparse.Namespace) -> str:
    """'backup', 'key list', 'repair index'..."""
    words = [args.command]
    for sub in ("key_command", "what"):
        if getattr(args, sub, None):
            words.append(getattr(args, sub))
    return " ".join(words)


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
    tune_collector()
    shorten_switch_interval()
    lang = early_option(argv, "--lang")
    if lang in LANGUAGES:
        set_language(lang)  # before the parser is built: its help is translated
    started = time.monotonic()
    output: Output | None = None
    args: argparse.Namespace | None = None
    code = EXIT_FATAL
    try:
        # Opened before parsing, so that a usage error in a scheduled job is logged too.
        log_path = early_option(argv, "--log-file") or os.environ.get("COFFRE_LOG_FILE") or None
        output = Output(log_path, "coffre", quiet=False)
        parser = build_parser(named_command(argv))
        args = parser.parse_args(argv)
        if extra:
            if getattr(args, "stdin_from_command", False):
                args.paths = extra
            else:
                args.paths = [*getattr(args, "paths", []), *extra]
        name = command_name(args)
        if output.log is not None:
            output.log.command = name
        output.out.show = not (args.quiet and not getattr(args, "json", False) and name in REPORTS)
        output.note(_("started"))
        code = int(args.func(args))
        return code
    except SystemExit as exc:  # --help, --version, or a usage error (exit 2), already printed
        code = exc.code if isinstance(exc.code, int) else EXIT_FATAL
        return code
    except CoffreError as exc:
        print(f"coffre: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(_("hint: {hint}").format(hint=exc.hint), file=sys.stderr)
        code = exc.exit_code
        return code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (see entry.py), once every lock is released
        code = interrupted(exc)
        return code
    except BrokenPipeError:
        # The reader went away (e.g. `coffre dump ... | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_FATAL
        return code
    finally:
        if output is not None:
            if args is not None and args.verbose:
                print(_("ended with exit status {code} after {seconds:.1f} s").format(
                    code=code, seconds=time.monotonic() - started), file=sys.stderr)
            else:
                output.note(_("ended with exit status {code}").format(code=code))
            output.close()
