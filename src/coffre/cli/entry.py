"""The process entry point of `coffre` (console script and `python -m coffre`): signals first.

SIGINT (Ctrl-C) and SIGTERM (systemd, `kill`) become an `Interrupted` exception before
anything heavy is imported, so a signal at any moment, whether during the fraction of a second
the imports take, in the middle of a backup or while the result is printed, ends the same way:
every `finally` runs (the repository lock is removed), one line says so, no traceback, and the
exit status is 128 + the signal number (130, 143), what a shell reports for a killed process.

This module imports nothing of Coffre at load time: the command line is imported inside the
handlers' protection.
"""

from __future__ import annotations

import gc
import os
import signal
import sys

TYPE_CHECKING = False  # importing typing takes milliseconds, before the handlers are in place
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
REDELIVERY_S = 0.1  # a signal lost in a finalizer is sent again this much later (_redeliver)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM received. A KeyboardInterrupt, so whatever already cleans up after
    Ctrl-C (threads, child programs, locks) does the same for SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def _redeliver(unraisable: Any) -> None:
    """sys.unraisablehook: an interruption raised where Python cannot propagate it is not lost.
    A signal that lands while a finalizer or a weakref callback runs (the garbage collector
    runs them between any two steps of the command) raises there, and Python only prints it and
    goes on: a backup interrupted that way completed. The signal is sent again instead, a
    moment later (REDELIVERY_S) from another thread, once this hook has returned (sent from
    here, its handler would run here again), to be raised in the command's own code (or, if it
    lands in a finalizer again, sent again). Anything else goes to Python's usual report."""
    exc = unraisable.exc_value
    if isinstance(exc, Interrupted):
        import threading

        try:
            timer = threading.Timer(REDELIVERY_S, os.kill, args=(os.getpid(), exc.signum))
            timer.daemon = True
            timer.start()
            return
        except RuntimeError:  # the interpreter is shutting down: nothing left to interrupt
            pass
    sys.__unraisablehook__(unraisable)


def _install(handler: Callable[[int, FrameType | None], Any]) -> None:
    for sig in SIGNALS:
        # A signal the parent set to be ignored (SIGINT of a background job) stays ignored.
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, handler)


def _exit_on_signal(code: int) -> None:
    """Once the command has ended, a late signal only hastens the exit (it must not raise in
    the middle of the final message or of the interpreter's shutdown)."""
    _install(lambda signum, frame: os._exit(code))


def interrupted(exc: KeyboardInterrupt) -> int:
    """Report an interruption that has unwound (locks released); the exit status."""
    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    code = 128 + signum
    _exit_on_signal(code)
    print(f"coffre: {_interrupted_message(signum)}", file=sys.stderr)
    return code


def _interrupted_message(signum: int) -> str:
    """The line an interruption ends with, in the reader's language. Imported here: a signal
    may come before the command line was (a further signal now only exits, _exit_on_signal)."""
    from coffre.core.i18n import _

    if signum == signal.SIGINT:
        return _("interrupted; the repository is consistent (a new run resumes)")
    return _("interrupted by {signal}; the repository is consistent (a new run resumes)").format(
        signal=signal.Signals(signum).name)


def _fast_path(argv: list[str]) -> int | None:
    """`coffre wal push`, which PostgreSQL runs for each WAL file, without the whole command
    line (cli/wal_push.py); None for everything else."""
    if argv[:2] != ["wal", "push"]:
        return None
    from coffre.cli import wal_push

    parsed = wal_push.parse(argv[2:])
    return None if parsed is None else wal_push.push(*parsed)


def main() -> int:
    try:
        sys.unraisablehook = _redeliver
        _install(_raise)
        code = _fast_path(sys.argv[1:])
        if code is None:
            from coffre.cli import preload

            ahead = preload.start(sys.argv[1:])  # before the command line's modules are imported
            from coffre.cli.main import main as command_line

            code = command_line()
            if code == 0:
                preload.remember(ahead, sys.argv[1:])
        _exit_on_signal(code)
    except KeyboardInterrupt as exc:
        return interrupted(exc)
    # The interpreter's last garbage collection, at exit, walks every object still alive only
    # to free memory the system takes back anyway: ~75,000 once the S3 library has loaded its
    # model, ~30 ms of a remote command. Frozen objects are left out of it. What the command
    # wrote is flushed and closed by now (cli/main.py closes its log; files are written whole).
    gc.freeze()
    return code
