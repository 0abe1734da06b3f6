"""One command at a time on a standby: a pass of its follower (the agent's, or `coffre standby
follow|sqlite-follow|mysql-follow`'s) and its promotion never overlap, so a promotion's mark is
never overwritten by a pass that loaded the standby's state before it. A follower that finds
the lock held gives its pass up (the next one comes soon, and reports why); a promotion waits
for the pass in progress to end. The lock is a file's lock: it goes with the process that held
it, whatever killed it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from coffre.core import posix
from coffre.core.errors import CoffreError
from coffre.core.i18n import _


@contextlib.contextmanager
def held(lock_file: Path, standby: str, wait: bool = False) -> Iterator[None]:
    """The standby's lock, held inside the block. `wait`: for the command in progress to end,
    else refuse at once. `standby` names it in the refusal."""
    lock_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock_file, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        if wait:
            posix.lock_exclusive(fd, str(lock_file))
        elif not posix.try_lock_exclusive(fd, str(lock_file)):
            raise CoffreError(_("another coffre command is working on the standby {standby}").format(
                standby=standby), _("it ends by itself; try again in a moment"))
        yield
    finally:
        os.close(fd)


__all__ = ["held"]
