"""The process entry point of `coffre` (console script and `python -m coffre`): signals first.

SIGINT (Ctrl-C) and SIGTERM (systemd, `kill`) become an `Interrupted` exception before
anything heavy is imported, so a signal at any moment, whether during the fraction of a second
the imports take, in the middle of a backup or while the result is printed, ends the same way:
every `finally` runs (the repository lock is removed), one line says so, no traceback, and the
exit status is 128 + the signal number (130, 143), what a shell reports for a killed process.

A signal is not raised in the middle of the standard library's thread synchronisation: an
exception raised between the moment such code takes one of its locks and the `try` that
releases it leaves the lock taken, and the worker thread that next needs it (a semaphore's
release, a future's result) waits forever, so the command never ends. There the interruption
is deferred by a few milliseconds (_raise).

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
REDELIVERY_S = 0.1  # a signal lost in a finalizer is raised again this much later (_redeliver)
DEFER_S = 0.01  # a signal landing in thread synchronisation is raised again this much later
# A last resort (a second): code that would never leave the standard library's synchronisation
# is interrupted all the same.
MAX_DEFERRALS = 100
# Where a lock may be held between its acquire and the `try` that releases it (and the module
# locks of imports): code of the standard library, matched by the end of its file name.
SYNCHRONISATION_CODE = (
    "/threading.py", "/queue.py", "/concurrent/futures/_base.py", "/concurrent/futures/thread.py",
    "/logging/__init__.py", "<frozen importlib._bootstrap>",
)
# The blocking call of each of those functions that wait: a lock's acquire, which the standard
# library guards with try/finally (a condition, and a thread's end up to Python 3.12), and,
# from Python 3.13, a thread's join, which holds no lock of Python's while it waits.
BLOCKING_CALLS = {"wait": "acquire(", "_wait_for_tstate_lock": "acquire(", "join": "_handle.join("}
_CAN_DEFER = hasattr(signal, "setitimer")  # not on Windows: raise at once there
_pending: int | None = None  # the signal deferred, raised again when SIGALRM comes
_deferrals = 0


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM received. A KeyboardInterrupt, so whatever already cleans up after
    Ctrl-C (threads, child programs, locks) does the same for SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGINT and SIGTERM (in the main thread, between two steps of `frame`)."""
    global _pending, _deferrals
    if _CAN_DEFER and _deferrals < MAX_DEFERRALS and _in_synchronisation(frame) and not _waiting(frame):
        _deferrals += 1
        _raise_later(signum, DEFER_S)
        return
    _pending, _deferrals = None, 0
    raise Interrupted(signum)


def _in_synchronisation(frame: FrameType | None) -> bool:
    return frame is not None and frame.f_code.co_filename.replace("\\", "/").endswith(
        SYNCHRONISATION_CODE)


def _waiting(frame: FrameType | None) -> bool:
    """The main thread blocks in one of the standard library's waits (a condition, a future's
    result, a thread's end), which leave no lock taken when Ctrl-C interrupts them: interrupt
    it now."""
    call = BLOCKING_CALLS.get(frame.f_code.co_name) if frame is not None else None
    if frame is None or call is None:
        return False
    import linecache  # only now: threading alone does not load it

    return call in linecache.getline(frame.f_code.co_filename, frame.f_lineno)


def _raise_later(signum: int, delay: float) -> None:
    """Raise `signum` again in `delay` seconds. A timer signal, not a thread: starting a thread
    takes locks of `threading` that the interrupted code may hold. Without timer signals
    (Windows), the signal is sent again from a thread."""
    global _pending
    if not _CAN_DEFER:
        import threading

        timer = threading.Timer(delay, os.kill, args=(os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    _pending = signum
    signal.setitimer(signal.ITIMER_REAL, delay)


def _raise_pending(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGALRM: the deferred signal, if one is still waiting."""
    if _pending is not None:
        _raise(_pending, frame)


def _redeliver(unraisable: Any) -> None:
    """sys.unraisablehook: an interruption raised where Python cannot propagate it is not lost.
    A signal that lands while a finalizer or a weakref callback runs (the garbage collector
    runs them between any two steps of the command) raises there, and Python only prints it and
    goes on: a backup interrupted that way completed. It is raised again instead, a moment later
    (REDELIVERY_S), once this hook has returned (raised from here, it would be lost again), in
    the command's own code (or, if it lands in a finalizer again, later again). Anything else
    goes to Python's usual report."""
    exc = unraisable.exc_value
    if isinstance(exc, Interrupted):
        try:
            _raise_later(exc.signum, REDELIVERY_S)
            return
        except RuntimeError:  # the interpreter is shutting down: nothing left to interrupt
            pass
    sys.__unraisablehook__(unraisable)


def _install(handler: Callable[[int, FrameType | None], Any]) -> None:
    for sig in SIGNALS:
        # A signal the parent set to be ignored (SIGINT of a background job) stays ignored.
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, handler)


def _install_interruption() -> None:
    if _CAN_DEFER:
        signal.signal(signal.SIGALRM, _raise_pending)
    _install(_raise)


def take_deferred() -> int | None:
    """A signal deferred and not raised yet (it landed in thread synchronisation as the
    command started), handed to a command that now takes the signals itself (`coffre run`):
    it will not be raised later, in the middle of what that command started."""
    global _pending
    signum, _pending = _pending, None
    if signum is not None and _CAN_DEFER:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return signum


def _exit_on_signal(code: int) -> None:
    """Once the command has ended, a late signal only hastens the exit (it must not raise in
    the middle of the final message or of the interpreter's shutdown); one still deferred is
    dropped, the command having ended by itself."""
    global _pending
    _pending = None
    if _CAN_DEFER:
        signal.setitimer(signal.ITIMER_REAL, 0)
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


def _interruption_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The interruption a RuntimeError wraps, if any: Python 3.11 wraps what a descriptor's
    __set_name__ raises while a class is made ("Error calling __set_name__"), and a signal
    during the imports may land there (a cached_property of the standard library's ipaddress)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return seen
        seen = seen.__cause__
    return None


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
        _install_interruption()
        code = _fast_path(sys.argv[1:])
        if code is None:
            from coffre.cli import keyahead, preload

            keyahead.derive_key_ahead(sys.argv[1:])  # Argon2 first: the longest to wait for
            ahead = preload.start(sys.argv[1:])  # before the command line's modules are imported
            from coffre.cli.main import main as command_line

            code = command_line()
            if code == 0:
                preload.remember(ahead, sys.argv[1:])
        _exit_on_signal(code)
    except KeyboardInterrupt as exc:
        return interrupted(exc)
    except RuntimeError as exc:
        cause = _interruption_behind(exc)
        if cause is None:
            raise
        return interrupted(cause)
    # The interpreter's last garbage collection, at exit, walks every object still alive only
    # to free memory the system takes back anyway: ~75,000 once the S3 library has loaded its
    # model, ~30 ms of a remote command. Frozen objects are left out of it. What the command
    # wrote is flushed and closed by now (cli/main.py closes its log; files are written whole).
    gc.freeze()
    return code
