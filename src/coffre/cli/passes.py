"""The foreground loop of `wal ship` and the standby followers: one pass, or with `--every` a pass every so
many seconds until SIGTERM (systemd's stop), trying again after what a later pass may fix."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

from coffre.cli.output import warn
from coffre.core.errors import CoffreError, StorageError
from coffre.core.i18n import _


def run_passes(every: float | None, one_pass: Callable[[], None],
               retried: tuple[type[CoffreError], ...] = (StorageError,)) -> int:
    """Without `every`, one pass whose errors end the command. With it, the errors in
    `retried` are said and the next pass tries again; SIGTERM ends the loop after the pass."""
    stop = threading.Event()

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    if every:
        signal.signal(signal.SIGTERM, on_term)
    while True:
        try:
            one_pass()
        except retried as exc:
            if not every:
                raise
            if isinstance(exc, StorageError):
                warn(_("the repository cannot be reached ({reason}); trying again").format(
                    reason=exc.message))
            else:
                warn(exc.message)  # recorded in the state; the next pass tries again from the same place
        if not every or stop.wait(every):
            return 0
