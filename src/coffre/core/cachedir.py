"""Where Coffre's cache lives on this machine: $COFFRE_CACHE_DIR, else
$XDG_CACHE_HOME/coffre, else ~/.cache/coffre.

Standard library only (os): the command reads it before anything else is loaded
(cli/preload.py).
"""

from __future__ import annotations

import os


def cache_home() -> str:
    explicit = os.environ.get("COFFRE_CACHE_DIR")
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_CACHE_HOME")
    return os.path.join(xdg or os.path.join(os.path.expanduser("~"), ".cache"), "coffre")
