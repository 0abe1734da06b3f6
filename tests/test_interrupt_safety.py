"""A signal never leaves a lock of the standard library's thread synchronisation taken.

Python raises a signal's exception between any two steps of the main thread, including the
step after `threading.Condition.__enter__` took its lock and before the `with` block that
releases it. A worker thread then waits for that lock forever (a semaphore's release, a
future's result), and the interrupted command, joining its workers, never ends: a CI run of
the backup's signal tests caught one. cli/entry.py defers the interruption there by a few
milliseconds, and still interrupts at once a main thread blocked in a wait.
"""

from __future__ import annotations

import linecache
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

import pytest

from coffre.cli import entry

from conftest import communicate_after_signal

# The main thread and two workers take and give back the slots of one semaphore as fast as
# they can, as a backup's reader and its pack workers do: the main thread spends much of its
# time inside the semaphore's lock handling, where an interruption used to leak that lock.
SEMAPHORE_RACE = """
import sys, threading
import coffre.cli.main
from coffre.cli import entry
from concurrent.futures import ThreadPoolExecutor

def command_line():
    slots = threading.BoundedSemaphore(2)
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            slots.acquire()
            slots.release()

    with ThreadPoolExecutor(2) as pool:
        try:
            for _ in range(2):
                pool.submit(worker)
            print("ready", flush=True)
            while True:
                slots.acquire()
                slots.release()
        finally:
            stop.set()

coffre.cli.main.main = command_line
sys.exit(entry.main())
"""
TRIALS = 20  # without the deferral, about one in four of these runs hung


def test_a_signal_in_the_middle_of_thread_synchronisation_still_ends_the_command() -> None:
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    for trial in range(TRIALS):
        proc = subprocess.Popen([sys.executable, "-c", SEMAPHORE_RACE], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(0.003 * trial)  # the signal's moment, spread over the race's first 60 ms
        proc.send_signal(signal.SIGTERM)
        _, err = communicate_after_signal(proc, timeout=30)
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert b"interrupted by SIGTERM" in err and b"Traceback" not in err, err


@pytest.fixture
def deferred(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float]]:
    """The later raises `_raise` asks for, recorded instead of armed (no SIGALRM here)."""
    calls: list[tuple[int, float]] = []
    monkeypatch.setattr(entry, "_raise_later", lambda signum, delay: calls.append((signum, delay)))
    monkeypatch.setattr(entry, "_deferrals", 0)
    monkeypatch.setattr(entry, "_pending", None)
    return calls


def condition_enter_frame() -> FrameType:
    """A frame of `Condition.__enter__`, kept after it returned (its lock then taken)."""
    frames: list[FrameType] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "return" and frame.f_code is threading.Condition.__enter__.__code__:
            frames.append(frame)

    cond = threading.Condition()
    sys.setprofile(profile)
    try:
        with cond:
            pass
    finally:
        sys.setprofile(None)
    return frames[0]


def test_inside_a_lock_handling_the_interruption_is_deferred(
    deferred: list[tuple[int, float]],
) -> None:
    entry._raise(signal.SIGTERM, condition_enter_frame())  # no exception
    assert deferred == [(signal.SIGTERM, entry.DEFER_S)]


def test_a_deferred_interruption_is_raised_in_the_commands_own_code(
    deferred: list[tuple[int, float]],
) -> None:
    entry._raise(signal.SIGINT, condition_enter_frame())
    with pytest.raises(entry.Interrupted) as caught:
        entry._raise(signal.SIGINT, sys._getframe())
    assert caught.value.signum == signal.SIGINT
    assert entry._deferrals == 0 and entry._pending is None


def test_code_that_never_leaves_the_lock_handling_is_interrupted_after_a_second(
    deferred: list[tuple[int, float]],
) -> None:
    frame = condition_enter_frame()
    for _ in range(entry.MAX_DEFERRALS):
        entry._raise(signal.SIGTERM, frame)
    assert len(deferred) == entry.MAX_DEFERRALS
    assert entry.MAX_DEFERRALS * entry.DEFER_S <= 1.0
    with pytest.raises(entry.Interrupted):
        entry._raise(signal.SIGTERM, frame)


def test_a_main_thread_blocked_in_a_wait_is_interrupted_at_once(
    deferred: list[tuple[int, float]],
) -> None:
    """Waiting for a future or a semaphore slot: the wait's own try/finally cleans up, and
    Ctrl-C must not wait for the whole restore the main thread is waiting on."""
    cond, started = threading.Condition(), threading.Event()

    def waits() -> None:
        with cond:
            started.set()
            cond.wait()

    waiter = threading.Thread(target=waits)
    waiter.start()
    try:
        started.wait()
        frame = blocked_frame(waiter)
        assert frame.f_code is threading.Condition.wait.__code__
        with pytest.raises(entry.Interrupted):
            entry._raise(signal.SIGTERM, frame)
        assert deferred == []
    finally:
        with cond:
            cond.notify()
        waiter.join()


def test_a_main_thread_joining_a_thread_is_interrupted_at_once(
    deferred: list[tuple[int, float]],
) -> None:
    """The end of a command waits for its workers (a pool's shutdown joins them): Ctrl-C
    there ends it at once, whether the join waits on a lock (Python 3.11, 3.12) or in the
    thread's handle (3.13)."""
    release = threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()
    joiner = threading.Thread(target=worker.join)
    joiner.start()
    try:
        frame = blocked_frame(joiner)
        assert frame.f_code.co_filename == threading.__file__
        with pytest.raises(entry.Interrupted):
            entry._raise(signal.SIGTERM, frame)
        assert deferred == []
    finally:
        release.set()
        joiner.join()


def blocked_frame(thread: threading.Thread) -> FrameType:
    """`thread`'s innermost frame once it blocks in one of the standard library's waits."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        frame = sys._current_frames()[thread.ident or 0]
        line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
        if any(call in line for call in entry.BLOCKING_CALLS.values()):
            return frame
        time.sleep(0.001)
    raise AssertionError("the thread never blocked")
