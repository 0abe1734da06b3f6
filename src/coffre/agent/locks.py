"""Locks between runs, in the agent's state folder: one per job (two agents, or the agent and
`coffre run`, never run the same job at once) and one per repository (one job at a time on a
repository; different repositories run in parallel). `flock` locks: the kernel releases them
when the holder dies, so nothing stale is ever left behind. A run's steps (`coffre backup`...)
hold them too, inherited: a job whose lock is free has no step of a run left, were the
agent or `coffre run` killed before its step (the status store relies on it,
Runner.settle_abandoned)."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from coffre.core.posix import try_lock_exclusive


class Busy(Exception):
    """The job is already running (in this agent, another agent, or `coffre run`)."""


def _file(state_dir: str, kind: str, name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    folder = Path(state_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return str(folder / f"{kind}-{safe}.lock")


@contextmanager
def _flock(path: str, wait: bool, cancel: threading.Event | None,
           waiting: Callable[[], None] | None = None) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while not try_lock_exclusive(fd, path):
            if not wait:
                raise Busy(path)
            if waiting is not None:
                waiting()  # once, as the wait begins
                waiting = None
            # Another process holds it: look again soon (flock cannot wait with a timeout).
            if cancel is not None and cancel.wait(0.5):
                raise Busy(path)
            if cancel is None:
                threading.Event().wait(0.5)
        yield fd
    finally:
        os.close(fd)


@contextmanager
def job_locks(state_dir: str, job: str, repositories: list[str],
              cancel: threading.Event | None = None, wait_for_job: bool = False,
              waiting: Callable[[], None] | None = None) -> Iterator[tuple[int, ...]]:
    """Hold the job's lock (Busy at once if it is held, unless `wait_for_job`: then `waiting`
    is called as the wait begins), then its repositories' locks, in name order (no deadlock
    between jobs sharing repositories), waiting for them. Gives the descriptors that hold them:
    handed to the run's steps (agent/steps.py), they keep the locks held while a step lives,
    were the process that took them to die first."""
    with ExitStack() as stack:
        held = [stack.enter_context(_flock(_file(state_dir, "job", job), wait_for_job, cancel, waiting))]
        for repo in sorted(set(repositories)):
            held.append(stack.enter_context(_flock(_file(state_dir, "repository", repo), True, cancel)))
        yield tuple(held)
