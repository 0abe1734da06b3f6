"""« Sauvegarder maintenant » in the agent's scheduler (`scheduler.Agent`): its loop in a thread,
its real job locks and status store; only the job's steps are a quick record and the alerts
after a run (the run's tail) wait for the test. The test waits for events, never for a length
of time."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coffre.agent import scheduler
from coffre.agent.records import RunRecord


def _until(what: str, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


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
    a = scheduler.Agent(str(config), log=lambda line: None)
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
    assert agent.run_now("officine")
    _until("the first run's tail", in_tail.is_set)
    assert [r.outcome for r in _manual_runs(agent)] == ["ok"]  # recorded as ended
    assert agent.running() == {}  # so the page shows it done, and its button is enabled
    assert agent.run_now("officine")  # taken, not refused
    assert not agent.run_now("officine")  # once
    assert agent.pending("officine")
    tail_free.set()
    _until("the second run", lambda: len(_manual_runs(agent)) == 2)
    _until("its end", lambda: not agent.pending("officine"))
    assert [r.outcome for r in _manual_runs(agent)] == ["ok", "ok"]


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
    assert agent.run_now("officine")
    _until("the run", began.is_set)
    assert "officine" in agent.running()
    assert not agent.run_now("officine")  # running: the page follows this run
    go_on.set()
    _until("its end", lambda: not agent.pending("officine"))
    assert len(_manual_runs(agent)) == 1
