"""TEMPORARY (branch sqlite-wal): the `coffre wal` group, holding only `sqlite` and
`sqlite-restore`, so that the tests can run them through the real entry point. The main
session writes the real group (with `push`, `ship`...) and wires it into cli/parser.py;
this module is not wired there."""

from __future__ import annotations

import argparse

from coffre.cli import wal_sqlite
from coffre.core.i18n import _


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("wal", help=_("continuous capture of databases' logs"))
    wal_sub = p.add_subparsers(dest="wal_command", required=True, metavar=_("COMMAND"))
    wal_sqlite.register(wal_sub)
