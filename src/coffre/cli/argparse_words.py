"""argparse's own words ("usage:", "options", "the following arguments are required"...) in
the reader's language.

argparse looks its messages up with `gettext.gettext` in the default domain, where Coffre's
catalogue is not: `localize()` points its lookups at Coffre's `_` and `ngettext`, before any
parser is built. The messages are listed below with `N_` so that `./run catalog` extracts them
(the msgids of Python 3.11's argparse, those a user can meet; the others are programming
errors). The French keeps argparse's `%` placeholders.
"""

from __future__ import annotations

import argparse

from coffre.core.i18n import N_, _, ngettext

WORDS = (
    N_("usage: "),
    N_("positional arguments"),
    N_("options"),
    N_("show this help message and exit"),
    N_("argument %(argument_name)s: %(message)s"),
    N_("%(prog)s: error: %(message)s\n"),
    N_("unrecognized arguments: %s"),
    N_("not allowed with argument %s"),
    N_("ignored explicit argument %r"),
    N_("the following arguments are required: %s"),
    N_("one of the arguments %s is required"),
    N_("expected one argument"),
    N_("expected at most one argument"),
    N_("expected at least one argument"),
    N_("ambiguous option: %(option)s could match %(matches)s"),
    N_("unexpected option string: %s"),
    N_("invalid %(type)s value: %(value)r"),
    N_("invalid choice: %(value)r (choose from %(choices)s)"),
    N_("unknown parser %(parser_name)r (choices: %(choices)s)"),
    N_("can't open '%(filename)s': %(error)s"),
)


def _plural_words() -> None:
    """Never called: the plural messages, for extraction."""
    ngettext("expected %s argument", "expected %s arguments", 1)


def localize() -> None:
    """Make argparse speak the current language (call before building a parser)."""
    setattr(argparse, "_", _)  # noqa: B010 - a module global argparse reads at call time
    setattr(argparse, "ngettext", ngettext)  # noqa: B010
