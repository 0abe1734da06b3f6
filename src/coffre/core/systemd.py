"""What writing a systemd unit needs, for the agent's and the server's services alike: the
words of an ExecStart= line, and the Coffre command that is running now."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from coffre.core.interpreter import python_module

_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def exec_word(arg: str) -> str:
    """One word of an ExecStart= line, as systemd reads it (systemd.service(5)), not as a shell
    does: `%` starts a specifier and `$` a variable everywhere, quotes and backslashes are
    C-style. A pharmacy's folder may well be "l'officine" or "100%"."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN_WORD.fullmatch(arg):
        return arg
    escaped = "".join("\\\\" if c == "\\" else '\\"' if c == '"'
                      else f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in arg)
    return f'"{escaped}"'


def coffre_command() -> list[str]:
    """The Coffre that is running now: its `coffre` beside this Python (a virtual environment,
    pipx, the system's), else the one on the PATH, else this Python with `-m coffre`. Never a
    program that does not exist, nor another installation's."""
    beside = Path(sys.executable).parent / "coffre"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("coffre")
    if found:
        return [os.path.realpath(found)]
    return python_module("coffre")
