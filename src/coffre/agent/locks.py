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
from dataclasses import dataclass
from pathlib import Path

from coffre.core.posix import try_lock_exclusive


class Busy(Exception):
    """The job is already running (in this agent, another agent, or `coffre run`)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


@dataclass(frozen=True)
class Holder:
    """A process holding a lock: its id, its program's name (the kernel's `comm`, 15
    characters at most: never its arguments) and when it started (epoch seconds)."""

    pid: int
    name: str
    started: float | None


def holders(path: str, proc: str = "/proc") -> list[Holder]:
    """The processes holding the flock of the file at `path`, from Linux's /proc: those with
    the file open (`fd/N` links to it) through a descriptor that holds a lock (`fdinfo/N`
    lists the locks taken through it): a run's process, or a step it left behind when it
    died. [] where /proc tells nothing (another system, a process of another user). For a log
    line that says who keeps a job from running. Only the links are read, never the files
    they name: a process stuck on a dead mount does not stop the look."""
    try:
        target = os.path.realpath(path)
        pids = [int(entry) for entry in os.listdir(proc) if entry.isdigit()]
    except OSError:
        return []
    found = []
    for pid in pids:
        if _holds(f"{proc}/{pid}", target):
            found.append(Holder(pid, _read(f"{proc}/{pid}/comm").strip(), _started(proc, pid)))
    return found


def _holds(process: str, target: str) -> bool:
    try:
        fds = os.listdir(f"{process}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"{process}/fd/{fd}") != target:
                continue
        except OSError:
            continue
        # "lock:\t1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (the device numbers are the
        # filesystem's own: on btrfs they are not those stat gives, so the link decides)
        if any(line.split()[:1] == ["lock:"] and "FLOCK" in line.split()
               for line in _read(f"{process}/fdinfo/{fd}").splitlines()):
            return True
    return False


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(65536)
    except OSError:
        return ""


def _started(proc: str, pid: int) -> float | None:
    """When the process started: its start in clock ticks after boot (/proc/PID/stat, the
    22nd field, counted after the name in parentheses, which may hold spaces), plus the boot
    time (/proc/stat's btime)."""
    stat = _read(f"{proc}/{pid}/stat")
    boot = next((line.split()[1] for line in _read(f"{proc}/stat").splitlines()
                 if line.startswith("btime ")), None)
    try:
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        return int(boot or "") + ticks / os.sysconf("SC_CLK_TCK")
    except (ValueError, IndexError, OSError):
        return None


def _file(state_dir: str, kind: str, name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    folder = Path(state_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return str(folder / f"{kind}-{safe}.lock")


# The agent's look for dead runs holds a job's lock for one read of the status store: a run that
# does not wait for its job looks this many times more, this far apart, before it gives up, so
# that it never takes that look for a run (`coffre run` exiting 11 "already running").
PROBE_RETRIES, PROBE_GAP_S = 3, 0.05


@contextmanager
def _flock(path: str, wait: bool, cancel: threading.Event | None,
           waiting: Callable[[], None] | None = None, retries: int = 0) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while not try_lock_exclusive(fd, path):
            if not wait:
                if retries <= 0:
                    raise Busy(path)
                retries -= 1
                threading.Event().wait(PROBE_GAP_S)
                continue
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
              waiting: Callable[[], None] | None = None, probe: bool = False) -> Iterator[tuple[int, ...]]:
    """Hold the job's lock (Busy if it is held, unless `wait_for_job`: then `waiting` is called
    as the wait begins), then its repositories' locks, in name order (no deadlock between jobs
    sharing repositories), waiting for them. Gives the descriptors that hold them: handed to
    the run's steps (agent/steps.py), they keep the locks held while a step lives, were the
    process that took them to die first. Busy comes after PROBE_RETRIES more looks, or at
    once for the `probe` that looks for dead runs."""
    with ExitStack() as stack:
        retries = 0 if probe else PROBE_RETRIES
        held = [stack.enter_context(_flock(_file(state_dir, "job", job), wait_for_job, cancel, waiting,
                                           retries))]
        for repo in sorted(set(repositories)):
            held.append(stack.enter_context(_flock(_file(state_dir, "repository", repo), True, cancel)))
        yield tuple(held)
