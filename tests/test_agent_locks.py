"""One run of a job at a time, one job per repository at a time, across threads and
processes (agent/locks.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from coffre.agent import locks
from coffre.agent.locks import Busy, job_locks


def test_a_job_already_running_is_not_started_twice(tmp_path: Path) -> None:
    with job_locks(str(tmp_path), "officine", ["nas"]), pytest.raises(Busy), \
            job_locks(str(tmp_path), "officine", ["nas"]):
        pass
    with job_locks(str(tmp_path), "officine", ["nas"]):  # free again once the first ended
        pass


def test_jobs_sharing_a_repository_wait_for_each_other(tmp_path: Path) -> None:
    order: list[str] = []
    first_in = threading.Event()
    release = threading.Event()

    def first() -> None:
        with job_locks(str(tmp_path), "officine", ["nas", "disques"]):
            order.append("officine starts")
            first_in.set()
            release.wait(10)
            order.append("officine ends")

    def second() -> None:
        first_in.wait(10)
        with job_locks(str(tmp_path), "scans", ["nas"]):
            order.append("scans starts")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    first_in.wait(10)
    # Another job on another repository runs meanwhile.
    with job_locks(str(tmp_path), "compta", ["horsite"]):
        order.append("compta runs")
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["officine starts", "compta runs", "officine ends", "scans starts"]


def test_the_lock_holds_against_another_process_and_dies_with_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from coffre.agent.locks import job_locks\n"
         f"with job_locks({str(tmp_path)!r}, 'officine', ['nas']):\n"
         "    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    with pytest.raises(Busy), job_locks(str(tmp_path), "officine", ["nas"]):
        pass
    holder.kill()  # killed, not ended: the kernel frees its lock, nothing stale is left
    holder.wait()
    with job_locks(str(tmp_path), "officine", ["nas"]):
        pass


def test_a_run_is_not_turned_away_by_the_agents_brief_look_for_dead_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's minute look for dead runs holds a job's lock for one read. A run starting
    then (`coffre run`, which does not wait) looks again before saying "already running"; the
    look itself never waits."""
    tried = threading.Event()
    refusals: list[str] = []
    real = locks.try_lock_exclusive

    def noting(fd: int, what: str) -> bool:
        taken = real(fd, what)
        if not taken:
            refusals.append(what)
            tried.set()
        return taken

    monkeypatch.setattr(locks, "try_lock_exclusive", noting)
    probe = job_locks(str(tmp_path), "officine", [], probe=True)
    probe.__enter__()

    def end_of_the_look() -> None:
        tried.wait(10)  # the run found the lock held once
        probe.__exit__(None, None, None)

    looker = threading.Thread(target=end_of_the_look)
    looker.start()
    with job_locks(str(tmp_path), "officine", ["nas"]):
        pass
    looker.join()
    refusals.clear()
    with job_locks(str(tmp_path), "officine", ["nas"]), pytest.raises(Busy), \
            job_locks(str(tmp_path), "officine", [], probe=True):
        pass
    assert len(refusals) == 1  # the look gives up at once
