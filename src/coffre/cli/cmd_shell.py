"""completion, manpage: what a shell and `man` need, written from the parser itself."""

from __future__ import annotations

import argparse
import os

from coffre.cli.output import say
from coffre.core.errors import CoffreError, UsageError
from coffre.core.i18n import _, ngettext

SHELLS = ("bash", "zsh", "tcsh")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "completion", help=_("print the shell completion script for bash, zsh or tcsh"),
        description=_("Print a completion script for the shell. Install it once, e.g. for bash: "
                      "coffre completion bash > /etc/bash_completion.d/coffre; for zsh: coffre "
                      "completion zsh > /usr/local/share/zsh/site-functions/_coffre."))
    p.add_argument("shell", choices=SHELLS, help=_("the shell: bash, zsh or tcsh"))
    p.set_defaults(func=cmd_completion)

    m = sub.add_parser(
        "manpage", help=_("write the manual pages (coffre.1 and one per command)"),
        description=_("Write the manual pages, generated from the commands' own help, in the "
                      "current language: with --dir, coffre.1 and coffre-COMMAND.1 for every "
                      "command into that folder (e.g. /usr/local/share/man/man1, then "
                      "'man coffre-backup'); otherwise one page, of coffre or of the command "
                      "named, on standard output."))
    m.add_argument("name", nargs="*", metavar="COMMAND",
                   help=_("the command whose page to print, e.g. 'backup' or 'key list' "
                          "(default: coffre's main page)"))
    m.add_argument("--dir", metavar="DIR", help=_("write every page into this folder"))
    m.set_defaults(func=cmd_manpage)


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    from coffre.cli.parser import walk_actions

    # Paths complete as files or folders; the rest as argparse describes them (choices).
    for _prog, action in walk_actions(args.root_parser):
        if action.metavar in ("DIR", "REPO") or action.dest in ("target", "repo"):
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
        elif action.metavar in ("FILE", "PATH") or action.dest == "paths":
            action.complete = shtab.FILE  # type: ignore[attr-defined]
    say(shtab.complete(args.root_parser, shell=args.shell).rstrip("\n"))
    return 0


def cmd_manpage(args: argparse.Namespace) -> int:
    from coffre.cli.manpage import page_name, pages

    every = dict(pages(args.root_parser))
    if args.dir is not None:
        if args.name:
            raise UsageError(_("give either --dir or a command, not both"))
        if not args.dir:
            raise UsageError(_("--dir is empty (an unset variable?)"),
                             _("give the folder to write the pages into"))
        try:
            os.makedirs(args.dir, mode=0o755, exist_ok=True)
            for name, text in every.items():
                path = os.path.join(args.dir, name)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
                os.chmod(path, 0o644)  # manual pages are for every user
        except OSError as exc:
            raise CoffreError(_("cannot write the manual pages into {dir}: {reason}").format(
                dir=args.dir, reason=exc.strerror)) from None
        say(ngettext("{n} manual page written into {dir}", "{n} manual pages written into {dir}",
                     len(every)).format(n=len(every), dir=args.dir))
        return 0
    name = page_name(" ".join([args.root_parser.prog, *args.name])) + ".1"
    if name not in every:
        raise UsageError(_("no command {name!r}").format(name=" ".join(args.name)),
                         _("see 'coffre --help' for the commands"))
    print(every[name], end="")
    return 0
