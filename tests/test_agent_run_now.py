"""« Sauvegarder maintenant » in the agent's scheduler (`scheduler.Agent`): its loop in a thread,
its real job locks and status store; only the job's steps are a quick record and the alerts
after a run (the run's tail) wait for the test. The test waits for events, never for a length
of time."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from coffre.agent import scheduler
from coffre.agent.records import RunRecord
from coffre.agent.status import ABANDONED_ERROR

from conftest import until


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[scheduler.Agent]:
    (tmp_path / "password").write_text("mot-de-passe-du-depot\n")
    (tmp_path / "docs").mkdir()
    config = tmp_path / "coffre.toml"
    config.write_text(f"""
[agent]
state_dir = "{tmp_path / 'state'}"

[repositories.nas]
url = "{tmp_path / 'nas'}"
password_file = "{tmp_path / 'password'}"

[jobs.officine]
repository = "nas"
paths = ["{tmp_path / 'docs'}"]

[jobs.officine.schedule]
times = []
""")

    def quick_job(config: Any, name: str, *, trigger: str, started: float, **_: Any) -> RunRecord:
        return RunRecord(job=name, target="nas", trigger=trigger, started=started, ended=started + 1,
                         outcome="ok")

    monkeypatch.setattr(scheduler.jobs, "run_job", quick_job)
    lines: list[str] = []
    a = scheduler.Agent(str(config), log=lines.append)
    a.test_lines = lines
    a.last_slot["officine"] = a.clock()  # it ran before: nothing due when the loop starts
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    a.wake_w = wake_w
    loop = threading.Thread(target=a._loop, args=(wake_r,), daemon=True)
    loop.start()
    try:
        yield a
    finally:
        a.stop_wanted = True
        a._wake()
        loop.join(30)
        a.cancel.set()
        for t in list(a.threads.values()):
            t.join(30)
        a.runner.store.close()
        os.close(wake_r)
        os.close(wake_w)


def _manual_runs(a: scheduler.Agent) -> list[RunRecord]:
    return [r for r in a.runner.store.runs(job="officine") if r.trigger == "manual"]


def test_a_click_while_the_last_run_sends_its_alerts_runs_after_it(agent: scheduler.Agent) -> None:
    """The run is recorded as ended, and its thread still sends the heartbeat, the report and
    the alerts (seconds, more with a slow mail server). A click then is the pharmacist asking
    for a new backup: it is taken (not refused as "running"), and started once that thread
    ends, instead of being dropped with the page waiting for ever."""
    tail_free = threading.Event()
    in_tail = threading.Event()

    def slow_alerts() -> None:
        if threading.current_thread().name.startswith("job-"):
            in_tail.set()
            tail_free.wait(30)

    agent.runner.evaluate = slow_alerts  # type: ignore[method-assign]
    try:
        assert agent.run_now("officine")[0]
        until("the first run's tail", in_tail.is_set)
        first = _manual_runs(agent)
        assert [r.outcome for r in first] == ["ok"]  # recorded as ended
        assert agent.running() == {}  # so the page shows it done, and its button is enabled
        asked, mark = agent.run_now("officine")
        assert asked and mark == first[0].run_id  # taken; its page follows the next run
        assert not agent.run_now("officine")[0]  # once
        assert agent.pending("officine")
    finally:
        tail_free.set()
    until("the second run", lambda: len(_manual_runs(agent)) == 2)
    until("its end", lambda: not agent.pending("officine"))
    assert [r.outcome for r in _manual_runs(agent)] == ["ok", "ok"]
    assert agent.runner.store.first_run_after("officine", mark).run_id == _manual_runs(agent)[1].run_id


def test_a_click_while_a_run_goes_on_is_that_run(agent: scheduler.Agent,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Pressed while the job runs (its run not yet recorded as ended): refused, the page
    follows the run going on, and no second run comes of it."""
    began, go_on = threading.Event(), threading.Event()

    def held_job(config: Any, name: str, *, trigger: str, started: float, **_: Any) -> RunRecord:
        began.set()
        go_on.wait(30)
        return RunRecord(job=name, target="nas", trigger=trigger, started=started, ended=started + 1,
                         outcome="ok")

    monkeypatch.setattr(scheduler.jobs, "run_job", held_job)
    try:
        assert agent.run_now("officine")[0]
        until("the run", began.is_set)
        assert "officine" in agent.running()
        asked, mark = agent.run_now("officine")
        assert not asked  # running: the page follows this run
        assert agent.runner.store.first_run_after("officine", mark) is not None
    finally:
        go_on.set()
    until("its end", lambda: not agent.pending("officine"))
    assert len(_manual_runs(agent)) == 1


def test_a_click_while_a_terminal_run_sends_its_alerts_runs_after_it(agent: scheduler.Agent,
                                                                    tmp_path: Path) -> None:
    """`coffre run officine` in a terminal has recorded its run as ended and still holds the
    job's lock while it sends its alerts. A click then is taken; the agent's run waits for the
    terminal's to let go of the job (it used to give up at once, and the page waited for the
    night's run), then runs, and is the run the page follows."""
    store = agent.runner.store
    ended = store.start_run("officine", "nas", "manual", agent.clock() - 60, None)
    store.finish_run(ended, RunRecord(job="officine", target="nas", trigger="manual",
                                      started=agent.clock() - 60, ended=agent.clock(), outcome="ok"))
    lock = tmp_path / "state" / "locks" / "job-officine.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the terminal's `coffre run`, sending its alerts
        asked, mark = agent.run_now("officine")
        assert asked and mark == ended
        until("the agent's thread", lambda: "officine" in agent.running())
        assert agent.pending("officine") and store.first_run_after("officine", mark) is None
    until("the click's run", lambda: store.first_run_after("officine", mark))
    until("its end", lambda: not agent.pending("officine"))
    followed = store.first_run_after("officine", mark)
    assert followed.outcome == "ok" and followed.run_id == _manual_runs(agent)[-1].run_id


def test_a_click_while_a_terminal_run_goes_on_is_that_run(agent: scheduler.Agent, tmp_path: Path) -> None:
    """`coffre run officine` in a terminal is running (its run recorded as running, the job's
    lock held). The click is answered by that run, which the page follows; the agent does not
    queue a second backup behind it."""
    store = agent.runner.store
    lock = tmp_path / "state" / "locks" / "job-officine.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as `coffre run` does: the lock, then its run's row
        terminal = store.start_run("officine", "nas", "manual", agent.clock(), None)
        _, mark = agent.run_now("officine")
        assert store.first_run_after("officine", mark).run_id == terminal
        until("the agent giving the click to that run", lambda: not agent.pending("officine"))
        store.finish_run(terminal, RunRecord(job="officine", target="nas", trigger="manual",
                                             started=agent.clock(), ended=agent.clock(), outcome="ok"))
    assert [r.run_id for r in store.runs(job="officine")] == [terminal]


@pytest.mark.parametrize("terminal", ["sending its alerts", "running", "ending between two clicks",
                                      "sending its alerts, the job then taken out"])
def test_a_click_refused_for_a_run_that_then_finds_the_job_held_elsewhere(
        agent: scheduler.Agent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, terminal: str) -> None:
    """The agent's scheduled thread has started and not yet tried the job's lock, which a
    `coffre run` in a terminal holds. A click then is refused as running, and the scheduled
    thread gives up, recording nothing. If the terminal's run was recorded as ended (it sends
    its alerts), the click is taken when that thread ends, its run waits for the terminal to
    let go of the job, and the page follows it (it used to wait for the night's run); also
    when an earlier click, refused while the terminal's run went on, is answered by that run.
    If the terminal's run goes on, it answers the click, and no second backup is queued."""
    store = agent.runner.store
    theirs = store.start_run("officine", "nas", "manual", agent.clock() - 60, None)

    def terminal_ends() -> None:
        store.finish_run(theirs, RunRecord(job="officine", target="nas", trigger="manual",
                                           started=agent.clock() - 60, ended=agent.clock(), outcome="ok"))

    if terminal.startswith("sending its alerts"):
        terminal_ends()
    before_lock, go_on = threading.Event(), threading.Event()
    real_job_locks = scheduler.job_locks

    def job_locks(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("wait_for_job"):  # the scheduled run, stopped just before the lock
            before_lock.set()
            go_on.wait(30)
        return real_job_locks(*args, **kwargs)

    monkeypatch.setattr(scheduler, "job_locks", job_locks)
    lock = tmp_path / "state" / "locks" / "job-officine.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the terminal's `coffre run`
        agent._start("officine", "schedule", agent.clock())
        until("the scheduled thread", before_lock.is_set)
        if terminal == "ending between two clicks":
            first_click = agent.run_now("officine")
            assert first_click == (False, theirs - 1)  # answered by the terminal's run
            terminal_ends()
        asked, mark = agent.run_now("officine")
        assert not asked  # running: refused
        if terminal.endswith("taken out"):  # by a reload: nothing is asked of a job no longer there
            agent.config = agent.runner.config = replace(agent.config, jobs={})
        go_on.set()
        until("the scheduled thread giving up", lambda: "already running" in " ".join(agent.test_lines))
        if terminal.endswith("taken out"):
            until("its end", lambda: not agent.pending("officine"))
            assert "starts once" not in " ".join(agent.test_lines)
            return
        if terminal == "running":
            assert store.first_run_after("officine", mark).run_id == theirs  # the page follows it
            until("the scheduled thread's end", lambda: "officine" not in agent.threads
                  or not agent.threads["officine"].is_alive())
            assert not agent.pending("officine")
            store.finish_run(theirs, RunRecord(job="officine", target="nas", trigger="manual",
                                               started=agent.clock(), ended=agent.clock(), outcome="ok"))
            assert [r.run_id for r in store.runs(job="officine")] == [theirs]
            return
        assert mark == theirs
        until("the click taken", lambda: agent.pending("officine") and "officine" in agent.running())
        assert store.first_run_after("officine", mark) is None  # waiting for the terminal
    until("the click's run", lambda: store.first_run_after("officine", mark))
    until("its end", lambda: not agent.pending("officine"))
    followed = store.first_run_after("officine", mark)
    assert followed.outcome == "ok" and followed.trigger == "manual"
    assert [r.run_id for r in store.runs(job="officine")] == [theirs, followed.run_id]


def test_the_loop_records_a_dead_terminal_run_as_interrupted(agent: scheduler.Agent) -> None:
    """A `coffre run` killed in a terminal left its run "running" (its job's lock freed by the
    kernel): the pages showed a backup going on for ever. The agent's loop looks every minute
    and records it as interrupted."""
    store = agent.runner.store
    started = agent.clock()
    dead = store.start_run("officine", "nas", "manual", started, None)
    ahead = [0.0]
    agent.clock = agent.runner.clock = lambda: time.time() + ahead[0]

    def looked() -> bool:
        # A minute later at every look, each one woken: the loop's next look is due whatever
        # its iteration when the clock changed (one under way can set its next look a minute
        # past the clock it just read).
        ahead[0] += scheduler.HEALTH_EVERY + 1
        agent._wake()
        return store.runs(job="officine")[-1].outcome == "interrupted"

    until("the loop's look", looked)
    [settled] = store.runs(job="officine")
    assert (settled.run_id, settled.error) == (dead, ABANDONED_ERROR)
    assert settled.ended is not None and settled.ended > started + scheduler.HEALTH_EVERY


def test_a_reload_keeps_the_state_folder_until_the_agent_restarts(agent: scheduler.Agent,
                                                                  tmp_path: Path) -> None:
    """The configuration's state_dir changed and reloaded (SIGHUP) while `coffre run officine`,
    started before the change, runs in a terminal. The agent's store and locks stay in the
    folder it started with: its look for dead runs finds that run's lock held and leaves it
    running (with the locks in the new folder, it would have recorded a live run as
    interrupted). The log says what waits for a restart."""
    config = Path(agent.config_path)
    state, elsewhere = tmp_path / "state", tmp_path / "elsewhere"
    moved = config.read_text().replace(f'"{state}"', f'"{elsewhere}"')
    config.write_text(moved.replace("[repositories.nas]",
                                    '[web]\nlisten = "127.0.0.1:8651"\n\n[repositories.nas]'))
    store = agent.runner.store
    lock = state / "locks" / "job-officine.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        store.start_run("officine", "nas", "manual", agent.clock(), None)
        agent.reload_wanted = True
        agent._wake()
        until("the reload", lambda: any("restarts" in line for line in agent.test_lines))
        assert agent.config.agent.state_dir == agent.runner.config.agent.state_dir == str(state)
        assert agent.config.web.listen == "127.0.0.1:8650"
        assert agent.runner.settle_abandoned() == 0
        assert store.runs(job="officine")[-1].outcome == "running"
    assert agent.runner.settle_abandoned() == 1  # its process gone: the run was abandoned
    assert [line for line in agent.test_lines if "restarts" in line] == [
        "changed settings that take effect only when the agent restarts, the running values kept "
        "until then: [agent] state_dir, [web] listen"]
    assert not elsewhere.exists()
