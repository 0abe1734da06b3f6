"""The password's key, derived while the command's modules load.

Run by the entry point before anything else is imported (cli/entry.py): from the command line
and the environment alone, it starts Argon2 for the repository and password file they name
(repository/unlockahead.py). A guess: the command checks its arguments as usual, and a wrong
guess costs a derivation nothing uses.
"""

from __future__ import annotations

import os

from coffre.cli.preload import command_word, early_option

# Commands that open the repository of --repo (or COFFRE_REPOSITORY) with --password-file (or
# COFFRE_PASSWORD_FILE).
OPEN_REPOSITORY = frozenset({
    "backup", "snapshots", "ls", "diff", "dump", "find", "stats", "restore", "verify", "check",
    "forget", "prune",
})


def derive_key_ahead(argv: list[str]) -> None:
    if command_word(argv) not in OPEN_REPOSITORY:
        return
    location = early_option(argv, "--repo") or early_option(argv, "-r") or os.environ.get("COFFRE_REPOSITORY")
    password_file = early_option(argv, "--password-file") or os.environ.get("COFFRE_PASSWORD_FILE")
    if location and password_file:
        from coffre.repository import unlockahead

        unlockahead.start_from_file(location, password_file)
