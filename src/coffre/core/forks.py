"""A process copied with os.fork while no background work of Coffre is half done.

fork copies only the thread that calls it. A lock another thread held at that moment stays
held in the copy forever, and the copy waits on it the first time it needs it. Background work
that takes such locks (the repository lock's renewal, which writes to the storage through the
same objects a copy reads with) runs inside `quiet()`; `fork()` waits for it to end, and none
starts while the copy is made.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_BUSY = threading.Lock()


def available() -> bool:
    """Whether this system can copy a process (not on Windows)."""
    return hasattr(os, "fork")


@contextmanager
def quiet() -> Iterator[None]:
    """Background work no copy may catch half done."""
    with _BUSY:
        yield


def fork() -> int:
    """os.fork, between two pieces of background work: 0 in the copy, its pid in the parent.
    Python 3.12 and later warn that a fork with other threads alive may deadlock; the only
    other threads then are idle ones of Coffre, which the copy never uses."""
    with _BUSY, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()
