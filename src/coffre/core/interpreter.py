"""How Coffre starts Python on one of its own modules, in a child process.

`python -m` looks for modules in the current folder first: a process started from a folder
others can write to (`/tmp`, as root) would import a module planted there, with its rights and
whatever secrets it is given. `-P` (Python 3.11) leaves that folder out; the module is found
where Coffre is installed, or through PYTHONPATH.
"""

from __future__ import annotations

import sys


def python_module(module: str) -> list[str]:
    """The command that runs `module` (`python -m module`) in this interpreter."""
    return [sys.executable, "-P", "-m", module]
