"""Manual pages written from the parser itself, so they never drift from `--help`: coffre(1)
lists the commands, the environment and the exit codes; coffre-COMMAND(1) describes one
command (coffre-key-list(1) for `coffre key list`). In the current language."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

from coffre import __version__
from coffre.core.i18n import N_, _

ENVIRONMENT = (
    ("COFFRE_REPOSITORY", N_("the repository, when --repo is not given")),
    ("COFFRE_PASSWORD_FILE", N_("a file holding the password (readable only by its owner)")),
    ("COFFRE_PASSWORD_COMMAND", N_("a command that prints the password (run without a shell)")),
    ("COFFRE_PASSWORD", N_("refused: a password in the environment reaches every program Coffre "
                           "starts; use COFFRE_PASSWORD_FILE or COFFRE_PASSWORD_COMMAND")),
    ("COFFRE_LOG_FILE", N_("as --log-file")),
    ("COFFRE_LIMIT_UPLOAD, COFFRE_LIMIT_DOWNLOAD", N_("as --limit-upload, --limit-download")),
    ("COFFRE_CACHE_DIR", N_("the local cache (default: ~/.cache/coffre)")),
    ("COFFRE_STORAGE_RETRIES, COFFRE_STORAGE_RETRY_BUDGET, COFFRE_STORAGE_TIMEOUT",
     N_("how often and how long a remote storage is retried")),
    ("LANG, LC_MESSAGES, LC_ALL", N_("the language of the messages (French or English), unless --lang")),
)

EXIT_STATUS = (
    ("0", N_("success")),
    ("1", N_("error")),
    ("2", N_("usage error (a wrong or missing option or argument; an empty path or option is one)")),
    ("3", N_("backup done, but some sources could not be read")),
    ("10", N_("no repository at that location")),
    ("11", N_("the repository is locked by another command")),
    ("12", N_("wrong password")),
    ("130", N_("interrupted (Ctrl-C)")),
    ("143", N_("stopped by SIGTERM")),
)


def escape(text: str) -> str:
    """Text as roff reads it literally: backslashes, hyphens, and a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"(?m)^([.'])", r"\\&\1", text)


def page_name(prog: str) -> str:
    return prog.replace(" ", "-")


def _usage(parser: argparse.ArgumentParser) -> str:
    """The usage line without its "usage: " and its wrapping: man wraps it to the reader's width."""
    usage = parser.format_usage().strip()
    prefix = _("usage: ")
    usage = usage[len(prefix):] if usage.startswith(prefix) else usage
    return " ".join(usage.split())


def _option_label(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"\\fI{escape(action.metavar or action.dest)}\\fR"  # type: ignore[arg-type]
    names = ", ".join(f"\\fB{escape(o)}\\fR" for o in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or (action.dest.upper() if not action.choices
                                 else "{" + ",".join(map(str, action.choices)) + "}")
    return f"{names} \\fI{escape(str(metavar))}\\fR"


def _sections(parser: argparse.ArgumentParser) -> Iterator[str]:
    formatter = parser._get_formatter()
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if a.help is not argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)]
        if not actions:
            continue
        yield f".SS {escape(str(group.title))}"
        for a in actions:
            yield ".TP"
            yield _option_label(a)
            yield escape(formatter._expand_help(a))  # %(default)s, %% as --help shows them


def _commands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield choice.dest, str(choice.help or "")


def render(parser: argparse.ArgumentParser, summary: str) -> str:
    """The roff page of one parser; `summary` is its one-line description."""
    name = page_name(parser.prog)
    manual = escape(_("Coffre manual"))
    lines = [
        f'.TH "{escape(name.upper())}" "1" "" "coffre {escape(__version__)}" "{manual}"',
        ".SH " + escape(_("NAME")),
        f"{escape(name)} \\- {escape(summary)}",
        ".SH " + escape(_("SYNOPSIS")),
        ".ad l",
        escape(_usage(parser)),
        ".ad b",
    ]
    if parser.description or summary:
        lines += [".SH " + escape(_("DESCRIPTION")), escape(parser.description or summary)]
    commands = list(_commands(parser))
    if commands:
        lines.append(".SH " + escape(_("COMMANDS")))
        for cmd, helptext in commands:
            lines += [".TP", f"\\fB{escape(cmd)}\\fR", escape(helptext),
                      escape(_("See {page}(1).").format(page=f"{name}-{cmd}"))]
    lines.append(".SH " + escape(_("OPTIONS")))
    lines += list(_sections(parser))
    if parser.epilog:
        lines += [".PP", escape(parser.epilog)]
    if " " not in parser.prog:  # the main page
        lines.append(".SH " + escape(_("ENVIRONMENT")))
        for var, text in ENVIRONMENT:
            lines += [".TP", f"\\fB{escape(var)}\\fR", escape(_(text))]
        lines.append(".SH " + escape(_("EXIT STATUS")))
        for code, text in EXIT_STATUS:
            lines += [".TP", f"\\fB{code}\\fR", escape(_(text))]
    else:
        lines += [".SH " + escape(_("SEE ALSO")), "\\fBcoffre\\fR(1)"]
    return "\n".join(lines) + "\n"


def pages(parser: argparse.ArgumentParser, summary: str | None = None) -> Iterator[tuple[str, str]]:
    """(file name, roff text) of coffre.1 and of every command's page."""
    yield f"{page_name(parser.prog)}.1", render(parser, str(parser.description or "") if summary is None
                                                else summary)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield from pages(action.choices[choice.dest], str(choice.help or ""))
