"""The `coffre` command line's parser: its commands, the options every command takes, and the
behaviour a person expects of it.

- A mistake in a subcommand's arguments is reported with that subcommand's usage (argparse
  hands the arguments a subparser does not know up to the top-level parser, which then shows
  the top-level usage: `CoffreParser` reports them where they were given).
- Usage errors exit 2 (argparse's `error`, and `UsageError`).
- The options every command takes (`--lang`, `-v/--verbose`, `-q/--quiet`, `--log-file`) are
  accepted before the command name and after it, with the same meaning.
- argparse's own words are in the reader's language (cli/argparse_words.py).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

from coffre import __version__
from coffre.cli import argparse_words
from coffre.cli.preload import command_word
from coffre.core.errors import EXIT_USAGE
from coffre.core.i18n import LANGUAGES, _

# The modules of the commands (coffre.cli.cmd_*), in the order of the help, and the commands
# each one registers. A command line naming one of them builds the parser with its module
# alone: the others, and what they import (the agent, the continuity engines...), cost every
# command ~0.2 s on a cold page cache otherwise. Help without a command, a mistyped command
# and the manual pages build the whole parser.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "cmd_repo": ("init", "key", "unlock"),
    "cmd_backup": ("backup",),
    "cmd_browse": ("snapshots", "ls", "diff", "dump", "find", "stats"),
    "cmd_restore": ("restore", "verify"),
    "cmd_database": ("restore-db", "drill"),
    "cmd_copy": ("copy",),
    "cmd_maintenance": ("check", "forget", "prune"),
    "cmd_acknowledge": ("acknowledge",),
    "cmd_repair": ("repair",),
    "cmd_agent": ("config", "run", "agent"),
    "cmd_status": ("status",),
    "cmd_server": ("server",),
    "cmd_demo": ("demo",),
    "cmd_shell": ("completion", "manpage"),
    "cmd_wal": ("wal",),
    "cmd_standby": ("standby",),
}
MODULE_OF = {command: module for module, commands in COMMAND_MODULES.items() for command in commands}
WHOLE_LINE = ("completion", "manpage")  # they describe every command


def named_command(argv: list[str]) -> str | None:
    """The command an argument list names (its first word that is not an option or an
    option's value), if Coffre has it and it needs no other; None otherwise."""
    word = command_word(argv)
    return word if word in MODULE_OF and word not in WHOLE_LINE else None


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with the colon after a section heading as the language writes it
    (French puts a space before it: "options :")."""

    def start_section(self, heading: str | None) -> None:
        if heading:
            # argparse appends ":" itself: the translated "{heading}:" without its last character.
            heading = _("{heading}:").format(heading=heading).removesuffix(":")
        super().start_section(heading)


class CoffreParser(argparse.ArgumentParser):
    """An ArgumentParser whose subcommands report their own mistakes with their own usage, and
    whose help follows the language's typography."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # one signature for argparse's overloads
        self, args: Any = None, namespace: Any = None,
    ) -> tuple[Any, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            # A subcommand's parser is called by its parent with parse_known_args: what it
            # does not know is its own mistake, to be shown with its own usage.
            self.error(_("unrecognized arguments: %s") % " ".join(extras))
        return namespace, extras

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, _("%(prog)s: error: %(message)s\n") % {"prog": self.prog, "message": message})


def add_global_options(p: argparse.ArgumentParser, top: bool) -> None:
    """The options every command takes. On the subcommands their default is SUPPRESS, so a
    value given before the command name is not reset by the subcommand's parser."""
    default: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    g = p.add_argument_group(_("output and logging"))
    g.add_argument("--lang", choices=LANGUAGES, **default,
                   help=_("language of the messages (default: from LANG / LC_MESSAGES)"))
    loud = g.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", **({"default": False} if top else default),
                      help=_("say more: progress as plain lines when the output is not a terminal, "
                             "how long the command took"))
    loud.add_argument("-q", "--quiet", action="store_true", **({"default": False} if top else default),
                      help=_("print only warnings, errors and what the command is asked to show (no "
                             "progress, no summary of backup, restore, copy, forget, prune...)"))
    g.add_argument("--log-file", metavar="FILE", **default,
                   help=_("also append what the command prints, with timestamps, to FILE (or "
                          "COFFRE_LOG_FILE); secrets such as the recovery key are never written"))


def build_parser(command: str | None = None) -> CoffreParser:
    """The whole command line, in the current language (set it before); with only the module
    of `command` (one of MODULE_OF) when it is given."""
    argparse_words.localize()
    parser = CoffreParser(
        prog="coffre",
        description=_("Encrypted, deduplicated, verified backups for pharmacies."),
        epilog=_("'coffre COMMAND --help' describes a command; 'coffre manpage' writes the manual "
                 "pages, 'coffre completion bash' the shell completion."),
    )
    parser.add_argument("--version", action="version", version=f"coffre {__version__}",
                        help=_("print Coffre's version and exit"))
    add_global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar=_("COMMAND"),
                                title=_("commands"))
    for name in [MODULE_OF[command]] if command is not None else COMMAND_MODULES:
        importlib.import_module(f"coffre.cli.{name}").register(sub)
    for p in subparsers(parser):
        add_global_options(p, top=False)
        p.set_defaults(command_parser=p)  # a command can report a usage error with its usage
        describe_json_option(p)
    parser.set_defaults(root_parser=parser)
    return parser


def subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below this one (key, key list, repair, repair index...), depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases name a parser twice
                yield child
                yield from subparsers(child)


def describe_json_option(p: argparse.ArgumentParser) -> None:
    """`--json` means the same everywhere: described once, here, where a command left it bare."""
    for action in p._actions:
        if "--json" in action.option_strings and action.help is None:
            action.help = _("print the result as JSON for scripts and monitoring (sizes in bytes)")


def walk_actions(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    """(prog, action) for every option and argument of every command: what the manual pages,
    and the test that every option is described, go through."""
    for p in [parser, *subparsers(parser)]:
        for action in p._actions:
            yield p.prog, action
